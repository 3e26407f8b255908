"""Frozen trunks (freeze_backbone + optimizer.freeze) and the transfer study's step costs."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxcv.models import build_model
from jaxcv.studies.engine import fit
from jaxcv.studies.transfer import train_step_flops
from jaxcv.tasks.classification import ClassificationTask

FIELDS = {"num_classes": 3, "channels": (8, 16), "batch_norm": True, "hidden_units": (8,)}
OPT = {"name": "adamw", "learning_rate": 1e-2, "weight_decay": 1e-2, "schedule": "constant"}


def _arrays(n=16, size=16):
    rng = np.random.default_rng(0)
    return {
        "image": rng.normal(size=(n, size, size, 3)).astype(np.float32),
        "label": rng.integers(0, 3, n).astype(np.int32),
    }


@pytest.mark.parametrize("name", ["cnn", "resnet18", "vgg11_bn"])
def test_frozen_backbone_has_zero_gradients_and_fixed_statistics(name):
    fields = FIELDS if name == "cnn" else {"num_classes": 3}
    if name == "resnet18":
        fields = {**fields, "width": 4, "stage_sizes": (1, 1, 1, 1), "stem": "cifar"}
    if name == "vgg11_bn":
        stages = ((4,), (4,), (8,), (8,), (8,))
        fields = {**fields, "fc_width": 8, "pool_output": (1, 1), "stages": stages}
    model = build_model(name, freeze_backbone=True, **fields)
    images = jnp.asarray(_arrays(size=32)["image"][:4]) + 1.0
    variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, images)

    def loss(params):
        out, updates = model.apply(
            {**variables, "params": params},
            images,
            train=True,
            rngs={"dropout": jax.random.key(2)},
            mutable=["batch_stats"],
        )
        return jnp.sum(out**2), updates

    grads, updates = jax.grad(loss, has_aux=True)(variables["params"])
    head = [k for k in grads if k != "backbone"]
    assert head and all(
        float(jnp.abs(g).max()) > 0 for k in head for g in jax.tree.leaves(grads[k])
    )
    for g in jax.tree.leaves(grads["backbone"]):
        assert float(jnp.abs(g).max()) == 0.0
    # Inference-mode BatchNorm: the running statistics are left as they were.
    for new, old in zip(
        jax.tree.leaves(updates["batch_stats"]),
        jax.tree.leaves(variables["batch_stats"]),
        strict=True,
    ):
        np.testing.assert_array_equal(new, old)


def test_frozen_trunk_step_skips_the_trunk_backward_and_keeps_it_fixed():
    arrays = _arrays()
    frozen_opt = ml_collections.ConfigDict({**OPT, "freeze": ["^backbone/"]})
    full = ClassificationTask(build_model("cnn", **FIELDS))
    frozen = ClassificationTask(build_model("cnn", freeze_backbone=True, **FIELDS))
    flops_full = train_step_flops(full, ml_collections.ConfigDict(OPT), arrays, 8)
    flops_mask = train_step_flops(full, frozen_opt, arrays, 8)
    flops_frozen = train_step_flops(frozen, frozen_opt, arrays, 8)
    # The mask alone still differentiates through the trunk; stop_gradient removes that work.
    assert flops_mask > 0.9 * flops_full
    assert flops_frozen < 0.75 * flops_mask
    # A warm-up longer than the few steps compiled for counting is fine (the study's optimizer).
    warm = ml_collections.ConfigDict({**OPT, "schedule": "cosine", "warmup_steps": 30})
    np.testing.assert_allclose(train_step_flops(full, warm, arrays, 8), flops_full, rtol=0.01)

    trunk = {}

    def keep_trunk(variables):
        trunk.update(jax.tree.map(np.asarray, {k: v["backbone"] for k, v in variables.items()}))
        return variables

    res = fit(
        frozen,
        arrays,
        frozen_opt,
        num_steps=3,
        batch_size=8,
        seed=0,
        parallel="none",
        init_variables=keep_trunk,
    )
    for col, tree in trunk.items():  # weight decay and BatchNorm left the trunk as it was
        for new, old in zip(
            jax.tree.leaves(res.variables[col]["backbone"]), jax.tree.leaves(tree), strict=True
        ):
            np.testing.assert_array_equal(new, old)
    assert res.step_seconds > 0 and res.first_step_seconds > 0
