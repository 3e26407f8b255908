"""multiscale_roi_align against torchvision.ops.MultiScaleRoIAlign: level assignment (tiny,
huge and exactly-on-boundary boxes), inferred scales, forward and backward, errors."""

from collections import OrderedDict

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcv.ops.multiscale_roi_align import fpn_levels, infer_scales, multiscale_roi_align

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from torchvision.ops import poolers  # noqa: E402

pytestmark = pytest.mark.parity

NAMES = ["0", "1", "2", "3"]


def _boxes(rng, batch, n, image_hw):
    """``(batch, n, 4)`` boxes whose ``sqrt(area)`` spans every level (0 to ~1000 px), with
    zero-size, 1-pixel, on-boundary (sides 112, 224, 448) and partly outside boxes; adaptive
    sampling needs at most 7 samples per bin on them (``max_sampling`` is 8)."""
    h, w = image_hw
    # sqrt(area) log-uniform, aspect ratios in [1/3, 3]: at most 7 adaptive samples per bin.
    root = np.exp(rng.uniform(np.log(2.0), np.log(1000.0), (batch, n, 1)))
    aspect = np.exp(rng.uniform(-0.5, 0.5, (batch, n, 1)) * np.log(3.0))
    side = np.concatenate([root * aspect, root / aspect], -1)
    centre = rng.uniform(-0.2, 1.2, (batch, n, 2)) * np.array([w, h])
    side[:, 0] = 0.0  # zero-size
    side[:, 1] = 1.0
    side[:, 2, 0] = 0.0  # zero width
    side[:, 3] = (112.0, 112.0)  # exactly on the level boundaries
    side[:, 4] = (224.0, 224.0)
    side[:, 5] = (448.0, 448.0)
    side[:, 6] = (224.0 * 4, 224.0)  # sqrt(area) = 448
    side[:, 7] = (1500.0, 1300.0)  # huge
    boxes = np.concatenate([centre - side / 2, centre + side / 2], -1)
    boxes[:, 3:7] = np.round(boxes[:, 3:7])  # integer corners keep the areas exact
    return boxes.astype(np.float32)


def _torch_pool(features, boxes, image_shapes, cotangent, output_size=7, sampling_ratio=2):
    """torchvision's output ``(B, R, oh, ow, C)`` and per-level feature gradients (NHWC)."""
    xs = [torch.tensor(f).permute(0, 3, 1, 2).contiguous().requires_grad_() for f in features]
    x = OrderedDict(zip(NAMES[: len(xs)], xs, strict=True))
    x["pool"] = torch.zeros(1)  # not in featmap_names: ignored
    pooler = torchvision.ops.MultiScaleRoIAlign(NAMES[: len(xs)], output_size, sampling_ratio)
    y = pooler(x, [torch.tensor(b) for b in boxes], image_shapes)
    batch, n = boxes.shape[:2]
    g = torch.tensor(cotangent).permute(0, 1, 4, 2, 3).reshape(y.shape)
    y.backward(g)
    out = y.detach().reshape(batch, n, *y.shape[1:]).permute(0, 1, 3, 4, 2).numpy()
    return out, [t.grad.permute(0, 2, 3, 1).numpy() for t in xs]


def _pyramid(rng, batch, padded_hw, channels, levels=4):
    h, w = padded_hw
    return [
        rng.standard_normal((batch, -(-h // 2**k), -(-w // 2**k), channels)).astype(np.float32)
        for k in range(2, 2 + levels)
    ]


def test_levels_match_torchvision_level_mapper():
    rng = np.random.default_rng(0)
    boxes = _boxes(rng, 2, 300, (600, 800)).reshape(-1, 4)
    mapper = poolers.LevelMapper(2, 5)
    expected = mapper([torch.tensor(boxes)]).numpy()
    actual = np.asarray(jax.jit(lambda b: fpn_levels(b, 2, 5))(jnp.asarray(boxes)))
    np.testing.assert_array_equal(actual, expected)
    assert set(expected.tolist()) == {0, 1, 2, 3}
    # side 112 -> level 3, 224 -> 4, 448 -> 5 (index 1, 2, 3): eps keeps the boundaries up.
    np.testing.assert_array_equal(actual[3:8], [1, 2, 3, 3, 3])


@pytest.mark.parametrize(
    ("feature_sizes", "image_size"),
    [
        ([(50, 64), (25, 32), (13, 16), (7, 8)], (200, 250)),
        ([(200, 272), (100, 136), (50, 68), (25, 34)], (800, 1066)),
        ([(24, 33), (12, 17), (6, 9), (3, 5)], (96, 130)),
        ([(10, 10), (5, 5)], (31, 40)),
    ],
)
def test_inferred_scales_match_torchvision(feature_sizes, image_size):
    feats = [torch.zeros(1, 1, *s) for s in feature_sizes]
    scales, mapper = poolers._setup_scales(feats, [image_size], 224, 4)
    assert infer_scales(feature_sizes, image_size) == (tuple(scales), mapper.k_min, mapper.k_max)


@pytest.mark.parametrize("sampling_ratio", [2, -1])
def test_matches_torchvision_forward_and_backward(sampling_ratio):
    rng = np.random.default_rng(1 + sampling_ratio)
    image_shapes = [(200, 250), (176, 256)]  # padded batch 200 x 256, as GeneralizedRCNN pads
    features = _pyramid(rng, 2, (200, 256), channels=3)
    boxes = _boxes(rng, 2, 48, (200, 256))
    cotangent = rng.standard_normal((2, 48, 7, 7, 3)).astype(np.float32)
    expected, expected_grads = _torch_pool(
        features, boxes, image_shapes, cotangent, 7, sampling_ratio
    )

    def f(feats):
        return multiscale_roi_align(feats, jnp.asarray(boxes), (200, 256), 7, sampling_ratio)

    out, vjp = jax.vjp(jax.jit(f), [jnp.asarray(x) for x in features])
    (grads,) = vjp(jnp.asarray(cotangent))
    assert out.shape == (2, 48, 7, 7, 3)
    levels = np.asarray(fpn_levels(jnp.asarray(boxes), 2, 5))
    assert set(levels.ravel().tolist()) == {0, 1, 2, 3}
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)
    assert np.abs(expected).max() > 0.5
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        assert np.abs(expected_grad).max() > 0.1
        np.testing.assert_allclose(grad, expected_grad, atol=1e-5, rtol=1e-5)


def test_odd_sizes_single_level_and_nan_areas():
    rng = np.random.default_rng(5)
    # The feature sizes of a 96 x 130 image through ResNet + FPN; a (5, 3) output grid.
    features = _pyramid(rng, 2, (96, 130), channels=2)
    boxes = _boxes(rng, 2, 16, (96, 130))
    boxes[0, 8] = (40.0, 10.0, 20.0, 30.0)  # x2 < x1: negative area, NaN level in torchvision
    cotangent = np.zeros((2, 16, 5, 3, 2), np.float32)
    expected, _ = _torch_pool(features, boxes, [(96, 130), (90, 101)], cotangent, (5, 3))
    actual = jax.jit(lambda f, b: multiscale_roi_align(f, b, (96, 130), (5, 3)))(features, boxes)
    np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=1e-5)
    assert np.all(np.asarray(actual)[0, 8] == 0)
    # One map: every RoI is pooled from it, as torchvision's single-level shortcut.
    expected, _ = _torch_pool(features[1:2], boxes, [(96, 130)], cotangent, (5, 3))
    actual = multiscale_roi_align(features[1:2], boxes, (96, 130), (5, 3))
    np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=1e-5)


def test_bad_inputs_say_what_is_wrong():
    feats = [jnp.zeros((2, 8, 8, 3)), jnp.zeros((2, 4, 4, 3))]
    boxes = jnp.zeros((2, 5, 4))
    with pytest.raises(ValueError, match=r"features\[1\] \(B, H, W, C\) must have rank 4"):
        multiscale_roi_align([feats[0], jnp.zeros((4, 4, 3))], boxes, (32, 32))
    with pytest.raises(ValueError, match=r"one B and C.*\(3, 5, 4\)"):
        multiscale_roi_align(feats, jnp.zeros((3, 5, 4)), (32, 32))
    with pytest.raises(ValueError, match=r"one B and C"):
        multiscale_roi_align([feats[0], jnp.zeros((2, 4, 4, 5))], boxes, (32, 32))
    with pytest.raises(ValueError, match=r"boxes \(B, R, 4\) must have shape"):
        multiscale_roi_align(feats, jnp.zeros((2, 5, 5)), (32, 32))
    with pytest.raises(ValueError, match="at least one feature map"):
        multiscale_roi_align([], boxes, (32, 32))
    with pytest.raises(ValueError, match=r"image_size must be \(H, W\)"):
        multiscale_roi_align(feats, boxes, (32,))
