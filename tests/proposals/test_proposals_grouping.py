"""Hierarchical grouping against a brute-force float64 reference that recomputes everything."""

import numpy as np
import pytest

from jaxcv.proposals import features
from jaxcv.proposals.grouping import InitialRegions, hierarchical_grouping
from jaxcv.proposals.selective_search import initial_regions, segment


def test_size_only_merges_smallest_neighbours_first():
    labels = np.array([[0, 0, 0, 0, 1, 2, 2]])  # sizes 4, 1, 2 in a strip
    sizes, boxes = features.region_sizes_and_boxes(labels, 3)
    regions = InitialRegions(
        sizes=sizes,
        boxes=boxes,
        colour=np.ones((3, 1)),
        texture=np.ones((3, 1)),
        pairs=features.adjacent_pairs(labels),
        image_size=7,
    )
    got = hierarchical_grouping(regions, ("size",))
    # (1, 2): 1 - 3/7 beats (0, 1): 1 - 5/7 -> region 3 = cols 4..6; then 0 + 3 -> whole strip
    want = [[0, 0, 4, 1], [4, 0, 5, 1], [5, 0, 7, 1], [4, 0, 7, 1], [0, 0, 7, 1]]
    np.testing.assert_array_equal(got, want)


def _reference_grouping(image, labels, names):
    """O(R^2) per merge: histograms, sizes, boxes and adjacency recomputed from the pixels."""
    colour_ids, texture_ids = features.colour_bin_ids(image), features.texture_bin_ids(image)
    labels = labels.copy()
    r = labels.max() + 1
    size_im = labels.size
    _, boxes0 = features.region_sizes_and_boxes(labels, r)
    out = [tuple(b) for b in boxes0]
    next_id = r
    while True:
        ids = np.unique(labels)
        if len(ids) == 1:
            break
        dense = np.searchsorted(ids, labels)
        n = len(ids)
        col = features.region_histograms(dense, n, *colour_ids)
        tex = features.region_histograms(dense, n, *texture_ids)
        sizes, boxes = features.region_sizes_and_boxes(dense, n)
        best = None
        for a, b in features.adjacent_pairs(dense):
            s = 0.0
            if "colour" in names:
                s += np.minimum(col[a], col[b]).sum()
            if "texture" in names:
                s += np.minimum(tex[a], tex[b]).sum()
            if "size" in names:
                s += 1 - (sizes[a] + sizes[b]) / size_im
            if "fill" in names:
                x1, y1 = np.minimum(boxes[a, :2], boxes[b, :2])
                x2, y2 = np.maximum(boxes[a, 2:], boxes[b, 2:])
                s += 1 - ((x2 - x1) * (y2 - y1) - sizes[a] - sizes[b]) / size_im
            key = (-s, ids[a], ids[b])
            if best is None or key < best:
                best = key
        _, ia, ib = best
        merged = (labels == ia) | (labels == ib)
        labels[merged] = next_id
        rows, cols = np.nonzero(merged)
        out.append((cols.min(), rows.min(), cols.max() + 1, rows.max() + 1))
        next_id += 1
    return np.array(out)


@pytest.mark.parametrize(
    "names", [("colour", "texture", "size", "fill"), ("texture", "size", "fill"), ("fill",)]
)
def test_matches_bruteforce_reference(names):
    rng = np.random.default_rng(4)
    image = rng.random((16, 16, 3))
    image[4:10, 3:12] = [0.9, 0.1, 0.1]
    labels, r = segment(image, k=30, min_size=3)
    assert 5 < r < 60
    regions = initial_regions(image, 30, 3)
    got = hierarchical_grouping(regions, names)
    assert got.shape == (2 * r - 1, 4)
    np.testing.assert_array_equal(got, _reference_grouping(image, labels, names))
    np.testing.assert_array_equal(got[-1], [0, 0, 16, 16])


def test_single_region_and_bad_inputs():
    labels = np.zeros((3, 5), np.int64)
    sizes, boxes = features.region_sizes_and_boxes(labels, 1)
    regions = InitialRegions(sizes, boxes, np.ones((1, 2)), np.ones((1, 2)), np.zeros((0, 2)), 15)
    np.testing.assert_array_equal(hierarchical_grouping(regions, ("size",)), [[0, 0, 5, 3]])
    with pytest.raises(ValueError, match="colur"):
        hierarchical_grouping(regions, ("colur",))
    with pytest.raises(ValueError, match=r"boxes must have leading shape \(1, 4\), got \(1, 3\)"):
        InitialRegions(sizes, boxes[:, :3], np.ones((1, 2)), np.ones((1, 2)), np.zeros((0, 2)), 15)
