"""selective_search end to end on small synthetic images with known objects."""

import numpy as np
import pytest

from jaxcv.proposals import MODES, Strategy, selective_search
from jaxcv.proposals.selective_search import rank_and_deduplicate


def _iou(a, b):
    """Float64 NumPy pairwise IoU of (N, 4) and (M, 4) xyxy boxes."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])
    return inter / (area(a)[:, None] + area(b)[None] - inter)


# Two flat rectangles on a flat background; boxes in the pixel-edge convention.
OBJECTS = np.array([[8, 10, 28, 30], [30, 35, 60, 55]], np.float64)


def _two_rectangles(size=64):
    image = np.full((size, size, 3), (200, 200, 190), np.uint8)
    image[10:30, 8:28] = (220, 30, 30)
    image[35:55, 30:60] = (30, 40, 210)
    return image


@pytest.fixture(scope="module")
def fast_boxes():
    return selective_search(_two_rectangles(), "fast")


def test_finds_both_objects(fast_boxes):
    best = _iou(OBJECTS, fast_boxes).max(axis=1)
    assert np.all(best > 0.9), best


def test_quality_mode_finds_objects_on_textured_background():
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(120, 12, (40, 40, 3)), 0, 255).astype(np.uint8)
    image[5:17, 4:20] = (240, 220, 20)
    image[22:36, 25:37] = (20, 200, 60)
    boxes = selective_search(image, "quality", max_proposals=300)
    best = _iou([[4, 5, 20, 17], [25, 22, 37, 36]], boxes).max(axis=1)
    assert np.all(best > 0.9), best
    assert len(boxes) <= 300


def test_shapes_dtype_bounds_and_uniqueness(fast_boxes):
    h, w = 64, 64
    assert fast_boxes.dtype == np.float32 and fast_boxes.ndim == 2 and fast_boxes.shape[1] == 4
    assert len(fast_boxes) > 2
    x1, y1, x2, y2 = fast_boxes.T
    assert np.all((x1 >= 0) & (y1 >= 0) & (x2 <= w) & (y2 <= h))
    assert np.all((x2 > x1) & (y2 > y1))
    assert np.all(fast_boxes == np.round(fast_boxes))  # region boxes on pixel edges
    assert len(np.unique(fast_boxes, axis=0)) == len(fast_boxes)
    assert [0, 0, w, h] in fast_boxes.tolist()  # the top of every hierarchy


def test_deterministic_and_seed_only_reorders(fast_boxes):
    image = _two_rectangles()
    np.testing.assert_array_equal(selective_search(image, "fast"), fast_boxes)
    # float input in [0, 1] is the same image
    np.testing.assert_array_equal(selective_search(image / 255.0, "fast"), fast_boxes)
    other = selective_search(image, "fast", seed=1)
    assert not np.array_equal(other, fast_boxes)
    assert sorted(map(tuple, other.tolist())) == sorted(map(tuple, fast_boxes.tolist()))


def test_max_proposals_keeps_the_best_ranked(fast_boxes):
    top = selective_search(_two_rectangles(), "fast", max_proposals=5)
    np.testing.assert_array_equal(top, fast_boxes[:5])


def test_flat_image_gives_the_whole_image():
    boxes = selective_search(np.full((12, 20, 3), 77, np.uint8), "fast")
    np.testing.assert_array_equal(boxes, [[0, 0, 20, 12]])


def test_custom_strategies():
    strategy = (Strategy("rgb", 50, ("colour", "fill")),)
    boxes = selective_search(_two_rectangles(), strategy)
    assert np.all(_iou(OBJECTS, boxes).max(axis=1) > 0.9)
    with pytest.raises(ValueError, match="xyz"):
        Strategy("xyz", 50, ("fill",))


def test_modes_follow_the_paper():
    fast, quality = MODES["fast"], MODES["quality"]
    assert len(fast) == 8 and len(quality) == 80
    assert {s.colour_space for s in fast} == {"hsv", "lab"}
    assert {s.k for s in quality} == {50, 100, 150, 300}
    assert {s.colour_space for s in quality} == {"hsv", "lab", "rgi", "h", "i"}
    assert {s.similarities for s in quality} == {
        ("colour", "texture", "size", "fill"),
        ("texture", "size", "fill"),
        ("fill",),
        ("size",),
    }


def test_rank_and_deduplicate_matches_reference():
    h1 = np.array([[0, 0, 1, 1], [2, 2, 3, 3], [0, 0, 5, 5]])
    h2 = np.array([[2, 2, 3, 3], [4, 4, 6, 6], [1, 1, 2, 2], [0, 0, 5, 5]])
    got = rank_and_deduplicate([h1, h2], 7)
    # reference: priority u * position (position 1 = last row); keep each box's best copy
    rng = np.random.default_rng(7)
    best = {}
    for h in (h1, h2):
        prio = rng.random(len(h)) * np.arange(len(h), 0, -1)
        for box, p in zip(map(tuple, h.tolist()), prio, strict=True):
            best[box] = min(best.get(box, np.inf), p)
    want = sorted(best, key=best.get)
    assert [tuple(b) for b in got.tolist()] == want
    assert len(got) == 5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image": np.zeros((8, 8), np.uint8)}, r"\(8, 8\)"),
        ({"mode": "slow"}, "slow"),
        ({"max_proposals": 0}, "max_proposals"),
        ({"min_size": 0}, "min_size"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    args = {"image": np.zeros((8, 8, 3), np.uint8), **kwargs}
    with pytest.raises(ValueError, match=match):
        selective_search(**args)
