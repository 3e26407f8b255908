"""roi_align against torchvision.ops.roi_align: forward, backward, edge cases, errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcv.ops.roi_align import exact_divide, roi_align

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.parity


def random_boxes(rng, batch, n, image_size):
    """``(batch, n, 4)`` boxes: inside, partly and wholly outside the image, and zero-size."""
    centre = rng.uniform(-0.4 * image_size, 1.4 * image_size, (batch, n, 2))
    size = rng.uniform(0, 1.2 * image_size, (batch, n, 2))
    size[:, :2] = 0.0  # zero-size boxes
    size[:, 2, 0] = 0.0  # zero width only
    centre[:, 3] = -0.5 * image_size  # wholly outside, above-left
    centre[:, 4] = 2.0 * image_size  # wholly outside, below-right
    return np.concatenate([centre - size / 2, centre + size / 2], -1).astype(np.float32)


def torch_roi_align(features, boxes, cotangent, output_size, scale, sampling_ratio, aligned):
    """torchvision's forward ``(B, R, oh, ow, C)`` and feature gradient ``(B, H, W, C)``."""
    batch, n = boxes.shape[:2]
    channels = features.shape[-1]
    x = torch.tensor(features).permute(0, 3, 1, 2).contiguous().requires_grad_()
    rois = [torch.tensor(b) for b in boxes]
    y = torchvision.ops.roi_align(x, rois, output_size, scale, sampling_ratio, aligned)
    g = torch.tensor(cotangent).permute(0, 1, 4, 2, 3).reshape(y.shape)
    y.backward(g)
    out = y.detach().reshape(batch, n, channels, *output_size).permute(0, 1, 3, 4, 2)
    return out.numpy(), x.grad.permute(0, 2, 3, 1).numpy()


def run_case(seed, shape, n_boxes, output_size, scale, sampling_ratio, aligned):
    rng = np.random.default_rng(seed)
    batch, height, width, channels = shape
    features = rng.standard_normal(shape).astype(np.float32)
    boxes = random_boxes(rng, batch, n_boxes, max(height, width) / scale)
    cotangent = rng.standard_normal((batch, n_boxes, *output_size, channels)).astype(np.float32)
    expected, expected_grad = torch_roi_align(
        features, boxes, cotangent, output_size, scale, sampling_ratio, aligned
    )

    def f(x):
        return roi_align(x, jnp.asarray(boxes), output_size, scale, sampling_ratio, aligned)

    out, vjp = jax.vjp(jax.jit(f), jnp.asarray(features))
    (grad,) = vjp(jnp.asarray(cotangent))
    return out, grad, expected, expected_grad


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 3, -1])
@pytest.mark.parametrize("scale", [1 / 16, 0.5])
def test_matches_torchvision_forward_and_backward(aligned, sampling_ratio, scale):
    out, grad, expected, expected_grad = run_case(
        seed=sampling_ratio + 10 * aligned + int(100 * scale),
        shape=(2, 9, 12, 3),
        n_boxes=24,
        output_size=(7, 5),
        scale=scale,
        sampling_ratio=sampling_ratio,
        aligned=aligned,
    )
    chex.assert_shape(out, (2, 24, 7, 5, 3))
    chex.assert_trees_all_close(out, expected, atol=1e-5, rtol=1e-5)
    chex.assert_trees_all_close(grad, expected_grad, atol=1e-5, rtol=1e-5)


def test_large_map_and_many_boxes_take_several_chunks():
    # 7x7x64 outputs of 2 x 300 RoIs span several loop chunks forward and backward.
    out, grad, expected, expected_grad = run_case(
        seed=3,
        shape=(2, 20, 24, 64),
        n_boxes=300,
        output_size=(7, 7),
        scale=0.25,
        sampling_ratio=2,
        aligned=True,
    )
    chex.assert_trees_all_close(out, expected, atol=1e-5, rtol=1e-5)
    chex.assert_trees_all_close(grad, expected_grad, atol=1e-4, rtol=1e-5)


class VariantsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_forward_with_and_without_jit(self):
        rng = np.random.default_rng(7)
        features = rng.standard_normal((2, 10, 8, 4)).astype(np.float32)
        boxes = random_boxes(rng, 2, 6, 20.0)
        expected, _ = torch_roi_align(
            features, boxes, np.zeros((2, 6, 3, 3, 4), np.float32), (3, 3), 0.5, 2, True
        )
        fn = self.variant(lambda f, b: roi_align(f, b, 3, spatial_scale=0.5))
        out = fn(jnp.asarray(features), jnp.asarray(boxes))
        chex.assert_shape(out, (2, 6, 3, 3, 4))
        chex.assert_trees_all_close(out, expected, atol=1e-5)


def test_grad_of_a_scalar_loss_and_zero_box_gradient():
    rng = np.random.default_rng(11)
    features = rng.standard_normal((1, 8, 8, 2)).astype(np.float32)
    boxes = np.array([[[1.0, 2.0, 9.5, 12.0], [4.0, 0.0, 6.0, 3.0]]], np.float32)
    _, expected_grad = torch_roi_align(
        features, boxes, np.ones((1, 2, 2, 2, 2), np.float32), (2, 2), 0.5, 2, False
    )

    def loss(f, b):
        return jnp.sum(roi_align(f, b, 2, spatial_scale=0.5, aligned=False))

    grad_f, grad_b = jax.jit(jax.grad(loss, argnums=(0, 1)))(features, boxes)
    chex.assert_trees_all_close(grad_f, expected_grad, atol=1e-6)
    chex.assert_trees_all_close(grad_b, np.zeros_like(boxes))


def test_no_boxes_gives_empty_output_and_zero_gradient():
    features = jnp.ones((2, 4, 4, 3))
    boxes = jnp.zeros((2, 0, 4))
    out = roi_align(features, boxes, 2)
    chex.assert_shape(out, (2, 0, 2, 2, 3))
    grad = jax.grad(lambda f: jnp.sum(roi_align(f, boxes, 2)))(features)
    chex.assert_trees_all_close(grad, jnp.zeros_like(features))


def test_exact_divide_matches_ieee_float32_division():
    # XLA turns x / 7 into x * (1/7), off by one ulp for many x; bins must not move.
    numerator = np.arange(1, 4000, dtype=np.float32) * np.float32(0.37)
    for d in (3, 7, 14):
        got = np.asarray(jax.jit(lambda x, d=d: exact_divide(x, d))(numerator))
        np.testing.assert_array_equal(got, numerator / np.float32(d))


@pytest.mark.parametrize(
    ("features_shape", "boxes_shape", "kwargs", "match"),
    [
        (
            (8, 8, 3),
            (1, 2, 4),
            {},
            r"features \(B, H, W, C\) must have rank 4, got shape \(8, 8, 3\)",
        ),
        ((1, 8, 8, 3), (2, 4), {}, r"boxes \(B, R, 4\) must have rank 3, got shape \(2, 4\)"),
        ((1, 8, 8, 3), (1, 2, 5), {}, r"must have shape \(\.\.\., 4\), got shape \(1, 2, 5\)"),
        ((2, 8, 8, 3), (1, 2, 4), {}, r"got shapes \(2, 8, 8, 3\) and \(1, 2, 4\)"),
        ((1, 8, 8, 3), (1, 2, 4), {"output_size": 0}, "output_size must be a positive int"),
        ((1, 8, 8, 3), (1, 2, 4), {"max_sampling": 0}, "max_sampling must be a positive int"),
    ],
)
def test_bad_inputs_raise_value_errors_naming_shapes(features_shape, boxes_shape, kwargs, match):
    args = {"output_size": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        roi_align(jnp.zeros(features_shape), jnp.zeros(boxes_shape), **args)
