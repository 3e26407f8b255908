"""Region similarities of selective search (Uijlings et al. 2013, sec. 3.2).

All four measures lie in ``[0, 1]`` and are vectorised over a batch of region pairs:

* colour / texture: histogram intersection ``sum_k min(a_k, b_k)`` of L1-normalised
  histograms;
* size: ``1 - (size_a + size_b) / size_image`` (small regions merge early);
* fill: ``1 - (area(BB_ab) - size_a - size_b) / size_image``, ``BB_ab`` the tight box around
  both regions (regions that fill each other's gaps merge early).

A strategy uses the sum of a subset of them (the paper's ``a_i in {0, 1}``).
"""

from __future__ import annotations

import numpy as np

SIMILARITIES = ("colour", "texture", "size", "fill")


def check_similarities(names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` as a tuple after checking it is a non-empty subset of :data:`SIMILARITIES`."""
    names = tuple(names)
    unknown = [n for n in names if n not in SIMILARITIES]
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(
            f"similarities must be distinct names from {list(SIMILARITIES)}, got {list(names)}"
        )
    return names


def histogram_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``sum_k min(a_k, b_k)`` over the last axis: ``(..., D), (..., D) -> (...)``.

    For L1-normalised histograms the result is in ``[0, 1]`` (1 for identical histograms).
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim < 1 or a.shape[-1] != b.shape[-1]:
        raise ValueError(f"histograms must be (..., D) with equal D, got {a.shape} and {b.shape}")
    return np.minimum(a, b).sum(axis=-1)


def size_similarity(size_a: np.ndarray, size_b: np.ndarray, image_size: float) -> np.ndarray:
    """``1 - (size_a + size_b) / image_size`` elementwise (sizes in pixels), shape ``(...)``."""
    return 1.0 - (np.asarray(size_a, np.float64) + np.asarray(size_b, np.float64)) / image_size


def bounding_union(box_a: np.ndarray, box_b: np.ndarray) -> np.ndarray:
    """Tight ``(..., 4)`` xyxy box around ``(..., 4)`` xyxy boxes ``box_a`` and ``box_b``."""
    box_a, box_b = np.asarray(box_a), np.asarray(box_b)
    if box_a.shape[-1] != 4 or box_b.shape[-1] != 4:
        raise ValueError(f"boxes must be (..., 4) xyxy, got {box_a.shape} and {box_b.shape}")
    return np.concatenate(
        [np.minimum(box_a[..., :2], box_b[..., :2]), np.maximum(box_a[..., 2:], box_b[..., 2:])],
        axis=-1,
    )


def fill_similarity(
    box_a: np.ndarray,
    box_b: np.ndarray,
    size_a: np.ndarray,
    size_b: np.ndarray,
    image_size: float,
) -> np.ndarray:
    """``1 - (area(BB_ab) - size_a - size_b) / image_size``, shape ``(...)``.

    Args:
      box_a, box_b: ``(..., 4)`` xyxy pixel boxes of the two regions.
      size_a, size_b: ``(...)`` region sizes in pixels.
      image_size: ``H * W``.
    """
    union = bounding_union(box_a, box_b).astype(np.float64)
    area = (union[..., 2] - union[..., 0]) * (union[..., 3] - union[..., 1])
    sizes = np.asarray(size_a, np.float64) + np.asarray(size_b, np.float64)
    return 1.0 - (area - sizes) / image_size


def combined_similarity(
    names: tuple[str, ...],
    image_size: float,
    *,
    colour: tuple[np.ndarray, np.ndarray] | None = None,
    texture: tuple[np.ndarray, np.ndarray] | None = None,
    sizes: tuple[np.ndarray, np.ndarray],
    boxes: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """Sum of the similarities ``names`` between regions ``a`` and ``b``, shape ``(...)``.

    Args:
      names: subset of :data:`SIMILARITIES`.
      image_size: ``H * W``.
      colour, texture: pairs of ``(..., D)`` histograms (needed when named).
      sizes: pair of ``(...)`` region sizes in pixels.
      boxes: pair of ``(..., 4)`` xyxy region boxes.
    """
    total = np.zeros(np.broadcast_shapes(np.shape(sizes[0]), np.shape(sizes[1])))
    for name in check_similarities(names):
        if name == "colour":
            total = total + histogram_intersection(*colour)
        elif name == "texture":
            total = total + histogram_intersection(*texture)
        elif name == "size":
            total = total + size_similarity(*sizes, image_size)
        else:
            total = total + fill_similarity(*boxes, *sizes, image_size)
    return total
