"""Bilinear RoI align (Mask R-CNN), equal to ``torchvision.ops.roi_align``.

Every output bin averages ``sy * sx`` bilinear samples taken on a regular grid inside the bin.
Bilinear sampling is separable, so each sample is four corner reads with weights ``wy * wx``;
the whole op is a fixed set of ``4 * sy * sx`` corner gathers per bin, weighted and summed. XLA
fuses those gathers with the weighted sum into one loop over the output, which on CPU is several
times faster than dense interpolation matrices (``(oh, H) @ (H, W, C) @ (W, ow)`` per RoI spends
most of its multiplies on zeros; ``experiments/bench/ops.py`` times this one) and never
materialises the samples. The bins are processed in chunks of about 2 MiB of output inside a
``lax.scan``, which bounds the temporary memory and keeps the fused loop intact whatever
consumes the result.

The backward pass is a custom VJP: the transpose of a gather is a scatter-add, and scattering
all corner contributions at once would build a ``(B, R, oh, ow, 4 sy sx, C)`` update array
(autodiff of the forward materialises one such array per corner and is much slower). Instead
the bins are scattered in chunks inside a ``lax.scan``, keeping the temporary memory at a few
MiB whatever the number of RoIs. Gradients flow to ``features`` only; the box cotangent is
zero, as in torchvision (whose ``roi_align`` has no gradient for the boxes).

torchvision's rules, followed exactly:

* ``aligned=True`` shifts box corners by -0.5 pixel (pixel centres); with ``aligned=False``
  the RoI width and height are at least 1.
* sample ``y = y1 + ph * bin_h + (iy + 0.5) * bin_h / sy`` (and the same for ``x``);
  a sample with ``y < -1`` or ``y > H`` (or ``x`` likewise) contributes 0, otherwise it is
  clamped to ``[0, H - 1]`` before interpolation.
* ``sampling_ratio <= 0`` is adaptive: ``sy = ceil(roi_h / oh)`` per RoI. With static shapes
  the sample grid is bounded by ``max_sampling`` per axis (extra grid points are masked out);
  the result equals torchvision's whenever ``ceil(roi_size / output_size) <= max_sampling``,
  and beyond that the grid is capped at ``max_sampling`` samples per axis.
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jaxcv.ops._checks import check_boxes, check_leading_dims, check_rank

# Bytes of results (forward) or scatter updates (backward) computed per loop step.
_CHUNK_BYTES = 1 << 21
# Sample grids with at most this many points per bin are gathered in one fused expression.
_MAX_UNROLLED_SAMPLES = 16


def exact_divide(numerator: jax.Array, denominator) -> jax.Array:
    """``numerator / denominator`` rounded like one IEEE float32 division.

    XLA rewrites a division by a constant or a broadcast scalar into a multiplication by its
    reciprocal, which is off by one ulp for many inputs; torchvision's kernels divide, and a
    bin edge computed from the reciprocal can land on the other side of an integer. Giving
    the divisor the numerator's full shape behind an optimisation barrier keeps a true divide.

    Args:
      numerator: float array of any shape ``S``.
      denominator: scalar or array broadcastable to ``S``.

    Returns:
      ``(S)`` array, the correctly rounded quotient.
    """
    den = jnp.broadcast_to(jnp.asarray(denominator, numerator.dtype), numerator.shape)
    den, numerator = lax.optimization_barrier((den, numerator))
    return numerator / den


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}")
    return pair


def _axis_samples(start, length, n_bins, grid, grid_bound, size):
    """Corner indices and weights of the samples along one axis.

    Args:
      start: ``(B, R)`` float32 RoI start on the feature map.
      length: ``(B, R)`` float32 RoI extent.
      n_bins: number of output bins along the axis.
      grid: ``(B, R)`` int32 samples per bin (torchvision's ``roi_bin_grid``).
      grid_bound: static upper bound of ``grid``.
      size: feature-map extent along the axis.

    Returns:
      ``low, high`` int32 and ``w_low, w_high`` float32, each ``(B, R, n_bins, grid_bound)``;
      the weights include the ``1 / grid`` of the average and are 0 for masked samples.
    """
    bin_size = exact_divide(length, n_bins)[..., None, None]
    grid = grid[..., None, None]
    p = jnp.arange(n_bins, dtype=jnp.float32)[:, None]
    i = jnp.arange(grid_bound, dtype=jnp.float32)[None, :]
    offset = exact_divide((i + 0.5) * bin_size, jnp.maximum(grid, 1).astype(jnp.float32))
    pos = (start[..., None, None] + p * bin_size) + offset
    valid = (pos >= -1.0) & (pos <= size) & (i < grid)
    pos = jnp.maximum(pos, 0.0)
    low = jnp.floor(pos).astype(jnp.int32)
    at_edge = low >= size - 1
    low = jnp.where(at_edge, size - 1, low)
    high = jnp.where(at_edge, size - 1, low + 1)
    frac = jnp.where(at_edge, 0.0, pos - low.astype(jnp.float32))
    scale = jnp.where(valid, 1.0 / jnp.maximum(grid, 1).astype(jnp.float32), 0.0)
    return low, high, (1.0 - frac) * scale, frac * scale


def _sample_geometry(
    boxes, height, width, output_size, spatial_scale, sampling_ratio, aligned, max_sampling
):
    """Flat corner indices ``(B, R, oh, ow, sy, sx, 4)`` into ``(B*H*W)`` and their weights."""
    oh, ow = output_size
    batch = boxes.shape[0]
    offset = 0.5 if aligned else 0.0
    scaled = boxes.astype(jnp.float32) * jnp.float32(spatial_scale) - jnp.float32(offset)
    x1, y1, x2, y2 = (scaled[..., k] for k in range(4))
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = jnp.maximum(roi_w, 1.0), jnp.maximum(roi_h, 1.0)
    if sampling_ratio > 0:
        sy = sx = sampling_ratio
        grid_y = jnp.full(roi_h.shape, sy, jnp.int32)
        grid_x = jnp.full(roi_w.shape, sx, jnp.int32)
    else:
        sy = sx = max_sampling
        grid_y = jnp.ceil(exact_divide(roi_h, oh)).astype(jnp.int32)
        grid_x = jnp.ceil(exact_divide(roi_w, ow)).astype(jnp.int32)
        grid_y = jnp.clip(grid_y, 0, max_sampling)
        grid_x = jnp.clip(grid_x, 0, max_sampling)
    ylo, yhi, wylo, wyhi = _axis_samples(y1, roi_h, oh, grid_y, sy, height)
    xlo, xhi, wxlo, wxhi = _axis_samples(x1, roi_w, ow, grid_x, sx, width)
    # (B, R, oh, sy, 2) rows and (B, R, ow, sx, 2) columns -> (B, R, oh, ow, sy, sx, 2, 2).
    rows = jnp.stack([ylo, yhi], -1)[:, :, :, None, :, None, :, None]
    cols = jnp.stack([xlo, xhi], -1)[:, :, None, :, None, :, None, :]
    wy = jnp.stack([wylo, wyhi], -1)[:, :, :, None, :, None, :, None]
    wx = jnp.stack([wxlo, wxhi], -1)[:, :, None, :, None, :, None, :]
    image = jnp.arange(batch, dtype=jnp.int32).reshape(batch, 1, 1, 1, 1, 1, 1, 1)
    index = (image * height + rows) * width + cols
    weight = wy * wx
    shape = (*boxes.shape[:2], oh, ow, sy, sx, 4)
    return index.reshape(shape), weight.reshape(shape)


def _chunking(n_items: int, item_bytes: int) -> tuple[int, int, int]:
    """Split ``n_items`` into chunks of about ``_CHUNK_BYTES``: ``(chunk, n_chunks, padding)``.

    A chunk size dividing ``n_items`` is preferred (no padding, no copy of the result).
    """
    target = max(1, min(n_items, _CHUNK_BYTES // max(item_bytes, 1)))
    chunk = next((c for c in range(target, target // 2, -1) if n_items % c == 0), target)
    n_chunks = -(-n_items // chunk)
    return chunk, n_chunks, n_chunks * chunk - n_items


def _gather_chunk(flat, index, weight):
    """``sum_{iy, ix, k} weight * flat[index]`` for ``(n, sy, sx, 4)`` samples: ``(n, C)``."""
    sy, sx = index.shape[1], index.shape[2]

    def row_sum(iy):
        row_index, row_weight = index[:, iy], weight[:, iy]
        total = None
        for ix in range(sx):
            for k in range(4):
                term = row_weight[:, ix, k, None] * flat[row_index[:, ix, k]]
                total = term if total is None else total + term
        return total

    if sy * sx <= _MAX_UNROLLED_SAMPLES:
        total = row_sum(0)
        for iy in range(1, sy):
            total = total + row_sum(iy)
        return total
    init = jnp.zeros((index.shape[0], flat.shape[-1]), jnp.float32)
    return lax.fori_loop(0, sy, lambda iy, acc: acc + row_sum(iy), init)


def _gather_sum(flat, index, weight):
    """Weighted corner gathers summed per bin: ``(N, C)`` float32 for ``(N, sy, sx, 4)``.

    The bins are processed in chunks inside a ``lax.scan``: besides bounding the temporary
    memory, the loop keeps the fused gather-sum away from the consumers of the result (fused
    with a following reduction, XLA would materialise every corner gather separately).
    """
    n_bins, channels = index.shape[0], flat.shape[-1]
    chunk, n_chunks, pad = _chunking(n_bins, 4 * channels)
    parts = tuple(
        jnp.pad(a, ((0, pad),) + ((0, 0),) * 3).reshape(n_chunks, chunk, *a.shape[1:])
        for a in (index, weight)
    )
    _, out = lax.scan(lambda carry, part: (carry, _gather_chunk(flat, *part)), None, parts)
    out = out.reshape(n_chunks * chunk, channels)
    return out[:n_bins] if pad else out


def _scatter_sum(cotangent, index, weight, num_rows):
    """Transpose of :func:`_gather_sum`: ``(num_rows, C)`` float32, scattered in chunks."""
    n_bins, channels = cotangent.shape
    n_corners = index.size // max(n_bins, 1)
    chunk, n_chunks, pad = _chunking(n_bins, 4 * n_corners * channels)
    g = jnp.pad(cotangent.astype(jnp.float32), ((0, pad), (0, 0)))
    idx = jnp.pad(index.reshape(n_bins, n_corners), ((0, pad), (0, 0)))
    w = jnp.pad(weight.reshape(n_bins, n_corners), ((0, pad), (0, 0)))

    def body(acc, part):
        g_c, idx_c, w_c = part
        updates = (w_c[..., None] * g_c[:, None, :]).reshape(-1, channels)
        return acc.at[idx_c.reshape(-1)].add(updates, mode="promise_in_bounds"), None

    parts = (
        g.reshape(n_chunks, chunk, channels),
        idx.reshape(n_chunks, chunk, n_corners),
        w.reshape(n_chunks, chunk, n_corners),
    )
    return lax.scan(body, jnp.zeros((num_rows, channels), jnp.float32), parts)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def _roi_align(features, boxes, output_size, spatial_scale, sampling_ratio, aligned, max_sampling):
    return _roi_align_fwd(
        features, boxes, output_size, spatial_scale, sampling_ratio, aligned, max_sampling
    )[0]


def _roi_align_fwd(
    features, boxes, output_size, spatial_scale, sampling_ratio, aligned, max_sampling
):
    batch, height, width, channels = features.shape
    index, weight = _sample_geometry(
        boxes, height, width, output_size, spatial_scale, sampling_ratio, aligned, max_sampling
    )
    flat = features.reshape(batch * height * width, channels)
    out = _gather_sum(
        flat, index.reshape(-1, *index.shape[4:]), weight.reshape(-1, *index.shape[4:])
    )
    out = out.reshape(*index.shape[:4], channels).astype(features.dtype)
    return out, (features, boxes)


def _roi_align_bwd(
    output_size, spatial_scale, sampling_ratio, aligned, max_sampling, residuals, cotangent
):
    features, boxes = residuals
    batch, height, width, _ = features.shape
    index, weight = _sample_geometry(
        boxes, height, width, output_size, spatial_scale, sampling_ratio, aligned, max_sampling
    )
    cotangent = cotangent.reshape(-1, cotangent.shape[-1])
    grad = _scatter_sum(cotangent, index, weight, batch * height * width)
    return grad.reshape(features.shape).astype(features.dtype), jnp.zeros_like(boxes)


_roi_align.defvjp(_roi_align_fwd, _roi_align_bwd)


def roi_align(
    features: jax.Array,
    boxes: jax.Array,
    output_size: int | Sequence[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = 2,
    aligned: bool = True,
    max_sampling: int = 8,
) -> jax.Array:
    """Bilinear RoI align of ``boxes`` on ``features``, equal to ``torchvision.ops.roi_align``.

    Args:
      features: ``(B, H, W, C)`` feature maps (NHWC).
      boxes: ``(B, R, 4)`` float32 RoIs per image, ``xyxy`` in pixels of the network input;
        ``spatial_scale`` maps them onto the feature map (e.g. 1/16 for a stride-16 map).
        Boxes may be degenerate or lie partly or wholly outside the map.
      output_size: ``oh`` or ``(oh, ow)``, the number of bins per RoI.
      spatial_scale: feature-map pixels per input pixel.
      sampling_ratio: bilinear samples per bin along each axis; ``<= 0`` is torchvision's
        adaptive grid ``ceil(roi_size / output_size)``, bounded by ``max_sampling``.
      aligned: shift boxes by -0.5 pixel (True, the Detectron2 / Mask R-CNN convention) or not.
      max_sampling: static bound of the adaptive grid per axis (only used when
        ``sampling_ratio <= 0``).

    Returns:
      ``(B, R, oh, ow, C)`` pooled features, in the dtype of ``features``. Differentiable
      with respect to ``features`` (torchvision's backward); the boxes get a zero gradient.

    Raises:
      ValueError: on wrong ranks, mismatched batch sizes or invalid sizes.
    """
    check_rank(features, 4, "features (B, H, W, C)")
    check_boxes(boxes, "boxes (B, R, 4)", rank=3)
    check_leading_dims(features, boxes, 1, "features", "boxes")
    size = _pair(output_size, "output_size")
    if not isinstance(max_sampling, int) or max_sampling < 1:
        raise ValueError(f"max_sampling must be a positive int, got {max_sampling!r}")
    features, boxes = jnp.asarray(features), jnp.asarray(boxes, jnp.float32)
    return _roi_align(
        features,
        boxes,
        size,
        float(spatial_scale),
        int(sampling_ratio),
        bool(aligned),
        max_sampling,
    )
