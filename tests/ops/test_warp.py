"""R-CNN's warp: context padding and bilinear crop-and-resize against float64 NumPy."""

import jax
import numpy as np
import pytest

from jaxcv.ops.warp import context_boxes, crop_and_resize


def _reference(images, boxes, out_h, out_w, fill):
    """Loops in float64: bilinear reads of a fill-padded image at the output pixel centres."""
    b, h, w, c = images.shape
    out = np.zeros((b, boxes.shape[1], out_h, out_w, c))

    def pixel(n, y, x):
        return images[n, y, x] if 0 <= y < h and 0 <= x < w else np.full(c, fill)

    for n in range(b):
        for r, (x1, y1, x2, y2) in enumerate(boxes[n].astype(np.float64)):
            for i in range(out_h):
                for j in range(out_w):
                    y = y1 + (i + 0.5) * (y2 - y1) / out_h - 0.5
                    x = x1 + (j + 0.5) * (x2 - x1) / out_w - 0.5
                    y0, x0 = int(np.floor(y)), int(np.floor(x))
                    fy, fx = y - y0, x - x0
                    out[n, r, i, j] = (
                        (1 - fy) * (1 - fx) * pixel(n, y0, x0)
                        + (1 - fy) * fx * pixel(n, y0, x0 + 1)
                        + fy * (1 - fx) * pixel(n, y0 + 1, x0)
                        + fy * fx * pixel(n, y0 + 1, x0 + 1)
                    )
    return out


def test_crop_and_resize_matches_float64_reference():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 13, 17, 3)).astype(np.float32)
    boxes = np.array(
        [
            [[0, 0, 17, 13], [2.3, 1.7, 9.6, 11.2], [-4, -3, 6, 5], [10, 8, 25, 20]],
            [[5, 5, 5.5, 6], [3, 2, 4, 3], [-10, -10, -2, -1], [1.25, 0.5, 16.75, 12.5]],
        ],
        np.float32,
    )
    got = np.asarray(jax.jit(crop_and_resize, static_argnums=2)(images, boxes, (7, 5)))
    want = _reference(images.astype(np.float64), boxes, 7, 5, 0.0)
    assert got.shape == (2, 4, 7, 5, 3)
    np.testing.assert_allclose(got, want, atol=2e-5)
    filled = np.asarray(crop_and_resize(images, boxes, 6, fill_value=-1.5))
    np.testing.assert_allclose(filled, _reference(images, boxes, 6, 6, -1.5), atol=2e-5)
    assert np.allclose(filled[1, 2], -1.5)  # wholly outside: the fill value


def test_whole_image_box_at_same_size_is_identity():
    images = np.random.default_rng(1).normal(size=(1, 8, 6, 2)).astype(np.float32)
    boxes = np.array([[[0, 0, 6, 8]]], np.float32)
    np.testing.assert_allclose(crop_and_resize(images, boxes, (8, 6))[0, 0], images[0], atol=1e-6)


def test_context_boxes_leave_padding_pixels_around_the_box():
    boxes = np.array([[10.0, 20.0, 50.0, 40.0]], np.float32)
    dilated = np.asarray(context_boxes(boxes, 64, 16))
    # The box fills the central 32 of 64 pixels: it doubles around its centre.
    np.testing.assert_allclose(dilated, [[-10.0, 10.0, 70.0, 50.0]], rtol=1e-6)
    # Warping: the original box spans output pixels 16..47 exactly.
    width = dilated[0, 2] - dilated[0, 0]
    np.testing.assert_allclose(dilated[0, 0] + 16 * width / 64, 10.0, rtol=1e-6)
    np.testing.assert_allclose(context_boxes(boxes, 64, 0), boxes)
    rect = np.asarray(context_boxes(boxes, (40, 80), 10))
    np.testing.assert_allclose(rect[0, 2] - rect[0, 0], 40 * 80 / 60, rtol=1e-6)
    np.testing.assert_allclose(rect[0, 3] - rect[0, 1], 20 * 40 / 20, rtol=1e-6)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="images"):
        crop_and_resize(np.zeros((4, 4, 3)), np.zeros((1, 1, 4)), 2)
    with pytest.raises(ValueError, match="boxes"):
        crop_and_resize(np.zeros((1, 4, 4, 3)), np.zeros((1, 4)), 2)
    with pytest.raises(ValueError, match="first 1"):
        crop_and_resize(np.zeros((2, 4, 4, 3)), np.zeros((1, 1, 4)), 2)
    with pytest.raises(ValueError, match="padding"):
        context_boxes(np.zeros((1, 4)), 32, 16)
