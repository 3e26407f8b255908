"""R-CNN's region warping: context padding and a bilinear crop-and-resize of boxes.

R-CNN (Girshick et al. 2014, appendix A) warps every proposal, whatever its aspect ratio, to
the CNN's fixed input size after dilating it so that, at the warped size, there are exactly
``p = 16`` pixels of image context around the original box (:func:`context_boxes`); context
that falls outside the image is filled with the mean image (zero after normalisation).

:func:`crop_and_resize` samples an ``oh x ow`` grid of pixel centres inside each box with
bilinear interpolation: output pixel ``(i, j)`` of box ``(x1, y1, x2, y2)`` (pixel-edge
``xyxy``: pixel ``k`` covers ``[k, k + 1)``, its centre is ``k + 0.5``) reads the image at
``x = x1 + (j + 0.5) (x2 - x1) / ow``, ``y = y1 + (i + 0.5) (y2 - y1) / oh``, i.e. at the
continuous index ``(y - 0.5, x - 0.5)``, interpolating its four neighbouring pixels; a
neighbour outside the image reads ``fill_value`` (the image is padded with it forever), so a
box partly outside the image fades into the fill value. The warp is a fixed set of four
gathers per output pixel (no interpolation matrices), jit-able with static shapes.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxcv.ops._checks import check_boxes, check_leading_dims, check_rank

#: R-CNN's context padding at the warped size, in pixels.
RCNN_CONTEXT_PADDING = 16


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}")
    return pair


def context_boxes(
    boxes: jax.Array, output_size: int | Sequence[int], padding: float = RCNN_CONTEXT_PADDING
) -> jax.Array:
    """Dilate boxes so that warping them to ``output_size`` leaves ``padding`` pixels of context.

    The box keeps its centre; each side is scaled by ``S / (S - 2 p)`` for the output side
    ``S`` along that axis, so the original box fills the central ``S - 2 p`` pixels of the
    warped crop.

    Args:
      boxes: ``(..., 4)`` ``xyxy`` boxes in pixels.
      output_size: ``S`` or ``(oh, ow)``, the warped size.
      padding: ``p`` context pixels at the warped size (16); 0 returns the boxes.

    Returns:
      ``(..., 4)`` dilated boxes (they may extend outside the image).

    Raises:
      ValueError: ``boxes`` not ``(..., 4)``, or ``2 p >= S``.
    """
    check_boxes(boxes, "boxes (..., 4)")
    oh, ow = _pair(output_size, "output_size")
    if not 0 <= 2 * padding < min(oh, ow):
        raise ValueError(f"need 0 <= 2 * padding < output size; got {padding} for {(oh, ow)}")
    boxes = jnp.asarray(boxes, jnp.float32)
    scale_x, scale_y = ow / (ow - 2.0 * padding), oh / (oh - 2.0 * padding)
    cx = 0.5 * (boxes[..., 0] + boxes[..., 2])
    cy = 0.5 * (boxes[..., 1] + boxes[..., 3])
    hw = 0.5 * (boxes[..., 2] - boxes[..., 0]) * scale_x
    hh = 0.5 * (boxes[..., 3] - boxes[..., 1]) * scale_y
    return jnp.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=-1)


def _axis(start, end, n, size):
    """Lower neighbour index, its weight pair and in-image flags along one axis.

    Args:
      start, end: ``(B, R)`` box edges; n: output pixels; size: image side.

    Returns:
      ``lo, hi`` ``(B, R, n)`` int32 clamped indices, ``w_lo, w_hi`` ``(B, R, n)`` weights
      (zeroed for neighbours outside the image).
    """
    step = (end - start) / n
    pos = start[..., None] + (jnp.arange(n, dtype=jnp.float32) + 0.5) * step[..., None] - 0.5
    lo = jnp.floor(pos)
    frac = pos - lo
    lo = lo.astype(jnp.int32)
    hi = lo + 1
    w_lo = jnp.where((lo >= 0) & (lo < size), 1.0 - frac, 0.0)
    w_hi = jnp.where((hi >= 0) & (hi < size), frac, 0.0)
    return jnp.clip(lo, 0, size - 1), jnp.clip(hi, 0, size - 1), w_lo, w_hi


def crop_and_resize(
    images: jax.Array,
    boxes: jax.Array,
    output_size: int | Sequence[int],
    fill_value: float = 0.0,
) -> jax.Array:
    """Bilinear warp of every box of every image to ``output_size`` (see the module docstring).

    Args:
      images: ``(B, H, W, C)`` images (NHWC).
      boxes: ``(B, R, 4)`` ``xyxy`` boxes in pixels of ``images``; any size, possibly
        degenerate or outside the image.
      output_size: ``S`` or ``(oh, ow)``.
      fill_value: the value of pixels outside the image (0: the mean of normalised images).

    Returns:
      ``(B, R, oh, ow, C)`` crops in the dtype of ``images``. Differentiable with respect to
      ``images`` (the boxes get the gradient of the sampling positions).

    Raises:
      ValueError: wrong ranks or mismatched batch sizes.
    """
    check_rank(images, 4, "images (B, H, W, C)")
    check_boxes(boxes, "boxes (B, R, 4)", rank=3)
    check_leading_dims(images, boxes, 1, "images", "boxes")
    oh, ow = _pair(output_size, "output_size")
    images = jnp.asarray(images)
    boxes = jnp.asarray(boxes, jnp.float32)
    b, h, w, c = images.shape
    y_lo, y_hi, wy_lo, wy_hi = _axis(boxes[..., 1], boxes[..., 3], oh, h)
    x_lo, x_hi, wx_lo, wx_hi = _axis(boxes[..., 0], boxes[..., 2], ow, w)
    flat = (images - fill_value).reshape(b, h * w, c)
    compute = jnp.promote_types(images.dtype, jnp.float32)

    def corner(ys, xs, wy, wx):
        index = (ys[..., :, None] * w + xs[..., None, :]).reshape(b, -1)  # (B, R * oh * ow)
        values = jnp.take_along_axis(flat, index[..., None], axis=1, mode="clip")
        values = values.reshape(*ys.shape[:2], oh, ow, c).astype(compute)
        return values * (wy[..., :, None] * wx[..., None, :])[..., None]

    out = (
        corner(y_lo, x_lo, wy_lo, wx_lo)
        + corner(y_lo, x_hi, wy_lo, wx_hi)
        + corner(y_hi, x_lo, wy_hi, wx_lo)
        + corner(y_hi, x_hi, wy_hi, wx_hi)
    )
    return (out + fill_value).astype(images.dtype)
