"""A minimal Task for the engine tests: a tiny CNN classifier on random data.

``TinyTask(bn=..., dtype=...)`` implements :class:`jaxcv.tasks.base.Task` with softmax
cross-entropy (float32 loss) and accuracy; ``input_bn=True`` puts a BatchNorm directly on the
input images, so its batch statistics are the images' own (checkable in NumPy).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

NUM_CLASSES = 5


class TinyCNN(nn.Module):
    """(B, 8, 8, 3) -> logits (B, NUM_CLASSES): [BN] conv3x3(4) relu avgpool2 dense(64 -> 5)."""

    input_bn: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        if self.input_bn:
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
        x = nn.Conv(4, (3, 3), dtype=self.dtype)(x)
        x = nn.relu(x)
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(NUM_CLASSES, dtype=self.dtype)(x)


class AccuracyEvaluator:
    """Host-side accuracy over valid examples."""

    def __init__(self):
        self.correct = 0
        self.total = 0

    def update(self, batch, outputs):
        valid = batch.get("example_valid", np.ones(len(batch["label"]), bool))
        pred = np.argmax(outputs["logits"], axis=-1)
        self.correct += int(np.sum((pred == batch["label"]) & valid))
        self.total += int(np.sum(valid))

    def result(self):
        return {"accuracy": self.correct / max(self.total, 1)}


class TinyTask:
    """Softmax cross-entropy classification with :class:`TinyCNN`."""

    def __init__(self, *, input_bn: bool = False, dtype=jnp.float32):
        self.model = TinyCNN(input_bn=input_bn, dtype=dtype)

    def init_variables(self, rng, batch):
        return self.model.init(rng, batch["image"], train=False)

    def loss_fn(self, params, model_state, batch, rng, *, train=True):
        variables = {"params": params, **model_state}
        if train and model_state:
            logits, new_state = self.model.apply(
                variables, batch["image"], train=True, mutable=list(model_state)
            )
        else:
            logits, new_state = self.model.apply(variables, batch["image"], train=train), {}
            new_state = model_state
        logits = logits.astype(jnp.float32)
        logp = jax.nn.log_softmax(logits)
        loss = -jnp.mean(jnp.take_along_axis(logp, batch["label"][:, None], axis=1))
        acc = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
        return loss, ({"accuracy": acc}, dict(new_state))

    def predict_fn(self, variables, batch):
        return {"logits": self.model.apply(variables, batch["image"], train=False)}

    def make_evaluator(self):
        return AccuracyEvaluator()


def make_batches(n: int, batch_size: int = 16, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``n`` random batches: ``image (B, 8, 8, 3)`` float32, ``label (B,)`` int32."""
    rs = np.random.RandomState(seed)
    return [
        {
            "image": rs.normal(size=(batch_size, 8, 8, 3)).astype(np.float32),
            "label": rs.randint(0, NUM_CLASSES, size=(batch_size,)).astype(np.int32),
        }
        for _ in range(n)
    ]


SGD = {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "schedule": "constant"}
