"""DeconvNet: max-pool switches and unpooling against NumPy and torch, model shapes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from jaxcv.models.deconvnet import DeconvNet, max_pool_with_switches, max_unpool

TINY = {"stages": ((3,), (4,), (6,)), "fc_width": 8, "fc6_kernel": 2}


def pool_ref(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 loops: 2x2/2 max-pool (floor mode), window switch, flat index (h * W + w)."""
    b, h, w, c = x.shape
    ho, wo = h // 2, w // 2
    pooled = np.zeros((b, ho, wo, c))
    switch = np.zeros((b, ho, wo, c), np.int64)
    flat = np.zeros((b, ho, wo, c), np.int64)
    for n, i, j, k in np.ndindex(b, ho, wo, c):
        best, pos = -np.inf, 0
        for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):  # row-major: first maximum wins
            v = x[n, 2 * i + dy, 2 * j + dx, k]
            if v > best:
                best, pos = v, dy * 2 + dx
        pooled[n, i, j, k], switch[n, i, j, k] = best, pos
        flat[n, i, j, k] = (2 * i + pos // 2) * w + 2 * j + pos % 2
    return pooled, switch, flat


def unpool_ref(values: np.ndarray, flat: np.ndarray, hw) -> np.ndarray:
    b, _, _, c = values.shape
    out = np.zeros((b, hw[0] * hw[1], c))
    for n, i, j, k in np.ndindex(*values.shape):
        out[n, flat[n, i, j, k], k] = values[n, i, j, k]
    return out.reshape(b, hw[0], hw[1], c)


class SwitchPoolingTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((6, 8), (7, 9), (2, 3))
    def test_pool_and_unpool_match_numpy(self, h, w):
        rng = np.random.default_rng(h * w)
        # small integers: many ties inside windows
        x = rng.integers(-2, 3, size=(2, h, w, 3)).astype(np.float32)
        pooled, switches = self.variant(max_pool_with_switches)(x)
        ref_pooled, ref_switch, ref_flat = pool_ref(x)
        np.testing.assert_array_equal(pooled, ref_pooled)
        np.testing.assert_array_equal(switches, ref_switch)
        values = rng.normal(size=pooled.shape).astype(np.float32)
        unpool = self.variant(lambda v, s: max_unpool(v, s, (h, w)))
        np.testing.assert_array_equal(
            unpool(values, switches), unpool_ref(values, ref_flat, (h, w))
        )

    def test_unpool_is_the_transpose_of_pooling(self):
        # d(sum(pool(x) * g)) / dx == unpool(g): the gradient routes through the switches.
        x = jax.random.normal(jax.random.key(0), (1, 6, 4, 2))
        g = jax.random.normal(jax.random.key(1), (1, 3, 2, 2))
        grad = jax.grad(lambda x: jnp.sum(max_pool_with_switches(x)[0] * g))(x)
        _, switches = max_pool_with_switches(x)
        np.testing.assert_allclose(grad, max_unpool(g, switches, (6, 4)))

    def test_bad_shapes_raise(self):
        x = jnp.zeros((1, 4, 4, 2))
        _, s = max_pool_with_switches(x)
        with pytest.raises(ValueError, match="does not pool"):
            max_unpool(jnp.zeros((1, 2, 2, 2)), s, (6, 4))
        with pytest.raises(ValueError, match="switches"):
            max_unpool(jnp.zeros((1, 2, 2, 3)), s, (4, 4))
        with pytest.raises(ValueError, match="H, W >= 2"):
            max_pool_with_switches(jnp.zeros((1, 1, 4, 2)))


def test_matches_torch_max_pool_indices_and_unpool():
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    x = np.random.default_rng(0).integers(-3, 4, size=(2, 9, 7, 3)).astype(np.float32)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    tp, ti = functional.max_pool2d(xt, 2, 2, return_indices=True)
    pooled, switches = max_pool_with_switches(x)
    np.testing.assert_array_equal(pooled, tp.permute(0, 2, 3, 1).numpy())
    s = np.asarray(switches)
    oh, ow = np.indices(s.shape[1:3])
    flat = (2 * oh[None, :, :, None] + s // 2) * 7 + 2 * ow[None, :, :, None] + s % 2
    np.testing.assert_array_equal(flat, ti.permute(0, 2, 3, 1).numpy())
    values = np.random.default_rng(1).normal(size=pooled.shape).astype(np.float32)
    ref = functional.max_unpool2d(
        torch.from_numpy(values).permute(0, 3, 1, 2), ti, 2, 2, output_size=(9, 7)
    )
    np.testing.assert_array_equal(max_unpool(values, switches, (9, 7)), ref.permute(0, 2, 3, 1))


class DeconvNetTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((27, 35))
    def test_shapes(self, h, w):
        model = DeconvNet(num_classes=4, **TINY)
        x = jax.random.normal(jax.random.key(0), (2, h, w, 3))
        variables = model.init(jax.random.key(1), x)
        assert "batch_stats" in variables
        out = self.variant(lambda v, x: model.apply(v, x))(variables, x)
        chex.assert_shape(out, (2, h, w, 4))
        chex.assert_type(out, jnp.float32)

    def test_train_mode(self):
        model = DeconvNet(num_classes=4, **TINY)
        x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
        variables = model.init(jax.random.key(1), x)
        out, updates = model.apply(
            variables, x, train=True, rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"]
        )
        chex.assert_shape(out, (2, 32, 32, 4))
        chex.assert_tree_all_finite(out)
        assert "bn_deconv1_1" in updates["batch_stats"]

    def test_decoder_mirrors_encoder_widths(self):
        model = DeconvNet(num_classes=4, stages=((3, 5), (6,)), fc_width=8, fc6_kernel=1)
        shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
        params = shapes["params"]
        assert params["deconv2_1"]["kernel"].shape == (3, 3, 6, 5)
        assert params["deconv1_2"]["kernel"].shape == (3, 3, 5, 3)
        assert params["deconv1_1"]["kernel"].shape == (3, 3, 3, 3)
        assert params["deconv_fc6"]["kernel"].shape == (1, 1, 8, 6)
        assert params["score"]["kernel"].shape == (1, 1, 3, 4)

    def test_too_small_input_raises(self):
        with pytest.raises(ValueError, match="smaller than fc6_kernel"):
            DeconvNet(num_classes=4, **TINY).init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
