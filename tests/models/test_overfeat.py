"""Overfeat: the FC->conv conversion is exact, and its map equals the naive sliding window."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcv.models.localizer import Localizer
from jaxcv.models.overfeat import (
    WindowGeometry,
    apply_multiscale,
    convert_params,
    fully_convolutional,
    object_probs,
)
from jaxcv.ops.boxes import decode_boxes
from jaxcv.tasks.sliding_window import naive_multiscale, naive_sliding_window

WINDOW = (32, 32)  # 32 -> 30 -> 15 -> 13 -> 6 -> 4 -> 2: last pool 2 x 2, stride 8
FIELDS = {"channels": (4, 8, 8), "hidden_units": (16, 12), "box_hidden_units": (8,)}


def _trained_like(model, key=0):
    """Random variables with non-trivial BatchNorm statistics (as after training)."""
    variables = model.init(jax.random.PRNGKey(key), jnp.zeros((1, *WINDOW, 3)))
    leaves, tree = jax.tree.flatten(variables["batch_stats"])
    keys = jax.random.split(jax.random.PRNGKey(key + 100), len(leaves))
    stats = [
        jax.random.uniform(k, x.shape, minval=0.5, maxval=2.0)
        for k, x in zip(keys, leaves, strict=True)
    ]
    return {"params": variables["params"], "batch_stats": jax.tree.unflatten(tree, stats)}


def _images(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


@pytest.fixture(
    params=[(False, False), (True, False), (False, True)],
    ids=["agnostic", "class_specific", "background"],
)
def net(request):
    class_specific, background = request.param
    model = Localizer(num_classes=3, class_specific=class_specific, background=background, **FIELDS)
    variables = _trained_like(model)
    fc_model, geometry = fully_convolutional(model, WINDOW)
    return model, variables, fc_model, convert_params(variables, model, WINDOW), geometry


def test_geometry_of_the_test_net(net):
    *_, geometry = net
    assert geometry.stride == 8
    assert geometry.feature_hw == (2, 2)
    np.testing.assert_array_equal(
        geometry.window_boxes((2, 3))[1, 2], np.array([16, 8, 48, 40], np.float32)
    )


def test_single_crop_gives_the_fc_outputs(net):
    model, variables, fc_model, converted, _ = net
    images = _images((4, *WINDOW, 3))
    expected = model.apply(variables, images)
    got = fc_model.apply(converted, images)
    chex.assert_shape(got["logits"], (4, 1, 1, 3 + model.background))
    chex.assert_trees_all_close(got["logits"][:, 0, 0], expected["logits"], atol=1e-5, rtol=1e-5)
    chex.assert_trees_all_close(
        got["box_deltas"][:, 0, 0], expected["box_deltas"], atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("image_hw", [(56, 72), (61, 47)])
def test_large_image_map_equals_naive_crops(net, image_hw):
    model, variables, fc_model, converted, geometry = net
    images = _images((2, *image_hw, 3), seed=1)
    got = fc_model.apply(converted, images)
    chex.assert_shape(got["logits"], (2, *geometry.output_size(image_hw), 3 + model.background))
    nh, nw = geometry.num_windows(image_hw)
    assert nh >= 3 and nw >= 2
    # Reference: every crop at the matching offset classified by the FC net, one at a time.
    s = geometry.stride
    apply = jax.jit(model.apply)
    for i in range(nh):
        for j in range(nw):
            crop = images[:, i * s : i * s + WINDOW[0], j * s : j * s + WINDOW[1]]
            ref = apply(variables, crop)
            chex.assert_trees_all_close(got["logits"][:, i, j], ref["logits"], atol=1e-5, rtol=1e-5)
            chex.assert_trees_all_close(
                got["box_deltas"][:, i, j], ref["box_deltas"], atol=1e-5, rtol=1e-5
            )
    # The batched naive sliding window gives the same scores (and boxes in image pixels).
    probs, boxes = naive_sliding_window(model, variables, images, geometry=geometry)
    chex.assert_shape(probs, (2, nh, nw, 3))
    # With a background class the maps hold the object columns of the (K + 1)-way softmax.
    chex.assert_trees_all_close(
        probs, jax.nn.softmax(got["logits"][:, :nh, :nw])[..., :3], atol=1e-6, rtol=1e-5
    )
    windows = jnp.asarray(geometry.window_boxes((nh, nw)))
    anchors = windows[None, :, :, None] if model.class_specific else windows[None]
    expected_boxes = decode_boxes(got["box_deltas"][:, :nh, :nw], anchors, (10.0, 10.0, 5.0, 5.0))
    expected_boxes = jnp.clip(
        expected_boxes, 0, jnp.array([image_hw[1], image_hw[0], image_hw[1], image_hw[0]])
    )
    chex.assert_trees_all_close(boxes, expected_boxes, atol=1e-3, rtol=1e-5)


def test_multiscale_equals_naive_multiscale(net):
    model, variables, fc_model, converted, geometry = net
    images = _images((1, 48, 48, 3), seed=2)
    scales = (0.75, 1.0, 1.5)
    fast = apply_multiscale(fc_model, converted, images, scales, geometry)
    slow = naive_multiscale(model, variables, images, scales, geometry)
    assert [o.scale for o in fast] == list(scales)
    for f, n in zip(fast, slow, strict=True):
        assert f.image_hw == n.image_hw == (round(48 * f.scale), round(48 * f.scale))
        h, w = n.probs.shape[1:3]
        assert (h, w) == geometry.num_windows(f.image_hw)
        chex.assert_trees_all_close(f.probs[:, :h, :w], n.probs, atol=1e-6, rtol=1e-5)
        chex.assert_trees_all_close(f.boxes[:, :h, :w], n.boxes, atol=1e-3, rtol=1e-5)
        # Windows are reported in original-image pixels.
        np.testing.assert_allclose(f.windows[0, 0], np.array([0, 0, 32, 32]) / f.scale)
        assert float(f.boxes.max()) <= 48.0 + 1e-4 and float(f.boxes.min()) >= 0.0


@pytest.mark.parametrize("image_hw", [(61, 47), (33, 40)])  # odd sizes; one window row
def test_fine_stride_map_equals_naive_crops_at_half_the_stride(net, image_hw):
    """Overfeat's offset max-pooling: windows every 4 px (8 / pool 2), same FC-net scores."""
    model, variables, _, converted, _ = net
    fc_model, geometry = fully_convolutional(model, WINDOW, fine_stride=True)
    assert geometry.stride == 4 and geometry.offsets == 2
    images = _images((2, *image_hw, 3), seed=4)
    got = fc_model.apply(converted, images)
    out_hw = geometry.output_size(image_hw)
    chex.assert_shape(got["logits"], (2, *out_hw, 3 + model.background))
    nh, nw = geometry.num_windows(image_hw)
    assert nh <= out_hw[0] <= nh + 1 and nw <= out_hw[1] <= nw + 1
    crops = jnp.stack(
        [
            images[:, 4 * i : 4 * i + WINDOW[0], 4 * j : 4 * j + WINDOW[1]]
            for i in range(nh)
            for j in range(nw)
        ],
        axis=1,
    ).reshape(-1, *WINDOW, 3)
    ref = jax.jit(model.apply)(variables, crops)
    logits = ref["logits"].reshape(2, nh, nw, -1)  # crops are batch-major, then (i, j)
    chex.assert_trees_all_close(got["logits"][:, :nh, :nw], logits, atol=1e-5, rtol=1e-5)
    deltas = ref["box_deltas"].reshape(2, nh, nw, *ref["box_deltas"].shape[1:])
    chex.assert_trees_all_close(got["box_deltas"][:, :nh, :nw], deltas, atol=1e-5, rtol=1e-5)
    # The naive sliding window at the fine stride and the multi-scale maps agree too.
    fast = apply_multiscale(fc_model, converted, images, (1.0, 1.25), geometry)
    slow = naive_multiscale(model, variables, images, (1.0, 1.25), geometry)
    for f, n in zip(fast, slow, strict=True):
        h, w = n.probs.shape[1:3]
        chex.assert_trees_all_close(f.probs[:, :h, :w], n.probs, atol=1e-6, rtol=1e-5)
        chex.assert_trees_all_close(f.boxes[:, :h, :w], n.boxes, atol=1e-3, rtol=1e-5)


def test_object_probs_drop_only_the_background_column():
    logits = np.random.default_rng(5).normal(size=(2, 3, 5)).astype(np.float32)
    z = np.exp(logits.astype(np.float64))
    p = z / z.sum(-1, keepdims=True)
    np.testing.assert_allclose(object_probs(jnp.asarray(logits), 4), p[..., :4], rtol=1e-5)
    np.testing.assert_allclose(object_probs(jnp.asarray(logits), 5), p, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\) or \(\.\.\., 4\)"):
        object_probs(jnp.asarray(logits), 3)


class FullyConvShapesTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_output_shapes(self):
        model = Localizer(num_classes=4, class_specific=True, **FIELDS)
        variables = _trained_like(model, key=3)
        fc_model, geometry = fully_convolutional(model, WINDOW)
        converted = convert_params(variables, model, WINDOW)
        out = self.variant(fc_model.apply)(converted, _images((2, 40, 64, 3)))
        oh, ow = geometry.output_size((40, 64))
        assert (oh, ow) == (2, 5)
        chex.assert_shape(out["logits"], (2, oh, ow, 4))
        chex.assert_shape(out["box_deltas"], (2, oh, ow, 4, 4))


@pytest.mark.parametrize("size", [32, 33, 39, 40, 47, 64, 100])
def test_output_size_and_num_windows(size):
    geometry = WindowGeometry(window=WINDOW, stride=8, kernel_size=3, pool_size=2, stages=3)
    oh, _ = geometry.output_size((size, size))
    nh, _ = geometry.num_windows((size, size))
    assert nh == (size - 32) // 8 + 1
    # The map can have extra locations whose windows overhang the border (but whose
    # receptive field does not): never fewer than the windows inside.
    assert nh <= oh <= nh + 1


def test_conversion_errors():
    model = Localizer(num_classes=3, **FIELDS)
    variables = _trained_like(model)
    broken = {"params": {k: v for k, v in variables["params"].items() if k != "box_out"}}
    with pytest.raises(ValueError, match="box_out"):
        convert_params(broken, model, WINDOW)
    with pytest.raises(ValueError, match="does not flatten"):
        convert_params(variables, model, (40, 40))  # a 3 x 3 pool: kernel sizes disagree
    with pytest.raises(ValueError, match="Localizer"):
        fully_convolutional(object(), WINDOW)
    fc_model, geometry = fully_convolutional(model, WINDOW)
    with pytest.raises(ValueError, match="smaller than one window"):
        fc_model.apply(convert_params(variables, model, WINDOW), _images((1, 24, 40, 3)))
    with pytest.raises(ValueError, match="smaller than"):
        apply_multiscale(
            fc_model,
            convert_params(variables, model, WINDOW),
            _images((1, 40, 40, 3)),
            (0.5,),
            geometry,
        )
