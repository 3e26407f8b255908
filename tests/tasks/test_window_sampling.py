"""Training-window sampling, labelling and cropping against NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcv.tasks.window_sampling import (
    WindowLabel,
    WindowSampling,
    box_coverage,
    crop_windows,
    label_windows,
    sample_windows,
    training_windows,
    window_targets,
)

F32 = np.float32


def np_coverage(window, box):
    iw = max(0.0, min(window[2], box[2]) - max(window[0], box[0]))
    ih = max(0.0, min(window[3], box[3]) - max(window[1], box[1]))
    area = (box[2] - box[0]) * (box[3] - box[1])
    return iw * ih / area if area > 0 else 0.0


def np_bilinear_crop(image, window, out_hw):
    """float64 bilinear sampling at pixel centres (for windows not shrunk: no antialiasing)."""
    image = np.asarray(image, np.float64)
    h, w = out_hw
    x1, y1, x2, y2 = window
    ys = y1 + (np.arange(h) + 0.5) * (y2 - y1) / h - 0.5
    xs = x1 + (np.arange(w) + 0.5) * (x2 - x1) / w - 0.5
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    a = image[y0][:, x0]
    b = image[y0][:, x0 + 1]
    c = image[y0 + 1][:, x0]
    d = image[y0 + 1][:, x0 + 1]
    return (1 - fy) * ((1 - fx) * a + fx * b) + fy * ((1 - fx) * c + fx * d)


def test_box_coverage_matches_numpy():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, (2, 5, 2))
    windows = np.concatenate([xy, xy + rng.uniform(5, 40, (2, 5, 2))], -1).astype(F32)
    xy = rng.uniform(0, 50, (2, 3, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 30, (2, 3, 2))], -1).astype(F32)
    boxes[1, 2] = [10, 10, 10, 20]  # no area: coverage 0
    got = np.asarray(box_coverage(jnp.asarray(windows), jnp.asarray(boxes)))
    ref = np.array(
        [
            [[np_coverage(windows[b, r], boxes[b, m]) for m in range(3)] for r in range(5)]
            for b in range(2)
        ]
    )
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_crop_windows_exact_slices_resize_and_bilinear():
    rng = np.random.default_rng(1)
    images = rng.normal(size=(2, 40, 48, 3)).astype(F32)
    windows = np.array(
        [
            [[4, 6, 20, 22], [0, 0, 48, 40], [10.5, 3.25, 18.5, 11.25]],
            [[32, 24, 48, 40], [0, 0, 48, 40], [7.0, 9.0, 15.0, 17.0]],
        ],
        F32,
    )
    crops = np.asarray(crop_windows(jnp.asarray(images), jnp.asarray(windows), (16, 16)))
    assert crops.shape == (2, 3, 16, 16, 3)
    # Integer windows of the output size are plain slices.
    np.testing.assert_allclose(crops[0, 0], images[0, 6:22, 4:20], atol=1e-6)
    np.testing.assert_allclose(crops[1, 0], images[1, 24:40, 32:48], atol=1e-6)
    # The whole image is jax.image.resize (the fully-convolutional evaluation's resampling).
    whole = jax.image.resize(jnp.asarray(images), (2, 16, 16, 3), "linear")
    np.testing.assert_allclose(crops[:, 1], np.asarray(whole), atol=1e-5)
    # Upsampling an 8 px window x2 is bilinear at pixel centres; shifted by fractions too.
    for b in range(2):
        ref = np_bilinear_crop(images[b], windows[b, 2], (16, 16))
        np.testing.assert_allclose(crops[b, 2], ref, atol=1e-5)


def test_sample_windows_inside_the_scene_with_the_object():
    rng = np.random.default_rng(2)
    b, hw, win = 64, (96, 128), (32, 32)
    xy = rng.uniform(0, 60, (b, 1, 2))
    size = rng.uniform(12, 30, (b, 1, 2))
    boxes = np.concatenate([xy, xy + size], -1).astype(F32)
    valid = np.ones((b, 1), bool)
    windows = np.asarray(
        sample_windows(
            jax.random.PRNGKey(0),
            jnp.asarray(boxes),
            jnp.asarray(valid),
            hw,
            win,
            num_object=3,
            num_random=5,
            relative_size=(0.3, 0.7),
            random_scale=(0.75, 2.0),
            jitter=0.0,
        )
    )
    assert windows.shape == (b, 8, 4)
    w, h = windows[..., 2] - windows[..., 0], windows[..., 3] - windows[..., 1]
    np.testing.assert_allclose(w, h, rtol=1e-5)  # the window's aspect ratio (square)
    assert windows[..., :2].min() >= -1e-4
    assert (windows[..., 2] <= hw[1] + 1e-3).all() and (windows[..., 3] <= hw[0] + 1e-3).all()
    obj = windows[:, :3]
    cover = np.array([[np_coverage(obj[i, r], boxes[i, 0]) for r in range(3)] for i in range(b)])
    np.testing.assert_allclose(cover, 1.0, atol=1e-5)  # jitter 0: the whole object
    rel = np.maximum(size[:, :, 0], size[:, :, 1]) / w[:, :3]
    fits = w[:, :3] < min(hw) - 1e-3  # not capped by the scene
    assert ((rel[fits] >= 0.3 - 1e-5) & (rel[fits] <= 0.7 + 1e-5)).all()
    rand = w[:, 3:] / win[0]
    assert rand.min() >= 0.75 - 1e-5 and rand.max() <= min(hw) / win[0] + 1e-5


def test_sample_windows_without_objects_are_random():
    boxes = jnp.zeros((2, 3, 4))
    valid = jnp.zeros((2, 3), bool)
    w = sample_windows(
        jax.random.PRNGKey(1), boxes, valid, (64, 64), (32, 32), num_object=2, num_random=1
    )
    assert w.shape == (2, 3, 4) and bool(jnp.all(jnp.isfinite(w)))
    assert float(w[..., 2:].max()) <= 64 + 1e-4 and float(w[..., :2].min()) >= 0


def test_label_windows_hand_made():
    boxes = jnp.array([[[10, 10, 30, 30], [40, 40, 50, 50], [0, 0, 0, 0]]], jnp.float32)
    valid = jnp.array([[True, True, False]])
    windows = jnp.array(
        [
            [
                [0, 0, 40, 40],  # box 0 whole, rel 0.5; box 1 outside -> positive 0
                [35, 35, 55, 55],  # box 1 whole, rel 0.5 -> positive 1
                [60, 60, 100, 100],  # nothing -> background
                [20, 0, 60, 40],  # half of box 0 -> ignore
                [0, 0, 200, 200],  # both whole but rel 0.1 / 0.05 -> ignore
                [5, 5, 55, 55],  # both whole: rel 0.4 and 0.2; only box 0 in range -> 0
                [28, 28, 68, 68],  # 1% of box 0, box 1 whole (rel 0.25) -> positive 1
            ]
        ],
        jnp.float32,
    )
    label, target = label_windows(
        windows,
        boxes,
        valid,
        positive_coverage=0.8,
        background_coverage=0.3,
        relative_size=(0.25, 0.75),
    )
    POS, BG, IGN = (int(WindowLabel.POSITIVE), int(WindowLabel.BACKGROUND), int(WindowLabel.IGNORE))
    np.testing.assert_array_equal(np.asarray(label)[0], [POS, POS, BG, IGN, IGN, POS, POS])
    np.testing.assert_array_equal(np.asarray(target)[0], [0, 1, 0, 0, 0, 0, 1])
    # Both objects in range: the larger box is the target.
    label, target = label_windows(windows[:, 5:6], boxes, valid, relative_size=(0.1, 0.75))
    assert int(label[0, 0]) == POS and int(target[0, 0]) == 0
    with pytest.raises(ValueError, match="background_coverage <= positive_coverage"):
        label_windows(windows, boxes, valid, positive_coverage=0.2, background_coverage=0.3)


def test_window_targets_map_boxes_into_window_pixels():
    windows = jnp.array([[[10, 20, 50, 60], [0, 0, 80, 40]]], jnp.float32)
    boxes = jnp.array([[[20, 30, 40, 50], [5, 5, 25, 15]]], jnp.float32)
    got = window_targets(windows, boxes, jnp.array([[0, 1]]), (20, 20))
    # window 0: 40 px -> 20 px (x0.5) from (10, 20); window 1: x 80 -> 20, y 40 -> 20.
    ref = np.array([[[5, 5, 15, 15], [1.25, 2.5, 6.25, 7.5]]], F32)
    np.testing.assert_allclose(np.asarray(got), ref, atol=1e-6)


@pytest.mark.parametrize("background", [True, False])
def test_training_windows_targets_and_weights(background):
    rng = np.random.default_rng(3)
    images = jnp.asarray(rng.normal(size=(4, 64, 64, 3)), jnp.float32)
    boxes = jnp.asarray(np.tile([[[20, 16, 40, 44]]], (4, 1, 1)), jnp.float32)
    classes = jnp.array([[1], [2], [3], [2]], jnp.int32)
    valid = jnp.ones((4, 1), bool)
    sampling = WindowSampling(num_object=3, num_random=5, random_scale=(0.5, 1.0))
    out = training_windows(
        jax.random.PRNGKey(4),
        images,
        boxes,
        classes,
        valid,
        (16, 16),
        sampling,
        num_classes=3,
        background=background,
    )
    assert out["images"].shape == (4, 8, 16, 16, 3)
    label = np.asarray(out["label"])
    pos, neg = label == WindowLabel.POSITIVE, label == WindowLabel.BACKGROUND
    assert pos[:, :3].all() and neg.any()  # jitter 0.2, coverage 0.8: object windows hold it
    target = np.asarray(out["class_target"])
    np.testing.assert_array_equal(
        target[pos], np.broadcast_to(np.asarray(classes) - 1, (4, 8))[pos]
    )
    if background:
        assert (target[neg] == 3).all()
    np.testing.assert_array_equal(np.asarray(out["class_weight"]) > 0, pos | (neg & background))
    np.testing.assert_array_equal(np.asarray(out["box_weight"]) > 0, pos)
    ref = window_targets(out["windows"], boxes, jnp.zeros((4, 8), jnp.int32), (16, 16))
    np.testing.assert_allclose(np.asarray(out["box_target"]), np.asarray(ref), atol=1e-6)


def test_sampling_validation():
    with pytest.raises(ValueError, match="at least one window"):
        WindowSampling(num_object=0, num_random=0)
    with pytest.raises(ValueError, match="jitter"):
        WindowSampling(jitter=0.5)
    assert WindowSampling(num_object=2, num_random=3).windows_per_image == 5
