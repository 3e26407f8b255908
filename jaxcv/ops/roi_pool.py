"""RoI max pooling (Fast R-CNN), equal to ``torchvision.ops.roi_pool``.

torchvision's rules, followed exactly: box corners are scaled by ``spatial_scale`` and rounded
half away from zero; the RoI spans ``round(x2) - round(x1) + 1`` cells (at least 1); bin ``p``
covers rows ``[floor(p * h / oh), ceil((p + 1) * h / oh))`` of the RoI, clipped to the map; an
empty bin gives 0; the maximum is taken in row-major order with the first maximum winning,
and the backward pass sends each output's gradient to that argmax.

Static shapes with exact bins of any size: a sparse table along the width holds, for every
``l``, the maximum (and its position) of the ``2^l`` cells starting at each column, so the
maximum over any column range ``[w1, w2)`` of a row is the better of two table entries
(``l = floor(log2(w2 - w1))``). A ``lax.while_loop`` then walks down the rows of the bins, as
many steps as the tallest bin has rows, over chunks of bins inside a ``lax.scan`` (each chunk
loops only as far as its own tallest bin, and its state stays in cache). The table costs
``log2(W) + 1`` copies of the feature map (and as many of int32 columns when differentiating);
the loop costs two gathers per bin and row. The backward pass is a custom VJP that scatters
the cotangent to the argmax of every output, in chunks inside a ``lax.scan``.
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jaxcv.ops._checks import check_boxes, check_leading_dims, check_rank
from jaxcv.ops.roi_align import _chunking, exact_divide

# Size in bytes of the scatter updates built per step of the backward pass.
_SCATTER_CHUNK_BYTES = 1 << 21


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}")
    return pair


def _round_half_away(x: jax.Array) -> jax.Array:
    """C's ``round``: halves go away from zero (``jnp.round`` rounds them to even)."""
    return jnp.sign(x) * jnp.floor(jnp.abs(x) + 0.5)


def _bin_edges(start, end, n_bins, size):
    """``(B, R, n_bins)`` int32 clipped bin starts and ends along one axis."""
    length = jnp.maximum(end - start + 1, 1).astype(jnp.float32)
    bin_size = exact_divide(length, n_bins)[..., None]
    p = jnp.arange(n_bins, dtype=jnp.float32)
    lo = jnp.floor(p * bin_size).astype(jnp.int32) + start[..., None]
    hi = jnp.ceil((p + 1.0) * bin_size).astype(jnp.int32) + start[..., None]
    return jnp.clip(lo, 0, size), jnp.clip(hi, 0, size)


def _floor_log2(n: jax.Array) -> jax.Array:
    """``floor(log2(n))`` of int32 ``n >= 1``."""
    return 31 - lax.clz(jnp.maximum(n, 1))


def _width_table(features, with_index):
    """Sparse table ``(L, B, H, W, C)``: max of ``features[:, :, w : w + 2^l]`` per level ``l``.

    Entry ``w`` of level ``l`` is valid where ``w + 2^l <= W``, the only entries ever read.
    With ``with_index`` also the column of each maximum (the leftmost one on ties).
    """
    width = features.shape[2]
    lowest = jnp.finfo(features.dtype).min
    values = [features]
    index = None
    if with_index:
        cols = jnp.arange(width, dtype=jnp.int32)[:, None]
        index = [jnp.broadcast_to(cols, features.shape)]
    for level in range(1, width.bit_length()):
        step = 1 << (level - 1)
        pad = ((0, 0), (0, 0), (0, step), (0, 0))
        prev = values[-1]
        right = jnp.pad(prev[:, :, step:], pad, constant_values=lowest)
        take_right = right > prev  # strict: on ties the left block holds the leftmost maximum
        values.append(jnp.where(take_right, right, prev))
        if with_index:
            right_index = jnp.pad(index[-1][:, :, step:], pad)
            index.append(jnp.where(take_right, right_index, index[-1]))
    return jnp.stack(values), (jnp.stack(index) if with_index else None)


def _pool(features, boxes, output_size, spatial_scale, with_index):
    """Max over every bin: values ``(B, R, oh, ow, C)`` and flat argmax ``h * W + w`` or -1."""
    batch, height, width, channels = features.shape
    oh, ow = output_size
    corners = _round_half_away(boxes.astype(jnp.float32) * jnp.float32(spatial_scale))
    corners = corners.astype(jnp.int32)
    row_lo, row_hi = _bin_edges(corners[..., 1], corners[..., 3], oh, height)
    col_lo, col_hi = _bin_edges(corners[..., 0], corners[..., 2], ow, width)
    grid = (*boxes.shape[:2], oh, ow)
    hs = jnp.broadcast_to(row_lo[..., :, None], grid)
    rows = jnp.broadcast_to(jnp.maximum(row_hi - row_lo, 0)[..., :, None], grid)
    ws = jnp.broadcast_to(col_lo[..., None, :], grid)
    cols = jnp.broadcast_to(jnp.maximum(col_hi - col_lo, 0)[..., None, :], grid)
    empty = (rows == 0) | (cols == 0)
    rows = jnp.where(empty, 0, rows)  # an empty bin takes no step: output 0, argmax -1
    level = _floor_log2(cols)
    ws2 = jnp.maximum(ws + cols - (1 << level), 0)
    image = jnp.arange(batch, dtype=jnp.int32)[:, None, None, None]
    base = (level * batch + image) * height
    # Per bin: first row, row count, table row base, the two table columns.
    bins = jnp.stack([hs, rows, base, ws, ws2], -1).reshape(-1, 5)

    values, index = _width_table(features, with_index)
    values = values.reshape(-1, channels)
    index = index.reshape(-1, channels) if with_index else None
    lowest = jnp.finfo(features.dtype).min

    def pool_chunk(chunk_bins):
        first_row, n_rows, row_base, col1, col2 = (chunk_bins[:, k] for k in range(5))
        n_rows_c = n_rows[:, None]

        def body(state):
            step, best, best_index = state
            row = jnp.minimum(first_row + step, height - 1)
            first = (row_base + row) * width + col1
            second = (row_base + row) * width + col2
            v1, v2 = values[first], values[second]
            take_second = v2 > v1  # on ties the left block holds the leftmost maximum
            v = jnp.where(take_second, v2, v1)
            better = (v > best) & (step < n_rows_c)  # strict: the first row wins ties
            best = jnp.where(better, v, best)
            if with_index:
                col = jnp.where(take_second, index[second], index[first])
                best_index = jnp.where(better, row[:, None] * width + col, best_index)
            return step + 1, best, best_index

        n = chunk_bins.shape[0]
        best = jnp.full((n, channels), lowest, features.dtype)
        best_index = jnp.full((n, channels), -1, jnp.int32) if with_index else jnp.zeros(())
        n_steps = jnp.max(n_rows, initial=0)
        _, best, best_index = lax.while_loop(
            lambda state: state[0] < n_steps, body, (jnp.int32(0), best, best_index)
        )
        best = jnp.where(n_rows_c > 0, best, jnp.zeros((), features.dtype))
        return best, best_index

    # Chunks of bins keep the loop state in cache, and each chunk loops only as many rows as
    # its own tallest bin has.
    n_bins = bins.shape[0]
    chunk, n_chunks, pad = _chunking(n_bins, 4 * channels)
    bins = jnp.pad(bins, ((0, pad), (0, 0))).reshape(n_chunks, chunk, 5)
    _, (best, best_index) = lax.scan(lambda c, b: (c, pool_chunk(b)), None, bins)
    best = best.reshape(n_chunks * chunk, channels)[:n_bins].reshape(*grid, channels)
    if with_index:
        best_index = best_index.reshape(n_chunks * chunk, channels)[:n_bins]
        best_index = best_index.reshape(*grid, channels)
    return best, best_index


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _roi_pool(features, boxes, output_size, spatial_scale):
    return _pool(features, boxes, output_size, spatial_scale, with_index=False)[0]


def _roi_pool_fwd(features, boxes, output_size, spatial_scale):
    out, argmax = _pool(features, boxes, output_size, spatial_scale, with_index=True)
    return out, (argmax, features, boxes)


def _roi_pool_bwd(output_size, spatial_scale, residuals, cotangent):
    argmax, features, boxes = residuals
    batch, height, width, channels = features.shape
    size = batch * height * width * channels
    image = jnp.arange(batch, dtype=jnp.int32).reshape(batch, 1, 1, 1, 1)
    channel = jnp.arange(channels, dtype=jnp.int32)
    flat = ((image * height * width + argmax) * channels + channel).reshape(-1)
    flat = jnp.where(argmax.reshape(-1) < 0, size, flat)  # empty bins: dropped below
    g = cotangent.reshape(-1).astype(jnp.float32)
    chunk = min(g.size, _SCATTER_CHUNK_BYTES // 4) if g.size else 1
    n_chunks = -(-g.size // chunk)
    pad = n_chunks * chunk - g.size
    g = jnp.pad(g, (0, pad)).reshape(n_chunks, chunk)
    flat = jnp.pad(flat, (0, pad), constant_values=size).reshape(n_chunks, chunk)

    def body(acc, part):
        g_c, idx_c = part
        return acc.at[idx_c].add(g_c, mode="drop"), None

    grad = lax.scan(body, jnp.zeros((size,), jnp.float32), (g, flat))[0]
    return grad.reshape(features.shape).astype(features.dtype), jnp.zeros_like(boxes)


_roi_pool.defvjp(_roi_pool_fwd, _roi_pool_bwd)


def roi_pool(
    features: jax.Array,
    boxes: jax.Array,
    output_size: int | Sequence[int],
    spatial_scale: float = 1.0,
) -> jax.Array:
    """RoI max pooling of ``boxes`` on ``features``, equal to ``torchvision.ops.roi_pool``.

    Args:
      features: ``(B, H, W, C)`` feature maps (NHWC).
      boxes: ``(B, R, 4)`` float32 RoIs per image, ``xyxy`` in pixels of the network input;
        ``spatial_scale`` maps them onto the feature map (e.g. 1/16 for a stride-16 map).
        Boxes may be degenerate or lie partly or wholly outside the map.
      output_size: ``oh`` or ``(oh, ow)``, the number of bins per RoI.
      spatial_scale: feature-map pixels per input pixel.

    Returns:
      ``(B, R, oh, ow, C)`` maxima per bin (0 for bins that fall outside the map), in the
      dtype of ``features``. Differentiable with respect to ``features``: the gradient goes
      to the argmax of each output (torchvision's backward); the boxes get a zero gradient.

    Raises:
      ValueError: on wrong ranks, mismatched batch sizes or an invalid ``output_size``.
    """
    check_rank(features, 4, "features (B, H, W, C)")
    check_boxes(boxes, "boxes (B, R, 4)", rank=3)
    check_leading_dims(features, boxes, 1, "features", "boxes")
    size = _pair(output_size, "output_size")
    features, boxes = jnp.asarray(features), jnp.asarray(boxes, jnp.float32)
    return _roi_pool(features, boxes, size, float(spatial_scale))
