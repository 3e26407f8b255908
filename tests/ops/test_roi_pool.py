"""roi_pool against torchvision.ops.roi_pool: forward, argmax backward, edge cases, errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcv.ops.roi_pool import roi_pool

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.parity


def random_boxes(rng, batch, n, image_size):
    """``(batch, n, 4)`` boxes: inside, partly and wholly outside the image, and zero-size."""
    centre = rng.uniform(-0.4 * image_size, 1.4 * image_size, (batch, n, 2))
    size = rng.uniform(0, 1.5 * image_size, (batch, n, 2))
    size[:, :2] = 0.0
    centre[:, 3] = -0.5 * image_size
    centre[:, 4] = 2.0 * image_size
    centre[:, 5] = 0.5 * image_size  # a box much larger than the map: bins span many rows
    size[:, 5] = 4.0 * image_size
    return np.concatenate([centre - size / 2, centre + size / 2], -1).astype(np.float32)


def torch_roi_pool(features, boxes, cotangent, output_size, scale):
    batch, n = boxes.shape[:2]
    channels = features.shape[-1]
    x = torch.tensor(features).permute(0, 3, 1, 2).contiguous().requires_grad_()
    y = torchvision.ops.roi_pool(x, [torch.tensor(b) for b in boxes], output_size, scale)
    y.backward(torch.tensor(cotangent).permute(0, 1, 4, 2, 3).reshape(y.shape))
    out = y.detach().reshape(batch, n, channels, *output_size).permute(0, 1, 3, 4, 2)
    return out.numpy(), x.grad.permute(0, 2, 3, 1).numpy()


def run_case(seed, shape, n_boxes, output_size, scale, relu=False):
    rng = np.random.default_rng(seed)
    batch, height, width, channels = shape
    features = rng.standard_normal(shape).astype(np.float32)
    if relu:  # many exact ties (zeros): the first maximum in row-major order gets the gradient
        features = np.maximum(features, 0.0)
    boxes = random_boxes(rng, batch, n_boxes, max(height, width) / scale)
    cotangent = rng.standard_normal((batch, n_boxes, *output_size, channels)).astype(np.float32)
    expected, expected_grad = torch_roi_pool(features, boxes, cotangent, output_size, scale)
    fn = jax.jit(lambda x: roi_pool(x, jnp.asarray(boxes), output_size, scale))
    out, vjp = jax.vjp(fn, jnp.asarray(features))
    (grad,) = vjp(jnp.asarray(cotangent))
    return out, fn(jnp.asarray(features)), grad, expected, expected_grad


@pytest.mark.parametrize("scale", [1 / 16, 0.5, 1.0])
@pytest.mark.parametrize("relu", [False, True])
def test_matches_torchvision_forward_and_backward(scale, relu):
    out, out_primal, grad, expected, expected_grad = run_case(
        seed=int(16 * scale) + relu,
        shape=(2, 11, 9, 3),
        n_boxes=30,
        output_size=(7, 5),
        scale=scale,
        relu=relu,
    )
    chex.assert_shape(out, (2, 30, 7, 5, 3))
    np.testing.assert_array_equal(out, expected)  # a max is exact
    np.testing.assert_array_equal(out_primal, expected)
    chex.assert_trees_all_close(grad, expected_grad, atol=1e-5)


def test_many_boxes_span_several_chunks():
    out, _, grad, expected, expected_grad = run_case(
        seed=5, shape=(2, 30, 26, 32), n_boxes=200, output_size=(7, 7), scale=0.5
    )
    np.testing.assert_array_equal(out, expected)
    chex.assert_trees_all_close(grad, expected_grad, atol=1e-5)


class VariantsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_forward_with_and_without_jit(self):
        rng = np.random.default_rng(2)
        features = rng.standard_normal((2, 6, 7, 4)).astype(np.float32)
        boxes = random_boxes(rng, 2, 8, 14.0)
        expected, _ = torch_roi_pool(
            features, boxes, np.zeros((2, 8, 2, 3, 4), np.float32), (2, 3), 0.5
        )
        fn = self.variant(lambda f, b: roi_pool(f, b, (2, 3), spatial_scale=0.5))
        out = fn(jnp.asarray(features), jnp.asarray(boxes))
        chex.assert_shape(out, (2, 8, 2, 3, 4))
        np.testing.assert_array_equal(out, expected)


def test_rounding_is_half_away_from_zero_and_empty_bins_are_zero():
    features = np.arange(1 * 6 * 6 * 1, dtype=np.float32).reshape(1, 6, 6, 1)
    # x1 = 2.5 rounds to 3 (not 2, as round-half-to-even would); the second box is off the map.
    boxes = np.array([[[2.5, 0.5, 4.4, 1.4], [10.0, 10.0, 12.0, 12.0]]], np.float32)
    out = np.asarray(roi_pool(jnp.asarray(features), jnp.asarray(boxes), 1))
    expected, _ = torch_roi_pool(
        features, boxes, np.zeros((1, 2, 1, 1, 1), np.float32), (1, 1), 1.0
    )
    np.testing.assert_array_equal(out, expected)
    assert out[0, 0, 0, 0, 0] == features[0, 1, 4, 0]
    assert out[0, 1, 0, 0, 0] == 0.0
    grad = jax.grad(lambda f: jnp.sum(roi_pool(f, jnp.asarray(boxes), 1)))(jnp.asarray(features))
    assert float(jnp.sum(grad)) == 1.0 and float(grad[0, 1, 4, 0]) == 1.0


def test_box_gradient_is_zero():
    features = jnp.ones((1, 5, 5, 2))
    boxes = jnp.array([[[0.0, 0.0, 3.0, 3.0]]])
    grad = jax.grad(lambda b: jnp.sum(roi_pool(features, b, 2)))(boxes)
    chex.assert_trees_all_close(grad, jnp.zeros_like(boxes))


@pytest.mark.parametrize(
    ("features_shape", "boxes_shape", "output_size", "match"),
    [
        (
            (8, 8, 3),
            (1, 2, 4),
            2,
            r"features \(B, H, W, C\) must have rank 4, got shape \(8, 8, 3\)",
        ),
        ((1, 8, 8, 3), (1, 2, 3), 2, r"must have shape \(\.\.\., 4\), got shape \(1, 2, 3\)"),
        ((1, 8, 8, 3), (2, 4), 2, r"must have rank 3, got shape \(2, 4\)"),
        ((3, 8, 8, 3), (1, 2, 4), 2, r"got shapes \(3, 8, 8, 3\) and \(1, 2, 4\)"),
        ((1, 8, 8, 3), (1, 2, 4), (2, 0), "output_size must be a positive int"),
    ],
)
def test_bad_inputs_raise_value_errors_naming_shapes(
    features_shape, boxes_shape, output_size, match
):
    with pytest.raises(ValueError, match=match):
        roi_pool(jnp.zeros(features_shape), jnp.zeros(boxes_shape), output_size)
