"""The raw CNN: digits-sized and 128x128 inputs, parity with a torch net, options and errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from jaxcv.models import build_model

torch = pytest.importorskip("torch")

from torch_to_flax import conv_params, linear_params, nchw_to_nhwc, relative_error  # noqa: E402


def _init(model, shape, seed=0):
    return jax.jit(model.init)(jax.random.key(seed), jnp.zeros(shape, jnp.float32))


def _init_shapes(model, shape):
    """Variable shapes without compiling or running anything."""
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape, jnp.float32))


class CNNShapeTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("digits", (3, 8, 8, 1), {}, ((8, 32), (4, 32), (4, 64), (2, 64))),
        (
            "scenes_5x5_two_fc",
            (2, 128, 128, 3),
            {"channels": (4, 8), "kernel_size": 5, "hidden_units": (16, 16)},
            ((128, 4), (64, 4), (64, 8), (32, 8)),
        ),
        (
            "valid_bn",
            (2, 28, 28, 1),
            {"padding": "VALID", "batch_norm": True},
            ((26, 32), (13, 32), (11, 64), (5, 64)),
        ),
    )
    def test_logits_and_features(self, shape, fields, feature_shapes):
        model = build_model("cnn", num_classes=10, **fields)
        variables = _init(model, shape)
        assert ("batch_stats" in variables) == fields.get("batch_norm", False)
        images = jax.random.normal(jax.random.key(1), shape)
        logits, feats = self.variant(
            lambda v, x: (model.apply(v, x), model.apply(v, x, method="features"))
        )(variables, images)
        chex.assert_shape(logits, (shape[0], 10))
        for key, (size, width) in zip(
            ("conv1", "pool1", "conv2", "pool2"), feature_shapes, strict=True
        ):
            chex.assert_shape(feats[key], (shape[0], size, size, width))
        hidden = fields.get("hidden_units", (128,))
        expected_params = {"backbone", "logits"} | {f"fc{i + 1}" for i in range(len(hidden))}
        assert set(variables["params"]) == expected_params

    @chex.variants(with_jit=True, without_jit=True)
    def test_dropout_only_in_training(self):
        model = build_model("cnn", num_classes=10, dropout_rate=0.5)
        variables = _init(model, (4, 8, 8, 1))
        images = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
        train = self.variant(lambda v, x, k: model.apply(v, x, train=True, rngs={"dropout": k}))
        evaluate = self.variant(lambda v, x: model.apply(v, x, train=False))
        a, b = (
            train(variables, images, jax.random.key(2)),
            train(variables, images, jax.random.key(3)),
        )
        assert float(jnp.max(jnp.abs(a - b))) > 1e-6
        chex.assert_trees_all_close(train(variables, images, jax.random.key(2)), a)
        chex.assert_trees_all_equal(evaluate(variables, images), evaluate(variables, images))
        no_dropout = build_model("cnn", num_classes=10, dropout_rate=0.0)
        chex.assert_trees_all_close(
            no_dropout.apply(variables, images, train=True, rngs={"dropout": jax.random.key(2)}),
            evaluate(variables, images),
            rtol=1e-5,
            atol=1e-5,
        )


@pytest.mark.parity
def test_matches_torch_conv_pool_conv_pool_fc_fc():
    """Same weights in a torch net; flattening NCHW needs fc1's rows permuted to (h, w, c)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(16 * 2 * 2, 32),
        torch.nn.ReLU(),
        torch.nn.Dropout(),
        torch.nn.Linear(32, 10),
    ).eval()
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = net(x).numpy()
    fc1 = linear_params(net[7])
    fc1["kernel"] = fc1["kernel"].reshape(16, 2, 2, 32).transpose(1, 2, 0, 3).reshape(64, 32)
    variables = {
        "params": {
            "backbone": {"conv1": conv_params(net[0]), "conv2": conv_params(net[3])},
            "fc1": fc1,
            "logits": linear_params(net[10]),
        }
    }
    model = build_model("cnn", num_classes=10, channels=(8, 16), hidden_units=(32,))
    chex.assert_trees_all_equal_shapes(variables, _init_shapes(model, (1, 8, 8, 1)))
    logits = model.apply(variables, jnp.asarray(nchw_to_nhwc(x)))
    assert relative_error(logits, expected) < 1e-5


def test_bfloat16_compute_keeps_float32_params():
    model = build_model("cnn", num_classes=10, dtype="bfloat16")
    variables = _init(model, (2, 8, 8, 1))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
    images = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
    logits = model.apply(variables, images)
    assert logits.dtype == jnp.float32
    assert model.apply(variables, images, method="features")["pool2"].dtype == jnp.bfloat16
    reference = build_model("cnn", num_classes=10).apply(variables, images)
    assert relative_error(logits, np.asarray(reference)) < 0.05


def test_errors_name_the_problem():
    model = build_model("cnn", num_classes=10, padding="VALID", kernel_size=5)
    with pytest.raises(ValueError, match=r"\(1, 8, 8, 1\) are too small"):
        _init(model, (1, 8, 8, 1))
    with pytest.raises(ValueError, match="padding"):
        _init(build_model("cnn", padding="FULL"), (1, 8, 8, 1))
    with pytest.raises(ValueError, match="NHWC"):
        _init(build_model("cnn"), (8, 8, 1))
