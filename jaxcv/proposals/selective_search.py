"""Selective search object proposals (Uijlings, van de Sande, Gevers, Smeulders, IJCV 2013).

For each *strategy* (colour space x Felzenszwalb threshold ``k`` x similarity combination) an
image is over-segmented with Felzenszwalb and Huttenlocher's graph-based method
(``skimage.segmentation.felzenszwalb``'s labels, ``sigma = 0.8``, computed by
:mod:`jaxcv.proposals.felzenszwalb` with one edge sort per colour space) and the regions are
grouped hierarchically (:mod:`jaxcv.proposals.grouping`); every region of every hierarchy is a box.
Boxes are ranked as in the paper: within a strategy the region at hierarchy position ``p``
(``p = 1`` for the last merge, the whole image; larger for earlier regions) gets the priority
``u * p`` with ``u ~ U(0, 1)`` from a seeded generator; all strategies' boxes are sorted by
priority (lowest first) and duplicates are dropped, keeping the best-ranked copy.

Modes (the paper's sec. 5.2):

* ``"fast"``: colour spaces HSV, Lab; ``k in {50, 100}``; similarities C+T+S+F and T+S+F
  (8 strategies, 4 segmentations).
* ``"quality"``: HSV, Lab, rgI, H, I; ``k in {50, 100, 150, 300}``; C+T+S+F, T+S+F, F, S
  (80 strategies, 20 segmentations).

This is host-side NumPy with numba kernels (R-CNN's external proposals), not a jit-able op.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxcv.proposals import features, felzenszwalb
from jaxcv.proposals.grouping import InitialRegions, hierarchical_grouping
from jaxcv.proposals.similarity import check_similarities

#: Felzenszwalb's Gaussian pre-smoothing, as in the paper.
FELZENSZWALB_SIGMA = 0.8
#: Default smallest initial segment (pixels). The reference code uses ``min_size = k``, which
#: erases objects smaller than ``k`` pixels; a fixed small size keeps them on small images.
DEFAULT_MIN_SIZE = 20

_CTSF = ("colour", "texture", "size", "fill")
_TSF = ("texture", "size", "fill")


@dataclasses.dataclass(frozen=True)
class Strategy:
    """One diversification strategy: colour space, threshold ``k`` and similarities summed."""

    colour_space: str
    k: float
    similarities: tuple[str, ...]

    def __post_init__(self):
        if self.colour_space not in features.COLOUR_SPACES:
            raise ValueError(
                f"unknown colour space {self.colour_space!r}; valid: {list(features.COLOUR_SPACES)}"
            )
        if not self.k > 0:
            raise ValueError(f"k must be positive, got {self.k}")
        object.__setattr__(self, "similarities", check_similarities(self.similarities))


def _grid(spaces, ks, combos) -> tuple[Strategy, ...]:
    return tuple(Strategy(s, float(k), c) for s in spaces for k in ks for c in combos)


MODES: dict[str, tuple[Strategy, ...]] = {
    "fast": _grid(("hsv", "lab"), (50, 100), (_CTSF, _TSF)),
    "quality": _grid(
        ("hsv", "lab", "rgi", "h", "i"), (50, 100, 150, 300), (_CTSF, _TSF, ("fill",), ("size",))
    ),
}


def _strategies(mode: str | tuple[Strategy, ...]) -> tuple[Strategy, ...]:
    if isinstance(mode, str):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; valid: {list(MODES)}")
        return MODES[mode]
    strategies = tuple(mode)
    if not strategies or not all(isinstance(s, Strategy) for s in strategies):
        raise ValueError(f"mode must be one of {list(MODES)} or a non-empty tuple of Strategy")
    return strategies


def segment(
    image: np.ndarray, k: float, min_size: int, sigma: float = FELZENSZWALB_SIGMA
) -> tuple[np.ndarray, int]:
    """Felzenszwalb segmentation of ``(H, W, C)`` float ``[0, 1]``: labels ``(H, W)``, ``R``.

    Labels are consecutive ``0..R-1``. ``k`` is in the paper's 0..255 intensity units; the
    labels are ``skimage.segmentation.felzenszwalb(image, k, sigma, min_size)``'s
    (:mod:`jaxcv.proposals.felzenszwalb`).
    """
    return felzenszwalb.felzenszwalb(image, k, sigma, min_size)


def initial_regions(
    image: np.ndarray,
    k: float,
    min_size: int,
    *,
    bin_ids: tuple[tuple[np.ndarray, int], tuple[np.ndarray, int]] | None = None,
    graph: felzenszwalb.EdgeGraph | None = None,
) -> InitialRegions:
    """Segment ``(H, W, C)`` float ``[0, 1]`` ``image`` and describe its regions.

    ``bin_ids`` (the colour and texture ``(ids, width)`` of :mod:`jaxcv.proposals.features`)
    and ``graph`` (:func:`jaxcv.proposals.felzenszwalb.edge_graph` of ``image``) can be passed
    to reuse them across thresholds ``k`` of the same colour space.
    """
    if bin_ids is None:
        bin_ids = (features.colour_bin_ids(image), features.texture_bin_ids(image))
    if graph is None:
        graph = felzenszwalb.edge_graph(image, FELZENSZWALB_SIGMA)
    labels, r = felzenszwalb.segment_graph(graph, k, min_size)
    sizes, boxes = features.region_sizes_and_boxes(labels, r)
    return InitialRegions(
        sizes=sizes,
        boxes=boxes,
        colour=features.region_histograms(labels, r, *bin_ids[0]),
        texture=features.region_histograms(labels, r, *bin_ids[1]),
        pairs=features.adjacent_pairs(labels),
        image_size=labels.size,
    )


def rank_and_deduplicate(
    hierarchies: list[np.ndarray], rng: np.random.Generator | int
) -> np.ndarray:
    """Merge per-strategy hierarchies into one ranked, duplicate-free ``(N, 4)`` box array.

    Args:
      hierarchies: per strategy, ``(T_s, 4)`` boxes in creation order (last = top of the
        hierarchy).
      rng: generator (or seed) of the random factors ``u ~ U(0, 1)``.

    Returns:
      ``(N, 4)`` boxes (dtype of the inputs) sorted by priority ``u * position``; of identical
      boxes only the best-ranked copy is kept.
    """
    rng = np.random.default_rng(rng)
    if not hierarchies:
        return np.zeros((0, 4), np.int64)
    boxes = np.concatenate(hierarchies)
    priorities = np.concatenate(
        [rng.random(len(h)) * np.arange(len(h), 0, -1, dtype=np.float64) for h in hierarchies]
    )
    order = np.argsort(priorities, kind="stable")
    ranked = boxes[order]
    _, first = np.unique(_row_keys(ranked), axis=0, return_index=True)  # first occurrences
    return ranked[np.sort(first)]


def _row_keys(boxes: np.ndarray) -> np.ndarray:
    """One int64 per row, equal iff the rows are (``(N, 1)`` codes), else ``boxes`` itself."""
    if not len(boxes) or boxes.min() < 0:
        return boxes
    base = int(boxes.max()) + 1
    if base**4 >= 2**63:
        return boxes
    keys = np.zeros(len(boxes), np.int64)
    for column in range(4):
        keys = keys * base + boxes[:, column].astype(np.int64)
    return keys[:, None]


def selective_search(
    image: np.ndarray,
    mode: str | tuple[Strategy, ...] = "fast",
    max_proposals: int | None = None,
    min_size: int = DEFAULT_MIN_SIZE,
    *,
    seed: int = 0,
) -> np.ndarray:
    """Selective search proposals of one image, best-ranked first.

    Args:
      image: ``(H, W, 3)`` RGB, uint8 in 0..255 or float in ``[0, 1]``.
      mode: ``"fast"``, ``"quality"`` (see the module docstring) or a tuple of
        :class:`Strategy`.
      max_proposals: keep at most this many (the best-ranked); None keeps all.
      min_size: Felzenszwalb's smallest initial segment, in pixels.
      seed: seed of the ranking's random factors (the result is a deterministic function of
        the image and the arguments).

    Returns:
      ``(N, 4)`` float32 xyxy boxes in pixels, pixel-edge convention (a region covering
      columns 10..19 gives ``x1 = 10, x2 = 20``), so ``0 <= x1 < x2 <= W`` and
      ``0 <= y1 < y2 <= H``; no two rows are equal.

    Raises:
      ValueError: bad image shape/dtype/range, unknown mode, ``max_proposals < 1`` or
        ``min_size < 1``.
    """
    rgb = features.as_float_rgb(image)
    strategies = _strategies(mode)
    if max_proposals is not None and max_proposals < 1:
        raise ValueError(f"max_proposals must be >= 1 or None, got {max_proposals}")
    if min_size < 1:
        raise ValueError(f"min_size must be >= 1, got {min_size}")

    converted: dict[str, tuple[np.ndarray, tuple, felzenszwalb.EdgeGraph]] = {}
    segmented: dict[tuple[str, float], InitialRegions] = {}
    hierarchies = []
    for strategy in strategies:
        space, k = strategy.colour_space, strategy.k
        if space not in converted:
            if space == "h" and "hsv" in converted:  # hue = HSV's first channel
                img = converted["hsv"][0][..., :1]
            else:
                img = features.convert_colour(rgb, space)
            bin_ids = (features.colour_bin_ids(img), features.texture_bin_ids(img))
            converted[space] = (img, bin_ids, felzenszwalb.edge_graph(img, FELZENSZWALB_SIGMA))
        if (space, k) not in segmented:
            img, bin_ids, graph = converted[space]
            segmented[space, k] = initial_regions(img, k, min_size, bin_ids=bin_ids, graph=graph)
        hierarchies.append(hierarchical_grouping(segmented[space, k], strategy.similarities))
    boxes = rank_and_deduplicate(hierarchies, np.random.default_rng(seed))
    if max_proposals is not None:
        boxes = boxes[:max_proposals]
    return boxes.astype(np.float32)
