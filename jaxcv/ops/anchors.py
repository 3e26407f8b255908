"""Anchor grids from static shapes (the Faster R-CNN RPN's reference boxes).

The grid depends only on the feature-map shape, the stride and the anchor settings, which are
all static under ``jit``; it is therefore computed once on the host in float32 NumPy, with the
very operations torchvision's ``AnchorGenerator`` uses (same rounding of the base anchors, same
ordering), and handed to jax as a constant.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, int | np.integer):
        return int(value), int(value)
    pair = tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int | np.integer) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints (h, w), got {value!r}")
    return int(pair[0]), int(pair[1])


def base_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> np.ndarray:
    """Zero-centred ``(A, 4)`` ``xyxy`` anchors, ``A = len(aspect_ratios) * len(sizes)``.

    For each aspect ratio ``r = h / w`` (outer loop) and each size ``s`` (inner loop) the anchor
    has width ``s / sqrt(r)`` and height ``s * sqrt(r)``; the corners are rounded to integers
    (half to even), exactly as torchvision's ``AnchorGenerator.generate_anchors`` in float32.
    """
    if len(sizes) == 0 or len(aspect_ratios) == 0:
        raise ValueError(
            f"sizes and aspect_ratios must be non-empty, got {sizes!r} and {aspect_ratios!r}"
        )
    if any(s <= 0 for s in sizes) or any(r <= 0 for r in aspect_ratios):
        raise ValueError(
            f"sizes and aspect_ratios must be positive, got {sizes!r} and {aspect_ratios!r}"
        )
    scales = np.asarray(sizes, dtype=np.float32)
    ratios = np.asarray(aspect_ratios, dtype=np.float32)
    h_ratios = np.sqrt(ratios)
    w_ratios = np.float32(1) / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    anchors = np.stack([-ws, -hs, ws, hs], axis=1) / np.float32(2)
    return np.round(anchors).astype(np.float32)


def make_anchors_numpy(
    feature_shape: Sequence[int],
    stride: int | Sequence[int],
    sizes: Sequence[float] = (128, 256, 512),
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
) -> np.ndarray:
    """NumPy version of :func:`make_anchors` (float32 ``(h * w * A, 4)``), for host-side use."""
    grid_h, grid_w = _pair(tuple(feature_shape), "feature_shape")
    if grid_h < 0 or grid_w < 0:
        raise ValueError(f"feature_shape must be non-negative, got {tuple(feature_shape)}")
    stride_h, stride_w = _pair(stride, "stride")
    if stride_h <= 0 or stride_w <= 0:
        raise ValueError(f"stride must be positive, got {stride!r}")
    cell = base_anchors(sizes, aspect_ratios)
    shifts_x = np.arange(grid_w, dtype=np.int32) * stride_w
    shifts_y = np.arange(grid_h, dtype=np.int32) * stride_h
    shift_y, shift_x = np.meshgrid(shifts_y, shifts_x, indexing="ij")
    shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
    shifts = np.stack([shift_x, shift_y, shift_x, shift_y], axis=1).astype(np.float32)
    return (shifts[:, None, :] + cell[None, :, :]).reshape(-1, 4)


def make_anchors(
    feature_shape: Sequence[int],
    stride: int | Sequence[int],
    sizes: Sequence[float] = (128, 256, 512),
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
) -> Array:
    """Anchor grid over a feature map, equal to torchvision's ``AnchorGenerator``.

    Args:
      feature_shape: static ``(h, w)`` of the feature map.
      stride: static stride in input pixels, an int or ``(stride_h, stride_w)``. torchvision
        uses ``image_size // feature_size`` per axis.
      sizes: anchor sizes in pixels (sqrt of the area), e.g. ``(128, 256, 512)``.
      aspect_ratios: height / width ratios, e.g. ``(0.5, 1.0, 2.0)``.

    Returns:
      ``(h * w * A, 4)`` float32 ``xyxy`` anchors, ``A = len(aspect_ratios) * len(sizes)``,
      ordered position-major (row ``y``, then column ``x``), then anchor (aspect ratio, then
      size), so that a head output ``(h, w, A * 4)`` reshaped to ``(h * w * A, 4)`` lines up.
      Anchor ``(y, x, a)`` is the base anchor ``a`` shifted by ``(x * stride_w, y * stride_h)``
      (torchvision's convention: anchors centred on the top-left corner of each cell).
    """
    return jnp.asarray(make_anchors_numpy(feature_shape, stride, sizes, aspect_ratios))


def num_anchors_per_location(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> int:
    """``A = len(sizes) * len(aspect_ratios)``: the anchors at each feature-map position."""
    return len(sizes) * len(aspect_ratios)
