"""Hierarchical grouping of selective search (Uijlings et al. 2013, algorithm 1).

Starting from an initial segmentation, the two most similar neighbouring regions are merged
until one region covers the image. Merging is incremental: a neighbour graph (one list per
region) and a max-heap of similarities with lazy deletion (entries of merged regions are
skipped when popped); the merged region's histograms are the size-weighted average of its
parts, its box the union, and only its similarities to its neighbours are computed. Each
merge costs ``O(deg * D)``, never a recomputation over all pairs. The loop is compiled
(:func:`jaxcv.proposals._compiled.hierarchical_grouping`, numba); its similarities are
bit-identical to :func:`jaxcv.proposals.similarity.combined_similarity`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxcv.proposals.similarity import check_similarities

# Codes of jaxcv.proposals._compiled (COLOUR, TEXTURE, SIZE, FILL), kept here so that importing
# this module does not load numba.
_TERMS = {"colour": 0, "texture": 1, "size": 2, "fill": 3}


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
    from jaxcv.proposals import _compiled

    names = check_similarities(similarities)
    r = regions.sizes.shape[0]
    pairs = np.ascontiguousarray(regions.pairs, np.int64).reshape(-1, 2)
    if len(pairs) and (pairs.min() < 0 or pairs.max() >= r or np.any(pairs[:, 0] == pairs[:, 1])):
        raise ValueError(f"pairs must be distinct region ids in 0..{r - 1}")

    def histograms(name: str, values: np.ndarray) -> np.ndarray:
        if name not in names:
            return np.zeros((r, 0))  # unused: no copies, no merging
        return np.ascontiguousarray(values, np.float64)

    return _compiled.hierarchical_grouping(
        np.ascontiguousarray(regions.sizes, np.float64),
        np.ascontiguousarray(regions.boxes, np.int64),
        histograms("colour", regions.colour),
        histograms("texture", regions.texture),
        pairs,
        float(regions.image_size),
        np.array([_TERMS[name] for name in names], np.int64),
    )
