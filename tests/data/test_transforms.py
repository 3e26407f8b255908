"""tf transforms keep image, boxes, masks and segmentation consistent (NumPy references)."""

import numpy as np
import pytest
import tensorflow as tf

from jaxcv.data import transforms as T
from jaxcv.data.builders.scenes import SceneSpec, render_scene


def _example(seed=0, with_masks=True):
    scene = render_scene(np.random.default_rng((9, 0, seed)), SceneSpec(min_objects=3))
    ex = {
        "image": tf.constant(scene.image),
        "boxes": tf.constant(scene.boxes),
        "classes": tf.constant(scene.labels.astype(np.int32) + 1),
        "segmentation": tf.constant(scene.segmentation.astype(np.int32)),
    }
    if with_masks:
        ex["masks"] = tf.constant(scene.masks)
    return ex


def _np(ex):
    return {k: v.numpy() for k, v in ex.items()}


def _ref_tight(masks):
    boxes = np.zeros((len(masks), 4), np.float64)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if xs.size:
            boxes[i] = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    return boxes


def _assert_consistent(ex):
    """Boxes are the tight boxes of the masks; the semantic map agrees with every mask."""
    ex = _np(ex)
    np.testing.assert_array_equal(ex["boxes"], _ref_tight(ex["masks"]))
    assert np.all(ex["masks"].max(axis=(1, 2), initial=0) == 1)
    for m, c in zip(ex["masks"], ex["classes"], strict=True):
        assert np.all(ex["segmentation"][m > 0] == c)
    assert ex["image"].shape[:2] == ex["segmentation"].shape == ex["masks"].shape[1:]


def test_tight_boxes_matches_reference_with_empty_masks():
    rng = np.random.default_rng(0)
    masks = (rng.uniform(size=(6, 13, 17)) > 0.97).astype(np.uint8)
    masks[2] = 0
    masks[4] = 0
    masks[4, 12, 16] = 1  # a single bottom-right pixel
    boxes, nonempty = T.tight_boxes(tf.constant(masks))
    np.testing.assert_array_equal(boxes.numpy(), _ref_tight(masks))
    np.testing.assert_array_equal(nonempty.numpy(), masks.reshape(6, -1).any(axis=1))
    np.testing.assert_array_equal(boxes.numpy()[4], [16, 12, 17, 13])


def test_rank_errors_name_the_shape():
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        T.tight_boxes(tf.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"\(8, 8\)"):
        T.random_flip({"image": tf.zeros((8, 8))}, tf.constant([0, 0]))
    with pytest.raises(ValueError, match="max_objects"):
        T.pad_objects({"boxes": tf.zeros((0, 4))}, 0)


def test_random_flip_keeps_everything_consistent():
    ex = _example()
    ref = _np(ex)
    flipped_seen = kept_seen = False
    for s in range(8):
        out = T.random_flip(ex, tf.constant([s, 1]))
        o = _np(out)
        if np.array_equal(o["image"], ref["image"]):
            kept_seen = True
            np.testing.assert_array_equal(o["boxes"], ref["boxes"])
        else:
            flipped_seen = True
            np.testing.assert_array_equal(o["image"], ref["image"][:, ::-1])
            np.testing.assert_array_equal(o["masks"], ref["masks"][:, :, ::-1])
            np.testing.assert_array_equal(o["segmentation"], ref["segmentation"][:, ::-1])
        _assert_consistent(out)
    assert flipped_seen and kept_seen


def test_flip_without_masks_mirrors_boxes():
    ex = _example(with_masks=False)
    boxes = ex["boxes"].numpy().astype(np.float64)
    for s in range(8):
        out = _np(T.random_flip(ex, tf.constant([s, 2])))
        if not np.array_equal(out["image"], ex["image"].numpy()):
            expected = np.stack([128 - boxes[:, 2], boxes[:, 1], 128 - boxes[:, 0], boxes[:, 3]], 1)
            np.testing.assert_allclose(out["boxes"], expected, atol=1e-5)
            return
    pytest.fail("no flip in 8 seeds")


@pytest.mark.parametrize("window", [(0, 0, 128, 128), (10, 30, 70, 60), (64, 0, 64, 128)])
def test_crop_with_masks_recomputes_tight_boxes_and_drops_hidden(window):
    y0, x0, h, w = window
    ex = _example(seed=3)
    ref = _np(ex)
    out = T.crop(ex, y0, x0, h, w, min_visible_fraction=0.25)
    _assert_consistent(out)
    cropped = ref["masks"][:, y0 : y0 + h, x0 : x0 + w]
    kept = cropped.sum(axis=(1, 2)) >= 0.25 * ref["masks"].sum(axis=(1, 2))
    kept &= cropped.sum(axis=(1, 2)) > 0
    np.testing.assert_array_equal(out["masks"].numpy(), cropped[kept])
    np.testing.assert_array_equal(out["classes"].numpy(), ref["classes"][kept])
    np.testing.assert_array_equal(out["image"].numpy(), ref["image"][y0 : y0 + h, x0 : x0 + w])


def test_crop_without_masks_clips_boxes():
    boxes = np.array([[0, 0, 20, 20], [50, 50, 60, 90], [5, 70, 9, 80], [40, 10, 100, 30]], float)
    ex = {
        "image": tf.zeros((100, 120, 3), tf.uint8),
        "boxes": tf.constant(boxes, tf.float32),
        "classes": tf.constant([1, 2, 3, 4]),
        "ignore": tf.constant([False, True, False, False]),
    }
    out = _np(T.crop(ex, 10, 15, 50, 60, min_visible_fraction=0.25))
    shifted = boxes - [15, 10, 15, 10]
    clipped = np.clip(shifted, 0, [60, 50, 60, 50])
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    cw, ch = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    keep = (cw > 0) & (ch > 0) & (cw * ch >= 0.25 * area)
    np.testing.assert_allclose(out["boxes"], clipped[keep])
    np.testing.assert_array_equal(out["classes"], np.array([1, 2, 3, 4])[keep])
    np.testing.assert_array_equal(out["ignore"], np.array([False, True, False, False])[keep])
    assert out["image"].shape == (50, 60, 3)


@pytest.mark.parametrize("seed", range(6))
def test_random_resized_crop_keeps_size_and_consistency(seed):
    ex = _example(seed=seed)
    out = T.random_resized_crop(ex, tf.constant([seed, 7]), min_scale=0.5)
    assert out["image"].shape == (128, 128, 3)
    if out["masks"].shape[0]:
        _assert_consistent(out)


def test_resize_with_and_without_masks():
    ex = _example(seed=4)
    out = T.resize(ex, (64, 96))
    assert out["image"].shape == (64, 96, 3) and out["image"].dtype == tf.float32
    assert out["masks"].shape[1:] == (64, 96)
    _assert_consistent(out)
    plain = T.resize(_example(seed=4, with_masks=False), (64, 96))
    scale = np.array([96 / 128, 64 / 128, 96 / 128, 64 / 128])
    np.testing.assert_allclose(plain["boxes"].numpy(), ex["boxes"].numpy() * scale, rtol=1e-6)


def test_random_translate_shifts_within_pad():
    ex = _example(seed=5)
    for s in range(4):
        out = T.random_translate(ex, tf.constant([s, 3]), pad=4)
        assert out["image"].shape == (128, 128, 3)
        _assert_consistent(out)
        # The image is the original shifted by (dy, dx) in [-4, 4]: find the shift.
        o, r = out["image"].numpy().astype(int), ex["image"].numpy().astype(int)
        shifts = [
            (dy, dx)
            for dy in range(-4, 5)
            for dx in range(-4, 5)
            if np.array_equal(o[8:-8, 8:-8], r[8 - dy : 120 - dy, 8 - dx : 120 - dx])
        ]
        assert len(shifts) == 1


def test_normalize_and_grayscale():
    image = np.arange(2 * 3 * 1, dtype=np.uint8).reshape(2, 3, 1) * 40
    out = T.normalize({"image": tf.constant(image)}, (0.3,), (0.5,))
    np.testing.assert_allclose(out["image"].numpy(), (image / 255.0 - 0.3) / 0.5, rtol=1e-6)
    rgb = T.grayscale_to_rgb({"image": tf.constant(image)})["image"].numpy()
    np.testing.assert_array_equal(rgb, np.repeat(image, 3, axis=-1))
    with pytest.raises(ValueError, match=r"\(2, 3, 3\)"):
        T.grayscale_to_rgb({"image": tf.zeros((2, 3, 3))})


def test_pad_objects_pads_and_truncates_to_the_largest():
    boxes = np.array([[0, 0, 2, 2], [0, 0, 10, 10], [0, 0, 1, 1], [0, 0, 5, 5], [0, 0, 10, 10]])
    ex = {
        "boxes": tf.constant(boxes, tf.float32),
        "classes": tf.constant([1, 2, 3, 4, 5]),
        "masks": tf.ones((5, 4, 4), tf.uint8)
        * tf.constant([1, 2, 3, 4, 5], tf.uint8)[:, None, None],
    }
    out = _np(T.pad_objects(ex, 8))
    np.testing.assert_array_equal(out["valid"], [True] * 5 + [False] * 3)
    np.testing.assert_array_equal(out["classes"], [1, 2, 3, 4, 5, 0, 0, 0])
    np.testing.assert_array_equal(out["boxes"][5:], 0)
    assert out["masks"].shape == (8, 4, 4) and np.all(out["masks"][5:] == 0)
    # Truncation: the 3 largest (areas 100, 25, 100 -> objects 2, 4, 5) in their order.
    out = _np(T.pad_objects(ex, 3))
    np.testing.assert_array_equal(out["classes"], [2, 4, 5])
    np.testing.assert_array_equal(out["masks"][:, 0, 0], [2, 4, 5])
    assert out["valid"].all()
    empty = _np(T.pad_objects({"boxes": tf.zeros((0, 4)), "classes": tf.zeros((0,), tf.int32)}, 2))
    np.testing.assert_array_equal(empty["valid"], [False, False])
