"""Colour spaces, region histograms and similarities against hand-computed / float64 NumPy."""

import numpy as np
import pytest
from scipy import ndimage

from jaxcv.proposals import features, similarity


def test_histogram_intersection_hand_values():
    a = np.array([0.5, 0.5, 0.0])
    b = np.array([0.2, 0.3, 0.5])
    assert similarity.histogram_intersection(a, b) == pytest.approx(0.5)
    assert similarity.histogram_intersection(a, a) == pytest.approx(1.0)
    batch = similarity.histogram_intersection(np.stack([a, b]), np.stack([b, b]))
    np.testing.assert_allclose(batch, [0.5, 1.0])
    with pytest.raises(ValueError, match=r"\(3,\) and \(2,\)"):
        similarity.histogram_intersection(a, b[:2])


def test_size_and_fill_similarity_hand_values():
    assert similarity.size_similarity(10, 30, 100) == pytest.approx(0.6)
    # boxes [0,0,2,2] and [3,3,5,5], 4 pixels each: union box 5x5 = 25 -> 1 - (25 - 8) / 100
    fill = similarity.fill_similarity([0, 0, 2, 2], [3, 3, 5, 5], 4, 4, 100)
    assert fill == pytest.approx(0.83)
    # one region filling the other's box exactly: nothing wasted
    assert similarity.fill_similarity([0, 0, 4, 2], [0, 0, 2, 2], 4, 4, 100) == pytest.approx(1.0)
    np.testing.assert_array_equal(
        similarity.bounding_union([[1, 5, 3, 9]], [[2, 0, 8, 6]]), [[1, 0, 8, 9]]
    )


def test_combined_similarity_is_sum_of_selected():
    rng = np.random.default_rng(0)
    ca, cb = features.l1_normalise(rng.random((2, 5, 75)))
    ta, tb = features.l1_normalise(rng.random((2, 5, 240)))
    sa, sb = rng.integers(1, 50, (2, 5))
    ba = np.array([[0, 0, 4, 4]] * 5)
    bb = np.array([[2, 1, 9, 6]] * 5)
    kwargs = dict(colour=(ca, cb), texture=(ta, tb), sizes=(sa, sb), boxes=(ba, bb))
    parts = {
        "colour": np.minimum(ca, cb).sum(-1),
        "texture": np.minimum(ta, tb).sum(-1),
        "size": 1 - (sa + sb) / 400.0,
        "fill": 1 - (9 * 6 - sa - sb) / 400.0,
    }
    for names in [("colour", "texture", "size", "fill"), ("texture", "size", "fill"), ("fill",)]:
        got = similarity.combined_similarity(names, 400.0, **kwargs)
        np.testing.assert_allclose(got, sum(parts[n] for n in names), rtol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        similarity.combined_similarity(("shape",), 400.0, **kwargs)


def _reference_histograms(values, labels, r, bins, upper):
    """Float64 NumPy reference: per region, per channel np.histogram over [0, upper_c]."""
    out = []
    for region in range(r):
        sel = values[labels.reshape(-1) == region]
        hists = [
            np.histogram(sel[:, c], bins=bins, range=(0.0, upper[c]))[0]
            for c in range(values.shape[1])
        ]
        h = np.concatenate(hists).astype(np.float64)
        out.append(h / h.sum())
    return np.stack(out)


def test_colour_histograms_match_numpy_histogram():
    rng = np.random.default_rng(1)
    image = rng.random((12, 10, 3))
    labels = rng.integers(0, 4, (12, 10))
    got = features.colour_histograms(image, labels, 4)
    want = _reference_histograms(image.reshape(-1, 3), labels, 4, 25, [1.0] * 3)
    assert got.shape == (4, 75)
    np.testing.assert_allclose(got, want, atol=1e-12)
    np.testing.assert_allclose(got.sum(-1), 1.0)


def test_texture_histograms_match_reference():
    rng = np.random.default_rng(2)
    image = ndimage.gaussian_filter(rng.random((14, 11, 2)), (1.5, 1.5, 0))
    labels = rng.integers(0, 3, (14, 11))
    responses = []
    for c in range(2):
        dy = ndimage.gaussian_filter(image[..., c], 1.0, order=(1, 0), mode="nearest")
        dx = ndimage.gaussian_filter(image[..., c], 1.0, order=(0, 1), mode="nearest")
        responses.append(
            [np.maximum(np.cos(t) * dx + np.sin(t) * dy, 0) for t in np.arange(8) * np.pi / 4]
        )
    responses = np.asarray(responses)  # (C, 8, H, W)
    values = responses.reshape(16, -1).T  # (P, C*8), channel-major like the library
    upper = np.repeat(responses.reshape(2, -1).max(1), 8)
    want = _reference_histograms(values, labels, 3, 10, upper)
    got = features.texture_histograms(image, labels, 3)
    assert got.shape == (3, 160)
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_oriented_gradients_of_a_ramp():
    xx = np.tile(np.arange(20, dtype=np.float64), (20, 1)) * 0.01  # d/dx = 0.01, d/dy = 0
    grads = features.oriented_gradients(xx[..., None])
    assert grads.shape == (20, 20, 1, 8)
    inner = grads[5:-5, 5:-5, 0]
    want = np.maximum(np.cos(np.arange(8) * np.pi / 4) * 0.01, 0)
    # the truncated, sampled Gaussian derivative kernel is exact to about 1e-4 relative
    np.testing.assert_allclose(inner, np.broadcast_to(want, inner.shape), atol=1e-5)


def test_colour_spaces_ranges_and_values():
    rgb = np.array([[[0.2, 0.4, 0.2], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]])
    rgi = features.convert_colour(rgb, "rgi")
    np.testing.assert_allclose(rgi[0, 0], [0.25, 0.5, 0.8 / 3])
    np.testing.assert_allclose(rgi[0, 1], [1 / 3, 1 / 3, 0.0])
    np.testing.assert_allclose(features.convert_colour(rgb, "i")[..., 0], [[0.8 / 3, 0, 1]])
    lab = features.convert_colour(rgb, "lab")
    np.testing.assert_allclose(lab[0, 2], [1.0, 128 / 255, 128 / 255], atol=1e-3)
    for space in features.COLOUR_SPACES:
        out = features.convert_colour(np.random.default_rng(3).random((5, 6, 3)), space)
        assert out.shape == (5, 6, 1 if space in ("h", "i") else 3)
        assert out.min() >= 0.0 and out.max() <= 1.0
    with pytest.raises(ValueError, match="xyz"):
        features.convert_colour(rgb, "xyz")


def test_sizes_boxes_and_adjacency_pixel_edges():
    labels = np.zeros((6, 30), np.int64)
    labels[1:4, 10:20] = 1  # columns 10..19, rows 1..3
    labels[5, 29] = 2
    sizes, boxes = features.region_sizes_and_boxes(labels, 3)
    np.testing.assert_array_equal(sizes, [180 - 30 - 1, 30, 1])
    np.testing.assert_array_equal(boxes[1], [10, 1, 20, 4])
    np.testing.assert_array_equal(boxes[2], [29, 5, 30, 6])
    np.testing.assert_array_equal(boxes[0], [0, 0, 30, 6])
    np.testing.assert_array_equal(features.adjacent_pairs(labels), [[0, 1], [0, 2]])
    # diagonal contact only is not adjacency (4-connectivity)
    np.testing.assert_array_equal(features.adjacent_pairs(np.array([[0, 1], [1, 0]])), [[0, 1]])
    assert features.adjacent_pairs(np.zeros((3, 3), np.int64)).shape == (0, 2)


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((4, 4), np.uint8), r"\(4, 4\)"),
        (np.zeros((4, 4, 4), np.uint8), r"\(4, 4, 4\)"),
        (np.full((4, 4, 3), 2.0), r"\[0, 1\]"),
        (np.full((4, 4, 3), np.nan), r"\[0, 1\]"),
        (np.zeros((4, 4, 3), np.int32), "int32"),
        (np.zeros((0, 4, 3), np.uint8), "non-empty"),
    ],
)
def test_as_float_rgb_rejects_bad_images(image, match):
    with pytest.raises(ValueError, match=match):
        features.as_float_rgb(image)


def test_as_float_rgb_scales_uint8():
    image = np.array([[[0, 51, 255]]], np.uint8)
    np.testing.assert_allclose(features.as_float_rgb(image), [[[0.0, 0.2, 1.0]]])
