"""VGG-11/16 (+BN): shapes (with and without jit), named features, torchvision parity."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from jaxcv.models import build_model

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from torch_to_flax import (  # noqa: E402
    narrow_torch_vgg,
    nchw_to_nhwc,
    randomize_batch_norms,
    relative_error,
    vgg_variables,
)

SMALL = {"num_classes": 5, "fc_width": 16, "pool_output": (1, 1)}


def _init(model, shape, seed=0):
    return jax.jit(model.init)(jax.random.key(seed), jnp.zeros(shape, jnp.float32))


def _init_shapes(model, shape):
    """Variable shapes without compiling or running anything."""
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape, jnp.float32))


def _logits_and_features(model):
    def run(variables, images):
        return model.apply(variables, images), model.apply(variables, images, method="features")

    return run


class VGGShapeTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("vgg11", "vgg11", 1), ("vgg16_bn", "vgg16_bn", 3))
    def test_logits_and_features(self, name, convs_in_stage5):
        model = build_model(name, **SMALL)
        variables = _init(model, (2, 32, 32, 3))
        has_bn = name.endswith("_bn")
        assert ("batch_stats" in variables) == has_bn
        assert len(variables["params"]["backbone"]) == (2 if has_bn else 1) * (
            8 if name.startswith("vgg11") else 13
        )
        assert f"conv5_{convs_in_stage5}" in variables["params"]["backbone"]
        images = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
        logits, feats = self.variant(_logits_and_features(model))(variables, images)
        chex.assert_shape(logits, (2, 5))
        assert logits.dtype == jnp.float32
        widths = (64, 128, 256, 512, 512)
        for s in range(1, 6):
            size = 32 // 2 ** (s - 1)
            chex.assert_shape(feats[f"conv{s}"], (2, size, size, widths[s - 1]))
            chex.assert_shape(feats[f"pool{s}"], (2, size // 2, size // 2, widths[s - 1]))


def test_vgg11_bn_and_vgg16_parameter_layout():
    for name, convs in (("vgg11_bn", 8), ("vgg16", 13)):
        shapes = jax.eval_shape(
            build_model(name, **SMALL).init, jax.random.key(0), jnp.zeros((1, 32, 32, 3))
        )
        has_bn = name.endswith("_bn")
        assert ("batch_stats" in shapes) == has_bn
        assert len(shapes["params"]["backbone"]) == (2 if has_bn else 1) * convs
        assert shapes["params"]["fc6"]["kernel"].shape == (512, 16)


def test_training_uses_dropout_and_updates_batch_stats():
    model = build_model("vgg11_bn", num_classes=3, fc_width=64, pool_output=(1, 1))
    variables = _init(model, (2, 32, 32, 3))
    images = 1.0 + jax.random.normal(jax.random.key(1), (2, 32, 32, 3))

    @jax.jit
    def train(v, x, key):
        return model.apply(v, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"])

    out_a, updates = train(variables, images, jax.random.key(2))
    out_b, _ = train(variables, images, jax.random.key(3))
    assert float(jnp.max(jnp.abs(out_a - out_b))) > 1e-6
    old = variables["batch_stats"]["backbone"]["bn1_1"]["mean"]
    new = updates["batch_stats"]["backbone"]["bn1_1"]["mean"]
    assert float(jnp.max(jnp.abs(new - old))) > 1e-3


def test_rejects_images_smaller_than_the_network_stride():
    model = build_model("vgg11", **SMALL)
    variables = _init_shapes(model, (1, 32, 32, 3))
    with pytest.raises(ValueError, match=r"at least 32x32.*\(1, 16, 40, 3\)"):
        jax.eval_shape(model.apply, variables, jnp.zeros((1, 16, 40, 3)))


def test_pool_output_none_flattens_last_pool():
    model = build_model("vgg11", num_classes=4, fc_width=8, pool_output=None)
    variables = _init_shapes(model, (1, 64, 96, 3))
    assert variables["params"]["fc6"]["kernel"].shape == (2 * 3 * 512, 8)
    chex.assert_shape(jax.eval_shape(model.apply, variables, jnp.ones((3, 64, 96, 3))), (3, 4))


def _torch_vgg(name, fc_width, num_classes, seed=0):
    """torchvision's VGG with its classifier narrowed to ``fc_width`` (same layer layout)."""
    torch.manual_seed(seed)
    tmodel = narrow_torch_vgg(name, fc_width, num_classes)
    randomize_batch_norms(tmodel, seed)
    return tmodel.eval()


@pytest.mark.parity
@pytest.mark.parametrize(("name", "size"), [("vgg11_bn", 80), ("vgg16", 48)])
def test_eval_parity_with_torchvision(name, size):
    """Adaptive pooling from 2x2 / 1x1 to 7x7 and the (c, h, w) flatten order are exercised."""
    tmodel = _torch_vgg(name, fc_width=32, num_classes=6)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = tmodel(x).numpy()
        expected_pool4 = tmodel.features[: 22 if name == "vgg11_bn" else 24](x)
    model = build_model(name, num_classes=6, fc_width=32)
    variables = vgg_variables(tmodel)
    chex.assert_trees_all_equal_shapes(variables, _init_shapes(model, (1, size, size, 3)))
    images = jnp.asarray(nchw_to_nhwc(x))
    logits, feats = jax.jit(_logits_and_features(model))(variables, images)
    assert np.abs(expected).max() > 0.1
    assert relative_error(logits, expected) < 1e-4
    assert relative_error(feats["pool4"], nchw_to_nhwc(expected_pool4)) < 1e-4
