"""Shared layers against torch: padding, pooling, BatchNorm semantics, initialisers."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcv.models.layers import (
    adaptive_avg_pool,
    auto_dtype,
    batch_norm,
    canonical_dtype,
    check_images,
    conv,
    max_pool,
    torch_linear_kernel_init,
)

torch = pytest.importorskip("torch")


def _nhwc(x):
    return jnp.asarray(np.transpose(x.numpy(), (0, 2, 3, 1)))


@pytest.mark.parametrize(
    ("in_hw", "out_hw"),
    [
        ((2, 2), (7, 7)),
        ((5, 9), (3, 4)),
        ((10, 7), (7, 7)),
        ((7, 7), (7, 7)),
        ((6, 5), (1, 1)),
        ((1, 1), (7, 7)),
        ((13, 3), (4, 2)),
    ],
)
def test_adaptive_avg_pool_matches_torch(in_hw, out_hw):
    x = torch.randn(2, 3, *in_hw, generator=torch.Generator().manual_seed(0))
    expected = torch.nn.AdaptiveAvgPool2d(out_hw)(x)
    out = jax.jit(adaptive_avg_pool, static_argnums=1)(_nhwc(x), out_hw)
    chex.assert_shape(out, (2, *out_hw, 3))
    np.testing.assert_allclose(out, _nhwc(expected), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("size", "window", "stride", "pad"), [(8, 3, 2, 1), (9, 3, 2, 1), (7, 2, 2, 0)]
)
def test_max_pool_matches_torch_with_negative_inputs(size, window, stride, pad):
    x = -1.0 - torch.rand(2, 4, size, size, generator=torch.Generator().manual_seed(1))
    expected = torch.nn.MaxPool2d(window, stride, pad)(x)
    np.testing.assert_allclose(max_pool(_nhwc(x), window, stride, pad), _nhwc(expected), rtol=0)


@pytest.mark.parametrize(("size", "kernel", "stride"), [(8, 3, 2), (9, 3, 2), (8, 7, 2), (6, 3, 1)])
def test_strided_conv_padding_matches_torch(size, kernel, stride):
    """Symmetric padding k // 2 as torch; XLA's 'SAME' would shift even-sized strided outputs."""
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    tconv = torch.nn.Conv2d(3, 5, kernel, stride, kernel // 2, bias=False)
    with torch.no_grad():
        expected = tconv(x)
    layer = conv(5, kernel, stride)
    kernel_hwio = jnp.asarray(np.transpose(tconv.weight.detach().numpy(), (2, 3, 1, 0)))
    out = layer.apply({"params": {"kernel": kernel_hwio}}, _nhwc(x))
    np.testing.assert_allclose(out, _nhwc(expected), rtol=1e-5, atol=1e-5)


def test_batch_norm_follows_torch_semantics():
    x = 3.0 + 2.0 * torch.randn(4, 6, 5, 5, generator=torch.Generator().manual_seed(3))
    tbn = torch.nn.BatchNorm2d(6).train()
    with torch.no_grad():
        tbn.weight.uniform_(0.5, 1.5)
        tbn.bias.uniform_(-0.5, 0.5)
        tbn.running_var.fill_(2.0)
        variables = {
            "params": {"scale": tbn.weight.numpy().copy(), "bias": tbn.bias.numpy().copy()},
            "batch_stats": {"mean": np.zeros(6, np.float32), "var": np.full(6, 2.0, np.float32)},
        }
        expected_train = tbn(x)
    layer = batch_norm(train=True)
    out, updates = layer.apply(variables, _nhwc(x), mutable=["batch_stats"])
    np.testing.assert_allclose(out, _nhwc(expected_train), rtol=1e-5, atol=1e-5)
    stats = updates["batch_stats"]
    np.testing.assert_allclose(stats["mean"], tbn.running_mean.numpy(), rtol=1e-6, atol=1e-6)
    # torch's running_var uses the unbiased batch variance; flax the biased one (n = 4 * 5 * 5).
    n = 4 * 5 * 5
    biased = x.var(dim=(0, 2, 3), unbiased=False).numpy()
    np.testing.assert_allclose(stats["var"], 0.9 * 2.0 + 0.1 * biased, rtol=1e-5)
    np.testing.assert_allclose(
        tbn.running_var.numpy(), 0.9 * 2.0 + 0.1 * biased * n / (n - 1), rtol=1e-5
    )
    tbn.eval()
    with torch.no_grad():
        expected_eval = tbn(x)
    eval_vars = {
        "params": variables["params"],
        "batch_stats": {"mean": tbn.running_mean.numpy(), "var": tbn.running_var.numpy()},
    }
    out_eval = batch_norm(train=False).apply(eval_vars, _nhwc(x))
    np.testing.assert_allclose(out_eval, _nhwc(expected_eval), rtol=1e-5, atol=1e-5)


def test_conv_init_is_kaiming_normal_fan_out_like_torch():
    kernel = conv(256, 3).init(jax.random.key(0), jnp.zeros((1, 3, 3, 256)))["params"]["kernel"]
    kernel = np.asarray(kernel)
    assert kernel.shape == (3, 3, 256, 256)
    expected_std = np.sqrt(2.0 / (3 * 3 * 256))
    np.testing.assert_allclose(kernel.std(), expected_std, rtol=0.01)
    # Untruncated normal, as torch's kaiming_normal_: ~0.27% of draws beyond 3 sigma.
    tail = np.mean(np.abs(kernel) > 3 * expected_std)
    assert 0.0015 < tail < 0.004
    tweight = torch.empty(256, 256, 3, 3)
    torch.nn.init.kaiming_normal_(tweight, mode="fan_out", nonlinearity="relu")
    np.testing.assert_allclose(kernel.std(), tweight.std().item(), rtol=0.02)


def test_linear_init_matches_torch_bound():
    kernel = np.asarray(torch_linear_kernel_init(jax.random.key(0), (400, 300)))
    bound = 1.0 / np.sqrt(400)
    assert np.abs(kernel).max() <= bound
    assert np.abs(kernel).max() > 0.99 * bound
    np.testing.assert_allclose(kernel.std(), bound / np.sqrt(3), rtol=0.01)


@pytest.mark.parametrize(
    ("shape", "dtype", "match"),
    [
        ((32, 32, 3), jnp.float32, "rank|NHWC"),
        ((2, 3, 32, 32), jnp.float32, "NCHW"),
        ((2, 32, 32, 3), jnp.uint8, "uint8"),
        ((2, 32, 32, 3, 1), jnp.float32, "NHWC"),
    ],
)
def test_check_images_rejects_bad_inputs(shape, dtype, match):
    with pytest.raises(ValueError, match=match):
        check_images(jnp.zeros(shape, dtype))


def test_check_images_accepts_nhwc_and_small_images():
    check_images(jnp.zeros((2, 8, 8, 1)))
    check_images(jnp.zeros((2, 3, 3, 3), jnp.bfloat16))
    check_images(jnp.zeros((1, 128, 128, 3)))


def test_canonical_dtype():
    assert canonical_dtype("bfloat16") == jnp.bfloat16
    assert canonical_dtype(jnp.float32) == jnp.float32
    with pytest.raises(ValueError, match="floating"):
        canonical_dtype("int32")
    with pytest.raises(ValueError, match="not a dtype"):
        canonical_dtype("fp-nine")


def test_auto_dtype_is_bfloat16_on_accelerators_and_float32_on_cpu():
    assert auto_dtype("gpu") == auto_dtype("tpu") == jnp.bfloat16
    assert auto_dtype("cpu") == jnp.float32
    assert canonical_dtype("auto") == auto_dtype(jax.default_backend())
    assert canonical_dtype("auto") == jnp.float32  # the suite runs on CPU: results unchanged
