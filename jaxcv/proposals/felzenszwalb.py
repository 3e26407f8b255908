"""Felzenszwalb and Huttenlocher's graph segmentation, the edge sort shared across thresholds.

The same algorithm and the same labels as ``skimage.segmentation.felzenszwalb`` (tested
against it): Gaussian pre-smoothing (``sigma``, reflect borders), 8-connected grid edges
weighted by the Euclidean colour distance, edges taken in ``np.argsort`` order of their
weights, a merge when the weight is below ``min(Int(C) + k / |C|)`` of both components
(thresholds rounded to float32), then neighbours of segments under ``min_size`` pixels
absorbed in the same edge order; segments numbered by their first pixel, row-major.

Selective search segments every colour space at several ``k``: smoothing, edge weights and
their sort (most of the time) depend on the image only, so :func:`edge_graph` computes them
once and :func:`segment_graph` runs the union-find pass (compiled, :mod:`._compiled`) per ``k``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage


@dataclasses.dataclass(frozen=True)
class EdgeGraph:
    """Grid edges of one smoothed image sorted by weight.

    Attributes:
      p, q: ``(E,)`` int64 flat pixel ids of each edge's ends.
      costs: ``(E,)`` float64 weights, ascending.
      shape: ``(H, W)``.
    """

    p: np.ndarray
    q: np.ndarray
    costs: np.ndarray
    shape: tuple[int, int]


def _distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum((a - b) * (a - b), axis=-1))


def edge_graph(image: np.ndarray, sigma: float) -> EdgeGraph:
    """Smooth ``(H, W, C)`` float ``image`` and sort its 8-connected edges by colour distance."""
    from jaxcv.proposals import _compiled

    image = np.atleast_3d(np.asarray(image, np.float64))
    image = ndimage.gaussian_filter(image, [sigma, sigma, 0], mode="reflect", truncate=4.0)
    h, w = image.shape[:2]
    if h * w >= 2**31:
        raise ValueError(f"image too large for int32 pixel ids: {h}x{w}")
    costs = np.hstack(
        [
            _distance(image[:, 1:], image[:, : w - 1]).ravel(),  # right
            _distance(image[1:], image[: h - 1]).ravel(),  # down
            _distance(image[1:, 1:], image[: h - 1, : w - 1]).ravel(),  # down-right
            _distance(image[1:, : w - 1], image[: h - 1, 1:]).ravel(),  # up-right
        ]
    )
    order = np.argsort(costs)  # scikit-image's order, ties included
    p, q = _compiled.sorted_edge_endpoints(order, h, w)
    return EdgeGraph(p=p, q=q, costs=costs[order], shape=(h, w))


def segment_graph(graph: EdgeGraph, k: float, min_size: int) -> tuple[np.ndarray, int]:
    """Labels ``(H, W)`` int64 in ``0..R-1`` and ``R`` for threshold ``k`` (0..255 units)."""
    from jaxcv.proposals import _compiled

    h, w = graph.shape
    labels, r = _compiled.felzenszwalb_labels(
        graph.p, graph.q, graph.costs, h * w, float(k) / 255.0, int(min_size)
    )
    return labels.reshape(h, w), int(r)


def felzenszwalb(
    image: np.ndarray, k: float, sigma: float = 0.8, min_size: int = 20
) -> tuple[np.ndarray, int]:
    """One segmentation: ``skimage.segmentation.felzenszwalb(image, k, sigma, min_size)``."""
    return segment_graph(edge_graph(image, sigma), k, min_size)
