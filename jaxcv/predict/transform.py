"""torchvision's ``GeneralizedRCNNTransform`` at test time, on the host in NumPy.

What torchvision's detectors do to a list of images before the network and to the boxes after
it (``torchvision/models/detection/transform.py``, ``eval`` mode), step by step:

1. :func:`normalize`: ``(image - mean) / std`` per channel on ``[0, 1]`` floats (uint8 pixels
   are divided by 255 first), ImageNet's mean ``(0.485, 0.456, 0.406)`` and std
   ``(0.229, 0.224, 0.225)``;
2. :func:`resized_size` and :func:`resize_bilinear`: scale so that the shorter side becomes
   ``min_size`` (800) unless the longer would then exceed ``max_size`` (1333); the factor is
   ``min(min_size / short, max_size / long)`` in double precision and the output size
   ``int(side * factor)`` (truncated, as ``F.interpolate(..., recompute_scale_factor=True)``),
   then ``F.interpolate(mode="bilinear", align_corners=False)`` with the factor recomputed from
   the integer sizes, so the pixels are torch's to float32 rounding;
3. :func:`batch_images`: every image of the batch zero-padded (after normalisation) at the
   bottom and right to the batch's largest size rounded up to a multiple of ``size_divisible``
   (32); the network also receives each image's own size (``image_sizes``) for clipping;
4. after the network, :func:`boxes_to_original`: boxes scaled by ``original / resized`` per
   axis (float32 ratios, as ``resize_boxes``), and (Mask R-CNN) :func:`masks_to_original`:
   each ``28 x 28`` mask pasted into an image of the original size at its box, as
   ``paste_masks_in_image`` (``torchvision/models/detection/roi_heads.py``), then thresholded.

Static shapes: the resize runs on the host, so the jitted network sees only the padded batch
``(B, H_pad, W_pad, 3)`` and the ``(B, 2)`` sizes, and returns fixed-size ``28 x 28`` masks;
their paste into each original image (whose size varies) runs on the host too;
:func:`batch_images` can also pad to a fixed ``canvas`` so that every batch has one shape (one
compilation), at the cost of parity near the images' bottom and right borders (see
:mod:`jaxcv.predict.detector`).

:func:`read_image` decodes image files for the CLI with one-line errors.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "batch_images",
    "boxes_to_original",
    "check_image",
    "masks_to_original",
    "normalize",
    "read_image",
    "resize_bilinear",
    "resized_size",
    "transform_images",
]

#: torchvision's detectors' ``image_mean`` / ``image_std`` (ImageNet's).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_image(image: object, name: str = "image") -> np.ndarray:
    """``image`` as an ``(H, W, 3)`` array: uint8 pixels, or floats in ``[0, 1]``.

    Raises:
      ValueError: not an ``(H, W, 3)`` array with ``H, W >= 1`` of uint8 or floating dtype.
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name} must be a NumPy (H, W, 3) array; got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(f"{name} must have shape (H, W, 3) (RGB, HWC); got {image.shape}")
    if image.dtype != np.uint8 and not np.issubdtype(image.dtype, np.floating):
        raise ValueError(
            f"{name} must be uint8 pixels or floats in [0, 1]; got dtype {image.dtype}"
        )
    return image


def normalize(
    image: np.ndarray,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """``(H, W, 3)`` uint8 (divided by 255) or ``[0, 1]`` float -> float32 ``(x - mean) / std``,
    in float32 as torchvision's ``GeneralizedRCNNTransform.normalize``."""
    image = check_image(image)
    x = image.astype(np.float32)
    if image.dtype == np.uint8:
        x = x / np.float32(255.0)
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def resized_size(height: int, width: int, min_size: int = 800, max_size: int = 1333) -> tuple:
    """The ``(h, w)`` torchvision resizes an ``height x width`` image to (test time).

    ``factor = min(min_size / min(H, W), max_size / max(H, W))`` in double precision, then
    ``(int(H * factor), int(W * factor))`` (truncation: ``torch.sym_int`` in ``F.interpolate``
    with ``recompute_scale_factor=True``; a side may come out one pixel short of ``min_size``,
    e.g. 600 -> 799, exactly as torchvision).

    Raises:
      ValueError: a size below 1, or ``min_size`` / ``max_size`` not positive.
    """
    if min(height, width) < 1:
        raise ValueError(f"image size must be positive; got {height} x {width}")
    if min_size < 1 or max_size < 1:
        raise ValueError(f"min_size and max_size must be positive; got {min_size}, {max_size}")
    factor = min(min_size / min(height, width), max_size / max(height, width))
    return int(height * factor), int(width * factor)


def _linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, ...]:
    """ATen's bilinear source indices and weights along one axis (``align_corners=False``,
    no given scale): ``scale = float32(in) / out``, ``src = max(scale * (i + 0.5) - 0.5, 0)``,
    ``i0 = min(floor(src), in - 1)``, ``i1 = min(i0 + 1, in - 1)``, weights ``1 - l, l`` with
    ``l = clip(src - i0, 0, 1)``, all in float32.

    ``src`` is rounded to float32 once, as the fused multiply-add of torch's CPU kernel rounds
    it (the product and difference are exact in float64): rounding the product first, as plain
    float32 arithmetic would, moves ``l`` by up to one float32 step of ``src`` (1.5e-5 at 256),
    i.e. pixels by up to 5e-5 between neighbours that differ by 4 (normalised units)."""
    scale = np.float32(in_size) / np.float32(out_size)
    dst = np.arange(out_size, dtype=np.float64)
    src = (np.float64(scale) * (dst + 0.5) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    lam = np.clip(src - i0.astype(np.float32), 0.0, 1.0).astype(np.float32)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, np.float32(1.0) - lam, lam


def resize_bilinear(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """``F.interpolate(x[None], size, mode="bilinear", align_corners=False)`` on HWC float32.

    Args:
      image: ``(H, W, C)`` float array.
      size: ``(h, w)`` output size.

    Returns:
      ``(h, w, C)`` float32 (separable: rows, then columns).
    """
    if image.ndim != 3 or not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"resize_bilinear expects a float (H, W, C) array; got {image.shape}")
    h, w = (int(s) for s in size)
    if min(h, w) < 1:
        raise ValueError(f"resize_bilinear output size must be positive; got {tuple(size)}")
    x = image.astype(np.float32, copy=False)
    r0, r1, wr0, wr1 = _linear_taps(x.shape[0], h)
    x = x[r0] * wr0[:, None, None] + x[r1] * wr1[:, None, None]
    c0, c1, wc0, wc1 = _linear_taps(x.shape[1], w)
    return x[:, c0] * wc0[None, :, None] + x[:, c1] * wc1[None, :, None]


def batch_images(
    images: Sequence[np.ndarray],
    size_divisible: int = 32,
    canvas: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad normalised images to one batch (torchvision's ``batch_images``).

    Args:
      images: ``(H_i, W_i, C)`` float32 arrays.
      size_divisible: the padded size is a multiple of it.
      canvas: a fixed ``(H, W)`` to pad to instead of the batch's own (must hold every image
        and be a multiple of ``size_divisible``).

    Returns:
      ``batch (B, H_pad, W_pad, C)`` float32 and ``image_sizes (B, 2)`` int32 ``(H_i, W_i)``.

    Raises:
      ValueError: no images, or a canvas that is too small or not a multiple.
    """
    if not images:
        raise ValueError("batch_images needs at least one image; got none")
    sizes = np.array([im.shape[:2] for im in images], np.int32)
    if canvas is None:
        height, width = (
            int(math.ceil(float(m) / size_divisible) * size_divisible) for m in sizes.max(0)
        )
    else:
        height, width = (int(c) for c in canvas)
        if height % size_divisible or width % size_divisible:
            raise ValueError(
                f"canvas {tuple(canvas)} must be a multiple of size_divisible={size_divisible}"
            )
        if np.any(sizes > (height, width)):
            raise ValueError(
                f"canvas {tuple(canvas)} is smaller than a resized image "
                f"{tuple(int(s) for s in sizes.max(0))}"
            )
    batch = np.zeros((len(images), height, width, images[0].shape[-1]), np.float32)
    for b, im in enumerate(images):
        batch[b, : im.shape[0], : im.shape[1]] = im
    return batch, sizes


def transform_images(
    images: Sequence[np.ndarray],
    min_size: int = 800,
    max_size: int = 1333,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    size_divisible: int = 32,
    canvas: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``GeneralizedRCNNTransform(min_size, max_size, mean, std)(images)`` in eval mode.

    Args:
      images: ``(H_i, W_i, 3)`` uint8 or ``[0, 1]`` float RGB images.
      min_size, max_size: the resize rule of :func:`resized_size`.
      mean, std: normalisation.
      size_divisible, canvas: the padding of :func:`batch_images`.

    Returns:
      ``batch (B, H_pad, W_pad, 3)`` float32 and ``image_sizes (B, 2)`` int32 (resized sizes).
    """
    out = []
    for i, image in enumerate(images):
        x = normalize(check_image(image, f"images[{i}]"), mean, std)
        out.append(resize_bilinear(x, resized_size(*x.shape[:2], min_size, max_size)))
    return batch_images(out, size_divisible, canvas)


def boxes_to_original(
    boxes: np.ndarray, resized: Sequence[int], original: Sequence[int]
) -> np.ndarray:
    """torchvision's ``resize_boxes``: ``(n, 4)`` ``xyxy`` in resized pixels -> original pixels,
    x scaled by ``float32(W_orig) / float32(W_resized)`` and y by the heights', in float32."""
    ratio_h, ratio_w = (
        np.float32(o) / np.float32(r) for o, r in zip(original, resized, strict=True)
    )
    scale = np.array([ratio_w, ratio_h, ratio_w, ratio_h], np.float32)
    return np.asarray(boxes, np.float32) * scale


def masks_to_original(
    mask_probs: np.ndarray,
    boxes: np.ndarray,
    original: Sequence[int],
    threshold: float = 0.5,
    padding: int = 1,
) -> np.ndarray:
    """torchvision's ``paste_masks_in_image`` then ``> threshold``, in NumPy on the host.

    Per mask, as torchvision: zero-pad the ``S x S`` mask by ``padding`` pixels, grow its box
    about its centre by ``(S + 2 * padding) / S`` (float32, as ``expand_boxes``), truncate the
    corners to integers, resize the padded mask to the box's ``(y2 - y1 + 1, x2 - x1 + 1)``
    pixels (:func:`resize_bilinear`, torch's bilinear resize) and write the part inside the
    image at the box. :func:`jaxcv.ops.masks.paste_masks_in_image` is the same on device
    for one static image size; here every original size is served without a compilation.

    Args:
      mask_probs: ``(n, S, S)`` float mask probabilities (each detection's label channel).
      boxes: ``(n, 4)`` float32 ``xyxy`` in original pixels (:func:`boxes_to_original`).
      original: ``(H, W)`` of the original image.
      threshold: a pixel is in the mask when its pasted probability exceeds it.
      padding: torchvision's padding (1).

    Returns:
      ``(n, H, W)`` bool masks.
    """
    probs = np.asarray(mask_probs, np.float32)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if probs.ndim != 3 or probs.shape[1] != probs.shape[2] or len(probs) != len(boxes):
        raise ValueError(
            f"mask_probs must be (n, S, S) and boxes (n, 4); got {probs.shape}, {boxes.shape}"
        )
    height, width = (int(s) for s in original)
    side = probs.shape[-1]
    padded = np.pad(probs, ((0, 0), (padding, padding), (padding, padding)))
    scale = np.float32((side + 2 * padding) / side)
    half_w = (boxes[:, 2] - boxes[:, 0]) * np.float32(0.5) * scale
    half_h = (boxes[:, 3] - boxes[:, 1]) * np.float32(0.5) * scale
    x_c = (boxes[:, 2] + boxes[:, 0]) * np.float32(0.5)
    y_c = (boxes[:, 3] + boxes[:, 1]) * np.float32(0.5)
    corners = np.stack([x_c - half_w, y_c - half_h, x_c + half_w, y_c + half_h], 1)
    corners = corners.astype(np.int64)  # truncation toward zero, as torch's .to(int64)
    out = np.zeros((len(probs), height, width), bool)
    for i, (bx1, by1, bx2, by2) in enumerate(corners.tolist()):
        x0, x1 = max(bx1, 0), min(bx2 + 1, width)
        y0, y1 = max(by1, 0), min(by2 + 1, height)
        if x1 <= x0 or y1 <= y0:
            continue
        size = (max(by2 - by1 + 1, 1), max(bx2 - bx1 + 1, 1))
        resized = resize_bilinear(padded[i][:, :, None], size)[:, :, 0]
        out[i, y0:y1, x0:x1] = resized[y0 - by1 : y1 - by1, x0 - bx1 : x1 - bx1] > threshold
    return out


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file (PNG, JPEG, ... as PIL reads them) to ``(H, W, 3)`` uint8 RGB.

    Raises:
      ValueError: one line naming the file: it does not exist, is a directory, is not an image,
        or is too large to decode safely (PIL's decompression-bomb limit, about 179 megapixels).
    """
    from PIL import Image, UnidentifiedImageError

    if os.path.isdir(path):
        raise ValueError(f"cannot read image {path}: is a directory")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), np.uint8)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else e
        raise ValueError(f"cannot read image {path}: {reason}") from e
