"""Multi-scale RoI align over a feature pyramid, equal to ``torchvision.ops.MultiScaleRoIAlign``.

Each RoI is pooled from one pyramid level, chosen by its size (FPN paper, eq. 1; torchvision's
``LevelMapper`` in ``torchvision/ops/poolers.py``)::

    level = clamp(floor(canonical_level + log2(sqrt(area) / canonical_scale) + eps), k_min, k_max)

with ``canonical_scale`` 224, ``canonical_level`` 4 and ``eps`` 1e-6, all in float32 as
torchvision computes them. ``k_min`` and ``k_max`` are the pyramid levels of the first and last
map, and each map's spatial scale is inferred as torchvision's ``_infer_scale`` does:
``2 ** round(log2(feature_height / image_height))`` (torchvision uses the height only, the
largest image height of the batch; :func:`infer_scales`).

Static shapes: every RoI is pooled once, from its own level. The levels are concatenated into
one flat ``(sum_l B H_l W_l, C)`` table and each RoI's bilinear corners are indexed into its
level's block of it, so the cost is that of one single-level :func:`jaxcv.ops.roi_align.roi_align`
over all RoIs (not one per level), with the same fused gathers, chunked loop and scatter-add
backward (the gradient flows to every level's features; the boxes get a zero gradient, as in
torchvision).

Differences from torchvision, by design:

* torchvision caches the scales of the first call's feature maps in the module
  (``self.scales``) and reuses them on later calls; here they are recomputed from the static
  shapes of every call (the same whenever the image size is, as in torchvision's detectors).
* a RoI whose area is NaN or negative gets level NaN in torchvision, which after the cast to
  int64 matches no level, so its output stays zero; here such RoIs also give zeros.
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcv.ops._checks import check_boxes, check_rank
from jaxcv.ops.roi_align import _axis_samples, _gather_sum, _pair, _scatter_sum, exact_divide

__all__ = ["fpn_levels", "infer_scales", "multiscale_roi_align"]

#: torchvision's ``MultiScaleRoIAlign`` defaults (FPN paper, eq. 1).
CANONICAL_SCALE = 224
CANONICAL_LEVEL = 4
LEVEL_EPS = 1e-6


def infer_scales(
    feature_sizes: Sequence[Sequence[int]], image_size: Sequence[int]
) -> tuple[tuple[float, ...], int, int]:
    """Spatial scale of each map and the pyramid levels ``k_min, k_max``, as torchvision.

    torchvision's ``_infer_scale``: ``2 ** round(log2(float32(h_feature / h_image)))`` (height
    only, round half to even), and ``k = int(-log2(scale))`` of the first and last maps.

    Args:
      feature_sizes: ``(H_l, W_l)`` of every map, finest first.
      image_size: ``(H, W)``: the largest image size of the batch before padding
        (torchvision's ``max`` over ``image_shapes``).

    Returns:
      ``(scales, k_min, k_max)``: one power of two per map, and two ints.
    """
    if len(image_size) != 2 or min(image_size) < 1:
        raise ValueError(f"image_size must be (H, W) with positive sizes; got {image_size!r}")
    if not feature_sizes:
        raise ValueError("infer_scales needs at least one feature map size; got none")
    scales = []
    for size in feature_sizes:
        approx = np.float32(float(size[0]) / float(image_size[0]))
        scales.append(float(2.0 ** float(np.round(np.log2(approx)))))
    k_min = int(-np.log2(np.float32(scales[0])))
    k_max = int(-np.log2(np.float32(scales[-1])))
    return tuple(scales), k_min, k_max


def fpn_levels(
    boxes: jax.Array,
    k_min: int,
    k_max: int,
    canonical_scale: int = CANONICAL_SCALE,
    canonical_level: int = CANONICAL_LEVEL,
    eps: float = LEVEL_EPS,
) -> jax.Array:
    """torchvision's ``LevelMapper``: the pyramid map index of each box.

    Args:
      boxes: ``(..., 4)`` float32 ``xyxy`` boxes in input pixels.
      k_min, k_max: the pyramid levels of the first and last map.
      canonical_scale, canonical_level, eps: eq. 1 of the FPN paper, as torchvision.

    Returns:
      ``(...)`` int32 in ``0 .. k_max - k_min`` (``level - k_min``); -1 where the area is NaN
      or negative (torchvision pools no level for those RoIs).
    """
    check_boxes(boxes, "boxes (..., 4)")
    boxes = jnp.asarray(boxes, jnp.float32)
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    s = jnp.sqrt(area)
    level = jnp.floor(
        (jnp.float32(canonical_level) + jnp.log2(exact_divide(s, canonical_scale)))
        + jnp.float32(eps)
    )
    level = jnp.clip(level, k_min, k_max)
    return jnp.where(jnp.isnan(level), -1, level.astype(jnp.int32) - k_min)


def _geometry(boxes, levels, shapes, scales, output_size, sampling_ratio, max_sampling):
    """Flat corner indices ``(B, R, oh, ow, sy, sx, 4)`` into the concatenated levels, weights.

    Each RoI uses its level's height, width, scale and block offset; RoIs of level -1 get zero
    weights (and in-bounds indices), as do RoIs of a level past the last map (torchvision pools
    nothing for those either: possible only when the maps' scales skip a level).
    """
    oh, ow = output_size
    batch = boxes.shape[0]
    valid = (levels >= 0) & (levels < len(shapes))
    lvl = jnp.where(valid, levels, 0)
    heights = np.array([h for h, _ in shapes], np.int32)
    widths = np.array([w for _, w in shapes], np.int32)
    offsets = np.concatenate([[0], np.cumsum(batch * heights * widths)[:-1]]).astype(np.int32)
    height, width = jnp.asarray(heights)[lvl], jnp.asarray(widths)[lvl]
    offset = jnp.asarray(offsets)[lvl]
    scale = jnp.asarray(np.array(scales, np.float32))[lvl]
    scaled = boxes * scale[..., None]  # powers of two: exact, as torchvision's multiply
    x1, y1, x2, y2 = (scaled[..., k] for k in range(4))
    roi_w, roi_h = jnp.maximum(x2 - x1, 1.0), jnp.maximum(y2 - y1, 1.0)  # aligned=False
    if sampling_ratio > 0:
        sy = sx = sampling_ratio
        grid_y = jnp.full(roi_h.shape, sy, jnp.int32)
        grid_x = jnp.full(roi_w.shape, sx, jnp.int32)
    else:
        sy = sx = max_sampling
        grid_y = jnp.clip(jnp.ceil(exact_divide(roi_h, oh)).astype(jnp.int32), 0, max_sampling)
        grid_x = jnp.clip(jnp.ceil(exact_divide(roi_w, ow)).astype(jnp.int32), 0, max_sampling)
    ylo, yhi, wylo, wyhi = _axis_samples(y1, roi_h, oh, grid_y, sy, height[..., None, None])
    xlo, xhi, wxlo, wxhi = _axis_samples(x1, roi_w, ow, grid_x, sx, width[..., None, None])
    rows = jnp.stack([ylo, yhi], -1)[:, :, :, None, :, None, :, None]
    cols = jnp.stack([xlo, xhi], -1)[:, :, None, :, None, :, None, :]
    wy = jnp.stack([wylo, wyhi], -1)[:, :, :, None, :, None, :, None]
    wx = jnp.stack([wxlo, wxhi], -1)[:, :, None, :, None, :, None, :]
    per_roi = (slice(None), slice(None)) + (None,) * 6
    image = jnp.arange(batch, dtype=jnp.int32)[:, None, None, None, None, None, None, None]
    index = offset[per_roi] + (image * height[per_roi] + rows) * width[per_roi] + cols
    weight = jnp.where(valid[per_roi], wy * wx, 0.0)
    shape = (*boxes.shape[:2], oh, ow, sy, sx, 4)
    return index.reshape(shape), weight.reshape(shape)


def _flatten(features):
    return jnp.concatenate([f.reshape(-1, f.shape[-1]) for f in features], axis=0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def _pool(features, boxes, levels, output_size, scales, sampling_ratio, max_sampling):
    return _pool_fwd(features, boxes, levels, output_size, scales, sampling_ratio, max_sampling)[0]


def _pool_fwd(features, boxes, levels, output_size, scales, sampling_ratio, max_sampling):
    shapes = tuple(f.shape[1:3] for f in features)
    index, weight = _geometry(
        boxes, levels, shapes, scales, output_size, sampling_ratio, max_sampling
    )
    flat = _flatten(features)
    out = _gather_sum(
        flat, index.reshape(-1, *index.shape[4:]), weight.reshape(-1, *index.shape[4:])
    )
    out = out.reshape(*index.shape[:4], flat.shape[-1]).astype(features[0].dtype)
    return out, (features, boxes, levels)


def _pool_bwd(output_size, scales, sampling_ratio, max_sampling, residuals, cotangent):
    features, boxes, levels = residuals
    shapes = tuple(f.shape[1:3] for f in features)
    index, weight = _geometry(
        boxes, levels, shapes, scales, output_size, sampling_ratio, max_sampling
    )
    rows = sum(int(np.prod(f.shape[:3])) for f in features)
    grad = _scatter_sum(cotangent.reshape(-1, cotangent.shape[-1]), index, weight, rows)
    grads, start = [], 0
    for f in features:
        n = int(np.prod(f.shape[:3]))
        grads.append(grad[start : start + n].reshape(f.shape).astype(f.dtype))
        start += n
    levels_cotangent = np.zeros(levels.shape, jax.dtypes.float0)
    return tuple(grads), jnp.zeros_like(boxes), levels_cotangent


_pool.defvjp(_pool_fwd, _pool_bwd)


def multiscale_roi_align(
    features: Sequence[jax.Array],
    boxes: jax.Array,
    image_size: Sequence[int],
    output_size: int | Sequence[int] = 7,
    sampling_ratio: int = 2,
    *,
    canonical_scale: int = CANONICAL_SCALE,
    canonical_level: int = CANONICAL_LEVEL,
    max_sampling: int = 8,
) -> jax.Array:
    """``torchvision.ops.MultiScaleRoIAlign(names, output_size, sampling_ratio)`` on NHWC maps.

    Args:
      features: the pooled pyramid maps ``(B, H_l, W_l, C)``, finest first (torchvision's
        ``featmap_names``, e.g. FPN levels ``"0".."3"`` without ``"pool"``).
      boxes: ``(B, R, 4)`` float32 RoIs per image, ``xyxy`` in input pixels.
      image_size: ``(H, W)`` static: the largest image size of the batch before padding
        (torchvision's ``image_shapes``); fixes each map's scale (:func:`infer_scales`).
      output_size: ``oh`` or ``(oh, ow)`` bins per RoI.
      sampling_ratio: bilinear samples per bin along each axis; ``<= 0`` is torchvision's
        adaptive ``ceil(roi_size / output_size)``, bounded by ``max_sampling``.
      canonical_scale, canonical_level: the level assignment's constants (:func:`fpn_levels`).
      max_sampling: static bound of the adaptive grid (only with ``sampling_ratio <= 0``).

    Returns:
      ``(B, R, oh, ow, C)`` in the features' dtype: each RoI ``roi_align``-ed (``aligned=False``,
      as torchvision's ``MultiScaleRoIAlign``) from the map of its level. Differentiable with
      respect to ``features``.

    Raises:
      ValueError: on wrong ranks, mismatched batch sizes or channels, or invalid sizes.
    """
    features = tuple(jnp.asarray(f) for f in features)
    if not features:
        raise ValueError("multiscale_roi_align needs at least one feature map; got none")
    for i, f in enumerate(features):
        check_rank(f, 4, f"features[{i}] (B, H, W, C)")
    check_boxes(boxes, "boxes (B, R, 4)", rank=3)
    shapes = [tuple(f.shape) for f in features]
    if any(s[0] != boxes.shape[0] or s[3] != shapes[0][3] for s in shapes):
        raise ValueError(
            f"features must be (B, H_l, W_l, C) with one B and C and boxes (B, R, 4); got "
            f"features {shapes} and boxes {tuple(boxes.shape)}"
        )
    if len({f.dtype for f in features}) != 1:
        raise ValueError(f"features must share one dtype; got {[f.dtype for f in features]}")
    size = _pair(output_size, "output_size")
    if not isinstance(max_sampling, int) or max_sampling < 1:
        raise ValueError(f"max_sampling must be a positive int, got {max_sampling!r}")
    scales, k_min, k_max = infer_scales([s[1:3] for s in shapes], tuple(image_size))
    boxes = jnp.asarray(boxes, jnp.float32)
    if len(features) == 1:  # torchvision pools every RoI from the one map, whatever its size
        levels = jnp.zeros(boxes.shape[:2], jnp.int32)
    else:
        levels = fpn_levels(boxes, k_min, k_max, canonical_scale, canonical_level)
    levels = lax.stop_gradient(levels)
    return _pool(features, boxes, levels, size, scales, int(sampling_ratio), max_sampling)
