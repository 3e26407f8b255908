"""Hierarchical grouping of selective search (Uijlings et al. 2013, algorithm 1).

Starting from an initial segmentation, the two most similar neighbouring regions are merged
until one region covers the image. Merging is incremental: a neighbour graph (one set per
region) and a max-heap of similarities with lazy deletion (entries of merged regions are
skipped when popped); the merged region's histograms are the size-weighted average of its
parts, its box the union, and only its similarities to its neighbours are computed. Each
merge costs ``O(deg * D)``, never a recomputation over all pairs.
"""

from __future__ import annotations

import dataclasses
import heapq

import numpy as np

from jaxcv.proposals.similarity import check_similarities, combined_similarity


@dataclasses.dataclass(frozen=True)
class InitialRegions:
    """Descriptors of the ``R`` regions of an initial segmentation.

    Attributes:
      sizes: ``(R,)`` pixel counts.
      boxes: ``(R, 4)`` int64 xyxy pixel-edge boxes.
      colour: ``(R, Dc)`` L1-normalised colour histograms.
      texture: ``(R, Dt)`` L1-normalised texture histograms.
      pairs: ``(E, 2)`` int64 adjacent region pairs ``a < b``.
      image_size: ``H * W``.
    """

    sizes: np.ndarray
    boxes: np.ndarray
    colour: np.ndarray
    texture: np.ndarray
    pairs: np.ndarray
    image_size: int

    def __post_init__(self):
        r = self.sizes.shape[0]
        shapes = {
            "sizes": (self.sizes.shape, (r,)),
            "boxes": (self.boxes.shape, (r, 4)),
            "colour": (self.colour.shape[:1], (r,)),
            "texture": (self.texture.shape[:1], (r,)),
        }
        for name, (got, want) in shapes.items():
            if tuple(got) != want:
                raise ValueError(f"{name} must have leading shape {want}, got {got}")
        if self.pairs.ndim != 2 or self.pairs.shape[1] != 2:
            raise ValueError(f"pairs must be (E, 2), got shape {self.pairs.shape}")


def hierarchical_grouping(regions: InitialRegions, similarities: tuple[str, ...]) -> np.ndarray:
    """Boxes ``(T, 4)`` int64 xyxy of every region of the hierarchy, in creation order.

    Rows ``0..R-1`` are the initial regions, row ``R + m`` the region created by merge ``m``;
    for a connected segmentation ``T = 2R - 1`` and the last row is the whole image. Ties in
    similarity are broken by the smaller region ids, so the result is deterministic.

    Args:
      regions: the initial segmentation's descriptors.
      similarities: names from :data:`jaxcv.proposals.similarity.SIMILARITIES` to sum.
    """
    names = check_similarities(similarities)
    r = regions.sizes.shape[0]
    capacity = max(2 * r - 1, 1)
    sizes = np.zeros(capacity, np.float64)
    boxes = np.zeros((capacity, 4), np.int64)
    sizes[:r], boxes[:r] = regions.sizes, regions.boxes
    use_colour, use_texture = "colour" in names, "texture" in names
    colour = np.zeros((capacity, regions.colour.shape[1])) if use_colour else None
    texture = np.zeros((capacity, regions.texture.shape[1])) if use_texture else None
    if use_colour:
        colour[:r] = regions.colour
    if use_texture:
        texture[:r] = regions.texture

    def similarity(a, b: np.ndarray) -> np.ndarray:
        return combined_similarity(
            names,
            regions.image_size,
            colour=(colour[a], colour[b]) if use_colour else None,
            texture=(texture[a], texture[b]) if use_texture else None,
            sizes=(sizes[a], sizes[b]),
            boxes=(boxes[a], boxes[b]),
        )

    neighbours: list[set[int]] = [set() for _ in range(capacity)]
    for a, b in regions.pairs.tolist():
        neighbours[a].add(b)
        neighbours[b].add(a)
    a_ids, b_ids = regions.pairs[:, 0], regions.pairs[:, 1]
    initial = similarity(a_ids, b_ids) if len(a_ids) else np.zeros(0)
    heap = list(zip((-initial).tolist(), a_ids.tolist(), b_ids.tolist(), strict=True))
    heapq.heapify(heap)
    alive = np.zeros(capacity, bool)
    alive[:r] = True
    new = r
    while heap:
        _, a, b = heapq.heappop(heap)
        if not (alive[a] and alive[b]):
            continue  # a stale entry: one of the two was merged already
        sa, sb = sizes[a], sizes[b]
        sizes[new] = sa + sb
        boxes[new, :2] = np.minimum(boxes[a, :2], boxes[b, :2])
        boxes[new, 2:] = np.maximum(boxes[a, 2:], boxes[b, 2:])
        if use_colour:
            colour[new] = (sa * colour[a] + sb * colour[b]) / (sa + sb)
        if use_texture:
            texture[new] = (sa * texture[a] + sb * texture[b]) / (sa + sb)
        alive[a] = alive[b] = False
        alive[new] = True
        around = (neighbours[a] | neighbours[b]) - {a, b}
        neighbours[a] = neighbours[b] = set()
        for n in around:
            neighbours[n].discard(a)
            neighbours[n].discard(b)
            neighbours[n].add(new)
        neighbours[new] = around
        if around:
            others = np.fromiter(sorted(around), np.int64, len(around))
            sims = similarity(np.full(len(others), new), others)
            for s, n in zip((-sims).tolist(), others.tolist(), strict=True):
                heapq.heappush(heap, (s, n, new))  # n < new always
        new += 1
    return boxes[:new]
