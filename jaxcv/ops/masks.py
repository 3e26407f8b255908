"""Instance-mask helpers for Mask R-CNN: crop ground truth to RoIs, paste predictions back.

Both follow torchvision's Mask R-CNN exactly and keep static shapes under ``jit``:

* :func:`crop_masks_to_rois` is ``torchvision.models.detection.roi_heads.
  project_masks_on_boxes``: RoI align of each RoI's matched ground-truth mask (spatial scale 1,
  ``aligned=False`` and the adaptive sampling grid, as torchvision calls it), without building
  a ``(R, H, W)`` stack of masks: the bilinear samples read the matched mask plane directly.
* :func:`paste_masks_in_image` is ``torchvision.models.detection.transform.
  paste_masks_in_image``: pad each ``S x S`` mask by one pixel, grow its box by ``(S + 2) / S``
  around the centre, round the box to integer pixels, resize the padded mask to the box with
  bilinear interpolation (``align_corners=False``) and write it into an empty image. The
  resize is separable, so each mask is pasted with two small matmuls,
  ``(H, S + 2) @ (S + 2, S + 2) @ (S + 2, W)``, whose interpolation matrices are zero outside
  the box.
"""

import jax
import jax.numpy as jnp

from jaxcv.ops._checks import check_boxes, check_leading_dims, check_rank
from jaxcv.ops.roi_align import _gather_sum, _sample_geometry


def crop_masks_to_rois(
    masks: jax.Array,
    matched_index: jax.Array,
    rois: jax.Array,
    size: int = 28,
    *,
    aligned: bool = False,
    sampling_ratio: int = -1,
    max_sampling: int | None = None,
) -> jax.Array:
    """Mask targets: each RoI's matched ground-truth mask, cropped to the RoI and resized.

    Args:
      masks: ``(B, M, H, W)`` instance masks (uint8, bool or float), in pixels of the
        network input.
      matched_index: ``(B, R)`` int index in ``[0, M)`` of the mask matched to each RoI
        (out-of-range values are clipped; mask the loss of unmatched RoIs yourself).
      rois: ``(B, R, 4)`` float32 ``xyxy`` RoIs in pixels of the network input.
      size: side ``S`` of the output masks.
      aligned: RoI align's half-pixel shift; False as in torchvision's Mask R-CNN.
      sampling_ratio: bilinear samples per bin and axis; ``<= 0`` (torchvision's choice) is
        the adaptive ``ceil(roi_size / S)``.
      max_sampling: static bound of the adaptive grid; default ``ceil(max(H, W) / S)``, which
        is exact for every RoI inside the image.

    Returns:
      ``(B, R, S, S)`` float32 soft mask targets in ``[0, 1]``, equal to
      ``project_masks_on_boxes(masks[b], rois[b], matched_index[b], S)`` for every image.

    Raises:
      ValueError: on wrong ranks or mismatched batch / RoI dimensions.
    """
    check_rank(masks, 4, "masks (B, M, H, W)")
    check_rank(matched_index, 2, "matched_index (B, R)")
    check_boxes(rois, "rois (B, R, 4)", rank=3)
    check_leading_dims(masks, rois, 1, "masks", "rois")
    check_leading_dims(matched_index, rois, 2, "matched_index", "rois")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    masks, rois = jnp.asarray(masks), jnp.asarray(rois, jnp.float32)
    matched_index = jnp.asarray(matched_index)
    batch, n_masks, height, width = masks.shape
    if max_sampling is None:
        max_sampling = max(1, -(-max(height, width) // size))
    index, weight = _sample_geometry(
        rois, height, width, (size, size), 1.0, int(sampling_ratio), aligned, max_sampling
    )
    # Re-base each sample from image b's (H, W) plane onto plane (b, matched mask).
    image = jnp.arange(batch, dtype=jnp.int32)[:, None]
    plane = image * n_masks + jnp.clip(matched_index.astype(jnp.int32), 0, n_masks - 1)
    offset = (plane - image) * (height * width)
    index = index + offset.reshape(*offset.shape, 1, 1, 1, 1, 1)
    flat = masks.astype(jnp.float32).reshape(-1, 1)
    grid = index.shape[4:]
    out = _gather_sum(flat, index.reshape(-1, *grid), weight.reshape(-1, *grid))
    return out.reshape(*rois.shape[:2], size, size)


def _expand_boxes(boxes: jax.Array, scale: float) -> jax.Array:
    """torchvision's ``expand_boxes``: scale ``(N, 4)`` boxes about their centres."""
    x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
    w_half = (x2 - x1) * 0.5 * jnp.float32(scale)
    h_half = (y2 - y1) * 0.5 * jnp.float32(scale)
    x_c, y_c = (x2 + x1) * 0.5, (y2 + y1) * 0.5
    return jnp.stack([x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half], axis=1)


def _paste_weights(start, end, in_size, out_size):
    """``(N, out_size, in_size)`` bilinear weights placing a resized mask at ``[start, end]``.

    Row ``y`` of the image reads row ``r = y - start`` of the mask resized to
    ``n = max(end - start + 1, 1)`` rows (PyTorch's ``align_corners=False`` resize), and is
    zero outside ``0 <= r <= end - start``.
    """
    n = jnp.maximum(end - start + 1, 1)
    scale = jnp.float32(in_size) / n.astype(jnp.float32)
    y = jnp.arange(out_size, dtype=jnp.int32)
    r = y[None, :] - start[:, None]
    inside = (r >= 0) & (r <= (end - start)[:, None])
    src = scale[:, None] * (r.astype(jnp.float32) + 0.5) - 0.5
    src = jnp.maximum(src, 0.0)
    low = jnp.minimum(src.astype(jnp.int32), in_size - 1)
    frac = jnp.clip(src - low.astype(jnp.float32), 0.0, 1.0)
    high = jnp.minimum(low + 1, in_size - 1)
    cols = jnp.arange(in_size, dtype=jnp.int32)
    weights = (cols == low[..., None]) * (1.0 - frac)[..., None]
    weights = weights + (cols == high[..., None]) * frac[..., None]
    return jnp.where(inside[..., None], weights, 0.0)


def paste_masks_in_image(
    masks: jax.Array,
    boxes: jax.Array,
    image_shape: tuple[int, int],
    threshold: float | None = None,
    padding: int = 1,
) -> jax.Array:
    """Paste ``S x S`` mask probabilities into full images at their boxes.

    Args:
      masks: ``(N, S, S)`` mask probabilities (one per detection, already the predicted
        class's channel).
      boxes: ``(N, 4)`` float32 ``xyxy`` detection boxes in pixels of the output image.
      image_shape: static ``(H, W)`` of the output image.
      threshold: if given, return ``probability > threshold`` as bool masks.
      padding: pixels of zero padding added around each mask before resizing (torchvision: 1).

    Returns:
      ``(N, H, W)`` float32 probabilities equal to torchvision's
      ``paste_masks_in_image(masks[:, None], boxes, (H, W))[:, 0]``, or bool masks when
      ``threshold`` is given.

    Raises:
      ValueError: on wrong ranks, non-square masks, mismatched counts or a bad image shape.
    """
    check_rank(masks, 3, "masks (N, S, S)")
    check_boxes(boxes, "boxes (N, 4)", rank=2)
    check_leading_dims(masks, boxes, 1, "masks", "boxes")
    if masks.shape[1] != masks.shape[2]:
        raise ValueError(f"masks must be square (N, S, S), got shape {masks.shape}")
    if len(image_shape) != 2 or not all(isinstance(s, int) and s > 0 for s in image_shape):
        raise ValueError(f"image_shape must be two positive ints (H, W), got {image_shape!r}")
    height, width = image_shape
    side = masks.shape[-1]
    masks, boxes = jnp.asarray(masks), jnp.asarray(boxes, jnp.float32)
    padded = jnp.pad(masks.astype(jnp.float32), ((0, 0), (padding, padding), (padding, padding)))
    scale = float(side + 2 * padding) / side
    corners = _expand_boxes(boxes.astype(jnp.float32), scale).astype(jnp.int32)
    rows = _paste_weights(corners[:, 1], corners[:, 3], side + 2 * padding, height)
    cols = _paste_weights(corners[:, 0], corners[:, 2], side + 2 * padding, width)
    pasted = jnp.einsum("nya,nab,nxb->nyx", rows, padded, cols, precision=jax.lax.Precision.HIGHEST)
    return pasted > threshold if threshold is not None else pasted
