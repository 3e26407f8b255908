"""Box geometry: format conversions, area, IoU, clipping, small-box masks and R-CNN deltas.

Boxes are ``(..., 4)`` float32 ``xyxy`` in absolute pixels of the network input everywhere in
jaxcv; this module is the only place that knows the other formats (``cxcywh``: centre, width,
height; ``xywh``: top-left corner, width, height). Widths are ``x2 - x1`` with no ``+1``
(torchvision's convention), so a box with ``x1 == x2`` has zero area.

All functions are pure ``jax.numpy``, take any leading batch dimensions, and are ``jit``- and
``vmap``-friendly.
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxcv.ops._checks import check_last_dim, check_min_rank

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

#: torchvision's default clamp on ``dw``/``dh`` before ``exp`` (boxes at most 1000/16 times
#: their anchor).
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


def _unstack(boxes: ArrayLike) -> tuple[Array, Array, Array, Array]:
    boxes = jnp.asarray(boxes)
    return boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]


def xyxy_to_cxcywh(boxes: ArrayLike) -> Array:
    """Convert ``(..., 4)`` ``xyxy`` boxes to ``(..., 4)`` ``(cx, cy, w, h)``."""
    check_last_dim(boxes, 4, "boxes")
    x1, y1, x2, y2 = _unstack(boxes)
    return jnp.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=-1)


def cxcywh_to_xyxy(boxes: ArrayLike) -> Array:
    """Convert ``(..., 4)`` ``(cx, cy, w, h)`` boxes to ``(..., 4)`` ``xyxy``."""
    check_last_dim(boxes, 4, "boxes")
    cx, cy, w, h = _unstack(boxes)
    return jnp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def xyxy_to_xywh(boxes: ArrayLike) -> Array:
    """Convert ``(..., 4)`` ``xyxy`` boxes to ``(..., 4)`` ``(x1, y1, w, h)`` (COCO's format)."""
    check_last_dim(boxes, 4, "boxes")
    x1, y1, x2, y2 = _unstack(boxes)
    return jnp.stack([x1, y1, x2 - x1, y2 - y1], axis=-1)


def xywh_to_xyxy(boxes: ArrayLike) -> Array:
    """Convert ``(..., 4)`` ``(x1, y1, w, h)`` boxes to ``(..., 4)`` ``xyxy``."""
    check_last_dim(boxes, 4, "boxes")
    x1, y1, w, h = _unstack(boxes)
    return jnp.stack([x1, y1, x1 + w, y1 + h], axis=-1)


def box_area(boxes: ArrayLike) -> Array:
    """Area ``(x2 - x1) * (y2 - y1)`` of ``(..., 4)`` ``xyxy`` boxes, shape ``(...)``.

    Like torchvision, inverted boxes (``x2 < x1``) are not clamped here and give a negative or
    zero area; use :func:`small_boxes_mask` to find them.
    """
    check_last_dim(boxes, 4, "boxes")
    x1, y1, x2, y2 = _unstack(boxes)
    return (x2 - x1) * (y2 - y1)


def _safe_divide(inter: Array, union: Array) -> Array:
    # IoU is defined as 0 when the union is not positive (two zero-area boxes, or inverted
    # boxes), where torchvision returns 0/0 = NaN or a meaningless value.
    positive = union > 0
    return jnp.where(positive, inter / jnp.where(positive, union, 1.0), 0.0)


def box_iou(boxes1: ArrayLike, boxes2: ArrayLike) -> Array:
    """Pairwise intersection over union of two sets of ``xyxy`` boxes.

    Args:
      boxes1: ``(..., N, 4)`` ``xyxy`` boxes in pixels.
      boxes2: ``(..., M, 4)`` ``xyxy`` boxes in pixels; leading dims broadcast with ``boxes1``.

    Returns:
      ``(..., N, M)`` IoU values, equal to ``torchvision.ops.box_iou`` (same formula:
      ``inter / (area1 + area2 - inter)``) except that a pair whose union is not positive (two
      zero-area boxes, or inverted ``x2 < x1`` boxes) gets 0 instead of NaN. Values are in
      ``[0, 1]`` for well-formed boxes. Under ``jit`` on CPU, XLA may fuse a multiply-add in
      the union, so values can differ from torchvision's by one float32 ulp (max seen 2.4e-7);
      :func:`jaxcv.ops.nms` avoids this and matches torchvision's decisions exactly.
    """
    check_min_rank(boxes1, 2, "boxes1")
    check_min_rank(boxes2, 2, "boxes2")
    check_last_dim(boxes1, 4, "boxes1")
    check_last_dim(boxes2, 4, "boxes2")
    a = jnp.asarray(boxes1)[..., :, None, :]
    b = jnp.asarray(boxes2)[..., None, :, :]
    return elementwise_box_iou(a, b)


def elementwise_box_iou(boxes1: ArrayLike, boxes2: ArrayLike) -> Array:
    """IoU of corresponding ``xyxy`` boxes: ``(..., 4)`` and ``(..., 4)`` (broadcast) -> ``(...)``.

    The same formula as :func:`box_iou` (0 where the union is not positive), for pairs such
    as a predicted box and its ground truth.
    """
    inter = elementwise_box_intersection(boxes1, boxes2)
    return _safe_divide(inter, box_area(boxes1) + box_area(boxes2) - inter)


def elementwise_box_intersection(boxes1: ArrayLike, boxes2: ArrayLike) -> Array:
    """Intersection area of corresponding ``xyxy`` boxes: ``(..., 4)`` and ``(..., 4)``
    (broadcast) -> ``(...)``; 0 for disjoint boxes."""
    check_last_dim(boxes1, 4, "boxes1")
    check_last_dim(boxes2, 4, "boxes2")
    ax1, ay1, ax2, ay2 = _unstack(boxes1)
    bx1, by1, bx2, by2 = _unstack(boxes2)
    w = jnp.maximum(jnp.minimum(ax2, bx2) - jnp.maximum(ax1, bx1), 0.0)
    h = jnp.maximum(jnp.minimum(ay2, by2) - jnp.maximum(ay1, by1), 0.0)
    return w * h


def clip_boxes(boxes: ArrayLike, image_size: Sequence[int] | ArrayLike) -> Array:
    """Clip ``(..., 4)`` ``xyxy`` boxes to an image of size ``(H, W)``.

    x coordinates are clamped to ``[0, W]`` and y to ``[0, H]``, as
    ``torchvision.ops.clip_boxes_to_image`` does. ``image_size`` may be a static ``(H, W)``
    tuple or an array of shape ``(2,)`` (or ``(..., 2)`` broadcasting with the boxes' leading
    dims after adding a box axis, e.g. ``(B, 1, 2)`` for ``(B, R, 4)`` boxes).
    """
    check_last_dim(boxes, 4, "boxes")
    size = jnp.asarray(image_size)
    check_last_dim(size, 2, "image_size")
    height, width = size[..., 0], size[..., 1]
    x1, y1, x2, y2 = _unstack(boxes)
    x1, x2 = jnp.clip(x1, 0, width), jnp.clip(x2, 0, width)
    y1, y2 = jnp.clip(y1, 0, height), jnp.clip(y2, 0, height)
    return jnp.stack([x1, y1, x2, y2], axis=-1).astype(jnp.asarray(boxes).dtype)


def small_boxes_mask(boxes: ArrayLike, min_size: float) -> Array:
    """Which boxes are too small: ``(..., 4)`` ``xyxy`` -> ``(...)`` bool, True = remove.

    A box is small when its width or its height is below ``min_size``; it is the exact
    complement of the boxes ``torchvision.ops.remove_small_boxes`` keeps (so boxes with NaN
    coordinates count as small). Use it as ``valid &= ~small_boxes_mask(boxes, min_size)``
    instead of boolean indexing, which would change shapes under ``jit``.
    """
    check_last_dim(boxes, 4, "boxes")
    x1, y1, x2, y2 = _unstack(boxes)
    keep = ((x2 - x1) >= min_size) & ((y2 - y1) >= min_size)
    return ~keep


def _check_weights(weights: Sequence[float]) -> tuple[float, float, float, float]:
    if len(weights) != 4:
        raise ValueError(f"weights must have 4 entries (wx, wy, ww, wh), got {weights!r}")
    return tuple(weights)  # type: ignore[return-value]


def encode_boxes(
    boxes: ArrayLike,
    anchors: ArrayLike,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
) -> Array:
    """Regression targets ``(dx, dy, dw, dh)`` that move ``anchors`` onto ``boxes``.

    The R-CNN parameterisation, identical to torchvision's ``BoxCoder(weights).encode_single(
    boxes, anchors)``::

        dx = wx * (cx_box - cx_anchor) / w_anchor      dw = ww * log(w_box / w_anchor)
        dy = wy * (cy_box - cy_anchor) / h_anchor      dh = wh * log(h_box / h_anchor)

    Args:
      boxes: ``(..., 4)`` target ``xyxy`` boxes (e.g. each anchor's matched ground truth).
      anchors: ``(..., 4)`` reference ``xyxy`` boxes (anchors or proposals); broadcasts with
        ``boxes``. Must have positive width and height.
      weights: ``(wx, wy, ww, wh)`` multipliers, e.g. ``(10, 10, 5, 5)`` for Fast R-CNN heads.

    Returns:
      ``(..., 4)`` deltas.
    """
    check_last_dim(boxes, 4, "boxes")
    check_last_dim(anchors, 4, "anchors")
    wx, wy, ww, wh = _check_weights(weights)
    px1, py1, px2, py2 = _unstack(anchors)
    gx1, gy1, gx2, gy2 = _unstack(boxes)
    ex_w = px2 - px1
    ex_h = py2 - py1
    ex_cx = px1 + 0.5 * ex_w
    ex_cy = py1 + 0.5 * ex_h
    gt_w = gx2 - gx1
    gt_h = gy2 - gy1
    gt_cx = gx1 + 0.5 * gt_w
    gt_cy = gy1 + 0.5 * gt_h
    dx = wx * (gt_cx - ex_cx) / ex_w
    dy = wy * (gt_cy - ex_cy) / ex_h
    dw = ww * jnp.log(gt_w / ex_w)
    dh = wh * jnp.log(gt_h / ex_h)
    return jnp.stack([dx, dy, dw, dh], axis=-1)


def decode_boxes(
    deltas: ArrayLike,
    anchors: ArrayLike,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    clamp: float = DEFAULT_SCALE_CLAMP,
) -> Array:
    """Apply regression ``deltas`` to ``anchors``: the inverse of :func:`encode_boxes`.

    Identical to torchvision's ``BoxCoder(weights, bbox_xform_clip=clamp).decode_single``:
    ``dw``/``dh`` (after dividing by the weights) are clamped from above at ``clamp`` before
    ``exp``, so huge predictions cannot overflow.

    Args:
      deltas: ``(..., 4)`` ``(dx, dy, dw, dh)``. For class-specific regression reshape
        ``(R, K * 4)`` to ``(R, K, 4)`` and pass anchors ``(R, 1, 4)``.
      anchors: ``(..., 4)`` reference ``xyxy`` boxes, broadcasting with ``deltas``.
      weights: ``(wx, wy, ww, wh)`` used at encoding time.
      clamp: upper bound on ``dw``/``dh`` (default ``log(1000 / 16)``).

    Returns:
      ``(..., 4)`` decoded ``xyxy`` boxes (not clipped to the image).
    """
    check_last_dim(deltas, 4, "deltas")
    check_last_dim(anchors, 4, "anchors")
    wx, wy, ww, wh = _check_weights(weights)
    deltas = jnp.asarray(deltas)
    anchors = jnp.asarray(anchors).astype(deltas.dtype)
    x1, y1, x2, y2 = _unstack(anchors)
    widths = x2 - x1
    heights = y2 - y1
    ctr_x = x1 + 0.5 * widths
    ctr_y = y1 + 0.5 * heights
    dx = deltas[..., 0] / wx
    dy = deltas[..., 1] / wy
    dw = jnp.minimum(deltas[..., 2] / ww, clamp)
    dh = jnp.minimum(deltas[..., 3] / wh, clamp)
    pred_ctr_x = dx * widths + ctr_x
    pred_ctr_y = dy * heights + ctr_y
    half_w = 0.5 * (jnp.exp(dw) * widths)
    half_h = 0.5 * (jnp.exp(dh) * heights)
    return jnp.stack(
        [pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h],
        axis=-1,
    )
