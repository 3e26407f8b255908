"""The compiled selective-search pipeline against its straightforward NumPy / scikit-image oracle.

Every rewritten step must give exactly the oracle's values (``selective_search_reference``):
Felzenszwalb labels (scikit-image's), bin ids, histograms, adjacency, the merge order of
hierarchical grouping and the ranked boxes, on small random images with ties (quantised
colours), tiny images and single-region images.
"""

import numpy as np
import pytest
import selective_search_reference as ref
from skimage.segmentation import felzenszwalb as skimage_felzenszwalb

from jaxcv.proposals import MODES, Strategy, _compiled, features, selective_search
from jaxcv.proposals.felzenszwalb import edge_graph, felzenszwalb, segment_graph
from jaxcv.proposals.grouping import InitialRegions, hierarchical_grouping
from jaxcv.proposals.selective_search import initial_regions, rank_and_deduplicate

ALL_SIMILARITIES = [
    ("colour", "texture", "size", "fill"),
    ("texture", "size", "fill"),
    ("fill",),
    ("size",),
    ("colour",),
    ("fill", "texture", "colour"),  # the summation order is the order given
]


def _image(rng, h, w, c=3, levels=None):
    """Random ``(h, w, c)`` float image in [0, 1]; ``levels`` quantises it (ties everywhere)."""
    image = rng.random((h, w, c))
    if levels is not None:
        image = np.round(image * (levels - 1)) / (levels - 1)
    return image


@pytest.mark.parametrize("seed", range(6))
def test_felzenszwalb_is_scikit_images(seed):
    rng = np.random.default_rng(seed)
    for trial in range(8):
        h, w = (int(v) for v in rng.integers(1, 24, 2))
        image = _image(rng, h, w, c=(1, 3)[trial % 2], levels=(None, 3)[trial % 2 == seed % 2])
        k = float(rng.choice([1.0, 10.0, 50.0, 300.0]))
        min_size = int(rng.integers(1, 15))
        want = skimage_felzenszwalb(image, scale=k, sigma=0.8, min_size=min_size, channel_axis=-1)
        got, r = felzenszwalb(image, k, 0.8, min_size)
        np.testing.assert_array_equal(got, want, err_msg=f"{h}x{w} k={k} min_size={min_size}")
        assert r == want.max() + 1


def test_felzenszwalb_tiny_and_flat_images():
    for shape in [(1, 1, 3), (1, 7, 3), (6, 1, 1), (2, 2, 3)]:
        image = np.random.default_rng(0).random(shape)
        want = skimage_felzenszwalb(image, scale=5, sigma=0.8, min_size=1, channel_axis=-1)
        got, r = felzenszwalb(image, 5, 0.8, 1)
        np.testing.assert_array_equal(got, want)
        assert r == want.max() + 1
    labels, r = felzenszwalb(np.full((9, 11, 3), 0.4), 50, 0.8, 20)
    assert r == 1 and not labels.any()


def test_edge_graph_is_shared_across_thresholds():
    rng = np.random.default_rng(7)
    image = _image(rng, 20, 17, levels=4)
    graph = edge_graph(image, 0.8)
    # sorted ascending, and each weight is the colour distance of its two (adjacent) pixels
    assert np.all(np.diff(graph.costs) >= 0)
    assert len(graph.costs) == 20 * 16 + 19 * 17 + 2 * 19 * 16
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(image, [0.8, 0.8, 0], mode="reflect").reshape(-1, 3)
    np.testing.assert_allclose(
        graph.costs, np.linalg.norm(smooth[graph.p] - smooth[graph.q], axis=1), atol=1e-12
    )
    (row_p, col_p), (row_q, col_q) = np.divmod(graph.p, 17), np.divmod(graph.q, 17)
    assert np.all(np.maximum(abs(row_p - row_q), abs(col_p - col_q)) == 1)  # 8-neighbours
    assert len(set(zip(graph.p.tolist(), graph.q.tolist(), strict=True))) == len(graph.p)
    for k in (5, 50, 300):
        labels, _ = segment_graph(graph, k, 4)
        np.testing.assert_array_equal(labels, felzenszwalb(image, k, 0.8, 4)[0])


def test_intersection_sums_like_numpy():
    rng = np.random.default_rng(3)
    tasks, values = _compiled.new_sum_workspace()
    for n in [*range(300), 511, 1024, 1031, 5000]:
        hists = rng.random((3, n)) ** 4
        want = np.minimum(hists[2], hists[0]).sum()
        assert _compiled.intersection(hists, 2, 0, tasks, values) == want, n


@pytest.mark.parametrize("space", features.COLOUR_SPACES)
def test_bins_histograms_and_adjacency_match_reference(space):
    rng = np.random.default_rng(11)
    for h, w in [(1, 1), (1, 9), (13, 1), (17, 23)]:
        image = features.convert_colour(_image(rng, h, w, levels=5), space)
        colour, texture = features.colour_bin_ids(image), features.texture_bin_ids(image)
        want_colour, want_texture = ref.colour_bin_ids(image), ref.texture_bin_ids(image)
        np.testing.assert_array_equal(colour[0], want_colour[0])
        np.testing.assert_array_equal(texture[0], want_texture[0])
        assert (colour[1], texture[1]) == (want_colour[1], want_texture[1])
        np.testing.assert_array_equal(
            features.oriented_gradients(image), ref.oriented_gradients(image)
        )
        labels = rng.integers(0, 6, (h, w))
        for ids, want_ids in [(colour, want_colour), (texture, want_texture)]:
            np.testing.assert_array_equal(
                features.region_histograms(labels, 7, *ids),  # region 6 is empty: zeros
                ref.region_histograms(labels, 7, *want_ids),
            )
        np.testing.assert_array_equal(features.adjacent_pairs(labels), ref.adjacent_pairs(labels))


@pytest.mark.parametrize("seed", range(4))
def test_grouping_merge_order_is_the_references(seed):
    rng = np.random.default_rng(seed)
    for trial in range(4):
        h, w = (int(v) for v in rng.integers(2, 36, 2))
        image = _image(rng, h, w, levels=(None, 2, 4)[trial % 3])
        regions = initial_regions(image, float(rng.choice([5, 30, 100])), int(rng.integers(1, 6)))
        for names in ALL_SIMILARITIES:
            got = hierarchical_grouping(regions, names)
            want = ref.hierarchical_grouping(regions, names)
            np.testing.assert_array_equal(got, want, err_msg=f"{h}x{w} {names}")


def test_grouping_ties_disconnected_and_single_region():
    # four identical 2x2 squares in a 4x4 grid: every similarity ties, smaller ids win
    labels = np.repeat(np.repeat(np.array([[0, 1], [2, 3]]), 2, 0), 2, 1)
    sizes, boxes = features.region_sizes_and_boxes(labels, 4)
    hist = np.full((4, 3), 1 / 3)
    regions = InitialRegions(sizes, boxes, hist, hist, features.adjacent_pairs(labels), 16)
    for names in ALL_SIMILARITIES:
        np.testing.assert_array_equal(
            hierarchical_grouping(regions, names), ref.hierarchical_grouping(regions, names)
        )
    # pairs that leave two components: merging stops with two top regions
    disconnected = InitialRegions(sizes, boxes, hist, hist, np.array([[0, 1], [2, 3]]), 16)
    got = hierarchical_grouping(disconnected, ("size",))
    np.testing.assert_array_equal(got, ref.hierarchical_grouping(disconnected, ("size",)))
    np.testing.assert_array_equal(got[4:], [[0, 0, 4, 2], [0, 2, 4, 4]])
    single = InitialRegions(
        np.array([12]), np.array([[0, 0, 4, 3]]), hist[:1], hist[:1], np.zeros((0, 2)), 12
    )
    np.testing.assert_array_equal(
        hierarchical_grouping(single, ALL_SIMILARITIES[0]), [[0, 0, 4, 3]]
    )


def test_rank_and_deduplicate_matches_reference():
    rng = np.random.default_rng(5)
    hierarchies = [rng.integers(0, 6, (n, 4)) for n in (30, 1, 45)]
    np.testing.assert_array_equal(
        rank_and_deduplicate(hierarchies, 9), ref.rank_and_deduplicate(hierarchies, 9)
    )
    big = [np.array([[0, 0, 70000, 5], [0, 0, 70000, 5], [1, 0, 70000, 5]])]  # no int64 code
    np.testing.assert_array_equal(rank_and_deduplicate(big, 1), ref.rank_and_deduplicate(big, 1))


@pytest.mark.parametrize(
    ("shape", "strategies"),
    [
        ((40, 52), MODES["fast"]),
        ((23, 31), MODES["quality"][::7]),  # every colour space, k and similarity set
        ((1, 1), MODES["fast"]),
        ((2, 30), MODES["fast"]),
    ],
)
def test_selective_search_is_the_references(shape, strategies):
    rng = np.random.default_rng(sum(shape))
    image = (rng.random((*shape, 3)) * 255).astype(np.uint8)
    image[shape[0] // 4 : shape[0] // 2, shape[1] // 3 :] = (200, 30, 30)
    got = selective_search(image, strategies, min_size=5, seed=3)
    np.testing.assert_array_equal(got, ref.selective_search(image, strategies, 5, 3))


def test_selective_search_single_region_image():
    image = np.full((15, 9, 3), 120, np.uint8)
    strategies = (Strategy("lab", 100, ("colour", "texture", "size", "fill")),)
    np.testing.assert_array_equal(selective_search(image, strategies), [[0, 0, 9, 15]])
    np.testing.assert_array_equal(ref.selective_search(image, strategies), [[0, 0, 9, 15]])
