"""Localizer: output shapes (with and without jit), trunk sizes, input checks."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcv.models.localizer import Localizer, trunk_output_size

SMALL = {"channels": (4, 8), "hidden_units": (16,), "box_hidden_units": (8,)}


def _np_trunk(size, k, p, stages):
    for _ in range(stages):
        size = (size - k + 1) // p
    return size


class LocalizerShapesTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_class_agnostic_and_specific_shapes(self):
        images = jnp.asarray(np.random.default_rng(0).normal(size=(3, 20, 24, 3)), jnp.float32)
        for specific, box_shape in ((False, (3, 4)), (True, (3, 5, 4))):
            model = Localizer(num_classes=5, class_specific=specific, **SMALL)
            variables = model.init(jax.random.PRNGKey(0), images)
            out = self.variant(lambda v, x, m=model: m.apply(v, x))(variables, images)
            chex.assert_shape(out["logits"], (3, 5))
            chex.assert_shape(out["box_deltas"], box_shape)
            chex.assert_type([out["logits"], out["box_deltas"]], jnp.float32)
            chex.assert_tree_all_finite(out)

    def test_background_adds_one_logit_and_no_box(self):
        images = jnp.asarray(np.random.default_rng(2).normal(size=(2, 20, 24, 3)), jnp.float32)
        model = Localizer(num_classes=5, class_specific=True, background=True, **SMALL)
        variables = model.init(jax.random.PRNGKey(0), images)
        out = model.apply(variables, images)
        chex.assert_shape(out["logits"], (2, 6))  # last column: background
        chex.assert_shape(out["box_deltas"], (2, 5, 4))  # boxes for the object classes only

    @chex.variants(with_jit=True, without_jit=True)
    def test_train_mode_updates_batch_stats(self):
        images = jnp.asarray(np.random.default_rng(1).normal(size=(4, 16, 16, 3)), jnp.float32)
        model = Localizer(num_classes=3, dropout_rate=0.5, **SMALL)
        variables = model.init(jax.random.PRNGKey(0), images)

        def run(v, x, key):
            return model.apply(v, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"])

        out, updates = self.variant(run)(variables, images, jax.random.PRNGKey(2))
        chex.assert_shape(out["logits"], (4, 3))
        chex.assert_trees_all_equal_structs(updates["batch_stats"], variables["batch_stats"])
        # The running mean moved towards the batch mean: not the initial zeros any more.
        assert float(jnp.abs(updates["batch_stats"]["backbone"]["bn1"]["mean"]).sum()) > 0


@pytest.mark.parametrize(
    ("size", "k", "p", "stages"),
    [(16, 3, 2, 2), (17, 3, 2, 2), (101, 3, 2, 4), (64, 3, 2, 4), (30, 5, 3, 2), (12, 3, 2, 4)],
)
def test_trunk_output_size_matches_the_last_pool(size, k, p, stages):
    expected = _np_trunk(size, k, p, stages)
    assert trunk_output_size(size, k, p, stages) == max(expected, 0)
    if expected >= 1:
        model = Localizer(num_classes=2, channels=(4,) * stages, kernel_size=k, pool_size=p)
        images = jnp.zeros((1, size, size, 3))
        variables = model.init(jax.random.PRNGKey(0), images)
        pool = model.apply(variables, images, method="features")[f"pool{stages}"]
        chex.assert_shape(pool, (1, expected, expected, 4))
        assert model.stride == p**stages


def test_first_fc_kernel_is_flattened_hwc():
    model = Localizer(num_classes=2, **SMALL)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 30, 30, 3)))
    # 30 -> 28 -> 14 -> 12 -> 6: a 6 x 6 x 8 last pool.
    chex.assert_shape(variables["params"]["cls_fc1"]["kernel"], (6 * 6 * 8, 16))
    chex.assert_shape(variables["params"]["box_fc1"]["kernel"], (6 * 6 * 8, 8))


@pytest.mark.parametrize(
    ("shape", "dtype", "match"),
    [
        ((2, 6, 6, 3), jnp.float32, "too small"),
        ((2, 16, 16), jnp.float32, "NHWC"),
        ((2, 3, 32, 32), jnp.float32, "NCHW"),
        ((2, 16, 16, 3), jnp.uint8, "floating"),
    ],
)
def test_bad_inputs_raise(shape, dtype, match):
    model = Localizer(num_classes=2, **SMALL)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
    with pytest.raises(ValueError, match=match):
        model.apply(variables, jnp.zeros(shape, dtype))


def test_bad_num_classes_raises():
    with pytest.raises(ValueError, match="num_classes"):
        Localizer(num_classes=0, **SMALL).init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
