"""Colour spaces and per-region histograms for selective search (Uijlings et al. 2013, sec. 3.2).

Everything here is host-side NumPy (the per-pixel loops in numba) on one image. Images are
``(H, W, 3)`` RGB float64 in ``[0, 1]``; colour-space conversions return ``(H, W, C)`` float64
in ``[0, 1]`` per channel so that fixed-range histograms and Felzenszwalb's threshold ``k`` mean
the same in every space.

Region descriptors (one row per region of an integer label map):

* colour: ``COLOUR_BINS = 25`` bins per channel over ``[0, 1]``, ``(R, 25 C)``, L1-normalised;
* texture: first-order Gaussian derivatives (``sigma = 1``) in ``8`` orientations per channel,
  ``TEXTURE_BINS = 10`` bins per channel and orientation, ``(R, 80 C)``, L1-normalised.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import color

COLOUR_BINS = 25
TEXTURE_BINS = 10
TEXTURE_ORIENTATIONS = 8
TEXTURE_SIGMA = 1.0

#: Colour spaces of the paper's diversification strategies (sec. 3.2 / 5.2).
COLOUR_SPACES = ("rgb", "hsv", "lab", "rgi", "h", "i")


def as_float_rgb(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 (0..255) or float (0..1) RGB -> ``(H, W, 3)`` float64 in ``[0, 1]``.

    Raises:
      ValueError: not ``(H, W, 3)``, empty, a float image outside ``[0, 1]`` or non-finite.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image must be non-empty, got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float64) / 255.0
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"image must be uint8 or float in [0, 1], got dtype {image.dtype}")
    image = image.astype(np.float64)
    if not np.all(np.isfinite(image)) or image.min() < 0.0 or image.max() > 1.0:
        raise ValueError(
            f"float images must hold finite values in [0, 1], got range "
            f"[{image.min()}, {image.max()}]"
        )
    return image


def convert_colour(rgb: np.ndarray, space: str) -> np.ndarray:
    """``(H, W, 3)`` RGB in ``[0, 1]`` -> ``(H, W, C)`` float64 in ``[0, 1]`` in ``space``.

    Spaces: ``rgb``; ``hsv``; ``lab`` (``L / 100``, ``(a + 128) / 255``, ``(b + 128) / 255``);
    ``rgi`` (normalised ``r = R / (R + G + B)``, ``g``, and intensity ``I``); ``h`` (hue only,
    ``C = 1``); ``i`` (intensity ``(R + G + B) / 3``, ``C = 1``).
    """
    if space == "rgb":
        out = rgb
    elif space == "hsv":
        out = color.rgb2hsv(rgb)
    elif space == "lab":
        lab = color.rgb2lab(rgb)
        out = np.stack(
            [lab[..., 0] / 100.0, (lab[..., 1] + 128.0) / 255.0, (lab[..., 2] + 128.0) / 255.0],
            axis=-1,
        )
    elif space == "rgi":
        total = rgb.sum(axis=-1)
        safe = np.where(total > 0, total, 1.0)
        # black pixels have no chromaticity: give them the grey point (1/3, 1/3)
        r = np.where(total > 0, rgb[..., 0] / safe, 1.0 / 3.0)
        g = np.where(total > 0, rgb[..., 1] / safe, 1.0 / 3.0)
        out = np.stack([r, g, total / 3.0], axis=-1)
    elif space == "h":
        out = color.rgb2hsv(rgb)[..., :1]
    elif space == "i":
        out = rgb.mean(axis=-1, keepdims=True)
    else:
        raise ValueError(f"unknown colour space {space!r}; valid: {list(COLOUR_SPACES)}")
    return np.clip(out, 0.0, 1.0)


def oriented_gradients(image: np.ndarray) -> np.ndarray:
    """Gaussian derivative responses ``(H, W, C, 8)``, non-negative, of an ``(H, W, C)`` image.

    Orientation ``o`` is the first derivative (``sigma = TEXTURE_SIGMA``) along the direction
    ``theta_o = o * pi / 4``, rectified (``max(d, 0)``): orientations ``o`` and ``o + 4`` are
    the two signs of the same axis, so the 8 responses are the paper's 8 orientations.
    """
    if image.ndim != 3:
        raise ValueError(f"image must be (H, W, C), got shape {image.shape}")
    out = np.empty((*image.shape, TEXTURE_ORIENTATIONS), dtype=np.float64)
    dx, dy = _derivatives(image)
    for o, (cos, sin) in enumerate(zip(*_orientations(), strict=True)):
        out[..., o] = np.maximum(cos * np.moveaxis(dx, 0, -1) + sin * np.moveaxis(dy, 0, -1), 0.0)
    return out


def l1_normalise(hist: np.ndarray) -> np.ndarray:
    """Rows of ``(R, D)`` divided by their sum (all-zero rows stay zero)."""
    total = hist.sum(axis=-1, keepdims=True)
    return hist / np.where(total > 0, total, 1.0)


def _id_dtype(width: int) -> type:
    return np.uint8 if width <= 256 else np.int64


def colour_bin_ids(image: np.ndarray) -> tuple[np.ndarray, int]:
    """Colour-histogram bin of every pixel and channel: ``(H * W, C)`` ids in ``0..25 C - 1``.

    Returns the ids (uint8 for up to 10 channels) and the histogram width ``COLOUR_BINS * C``.
    """
    from jaxcv.proposals import _compiled

    h, w, c = image.shape
    if not (image.min() >= 0.0 and image.max() <= 1.0):  # NaN fails too
        raise ValueError("colour values must lie in [0, 1]")
    width = COLOUR_BINS * c
    out = np.empty((h * w, c), _id_dtype(width))
    values = np.ascontiguousarray(image, np.float64).reshape(h * w, c)
    _compiled.fixed_range_bin_ids(values, COLOUR_BINS, out)
    return out, width


def _derivatives(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First Gaussian derivatives ``d/dx``, ``d/dy`` (``sigma = TEXTURE_SIGMA``), ``(C, H, W)``."""
    image = np.asarray(image, np.float64)
    dx = np.empty(np.roll(image.shape, 1))
    dy = np.empty_like(dx)
    for c in range(image.shape[-1]):
        channel = image[..., c]
        dy[c] = ndimage.gaussian_filter(channel, TEXTURE_SIGMA, order=(1, 0), mode="nearest")
        dx[c] = ndimage.gaussian_filter(channel, TEXTURE_SIGMA, order=(0, 1), mode="nearest")
    return dx, dy


def _orientations() -> tuple[np.ndarray, np.ndarray]:
    thetas = np.arange(TEXTURE_ORIENTATIONS) * (2 * np.pi / TEXTURE_ORIENTATIONS)
    return np.cos(thetas), np.sin(thetas)


def texture_bin_ids(image: np.ndarray) -> tuple[np.ndarray, int]:
    """Texture-histogram bins ``(H * W, 8 C)`` of every pixel, channel and orientation.

    Each channel/orientation response of :func:`oriented_gradients` is binned over ``[0, m_c]``
    where ``m_c`` is the largest response of channel ``c`` in the image (bins are shared by all
    regions of an image, which is all the similarity needs). Returns the ids (uint8 for up to 3
    channels) and the histogram width ``TEXTURE_BINS * 8 * C``. The responses are not stored:
    a compiled loop bins them as it computes them.
    """
    from jaxcv.proposals import _compiled

    h, w, c = image.shape
    dx, dy = _derivatives(image)
    if not (np.isfinite(dx).all() and np.isfinite(dy).all()):
        raise ValueError("image values must be finite")
    width = TEXTURE_BINS * TEXTURE_ORIENTATIONS * c
    out = np.empty((h * w, TEXTURE_ORIENTATIONS * c), _id_dtype(width))
    cosines, sines = _orientations()
    _compiled.oriented_bin_ids(
        dx.reshape(c, h * w), dy.reshape(c, h * w), cosines, sines, TEXTURE_BINS, out
    )
    return out, width


def region_histograms(
    labels: np.ndarray, num_regions: int, bin_ids: np.ndarray, width: int
) -> np.ndarray:
    """L1-normalised histograms ``(R, width)`` of per-pixel ``bin_ids (H * W, F)`` by region.

    Args:
      labels: ``(H, W)`` int region ids in ``0..R-1``.
      num_regions: ``R``.
      bin_ids: ``(H * W, F)`` histogram bins in ``0..width-1`` (from :func:`colour_bin_ids` or
        :func:`texture_bin_ids`).
      width: histogram length ``D``.
    """
    from jaxcv.proposals import _compiled

    return _compiled.region_histograms(
        np.ascontiguousarray(labels, np.int64).reshape(-1),
        int(num_regions),
        np.ascontiguousarray(bin_ids),
        int(width),
    )


def colour_histograms(image: np.ndarray, labels: np.ndarray, num_regions: int) -> np.ndarray:
    """L1-normalised colour histograms ``(R, 25 C)`` of the regions of ``labels (H, W)``.

    ``image`` is ``(H, W, C)`` float in ``[0, 1]``; 25 bins per channel over ``[0, 1]``.
    """
    return region_histograms(labels, num_regions, *colour_bin_ids(image))


def texture_histograms(image: np.ndarray, labels: np.ndarray, num_regions: int) -> np.ndarray:
    """L1-normalised texture histograms ``(R, 80 C)`` of the regions of ``labels (H, W)``."""
    return region_histograms(labels, num_regions, *texture_bin_ids(image))


def region_sizes_and_boxes(labels: np.ndarray, num_regions: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel counts ``(R,)`` int64 and boxes ``(R, 4)`` int64 xyxy (pixel edges) of regions.

    A region covering columns 10..19 gets ``x1 = 10, x2 = 20``.
    """
    sizes = np.bincount(labels.reshape(-1), minlength=num_regions).astype(np.int64)
    boxes = np.zeros((num_regions, 4), dtype=np.int64)
    for region, found in enumerate(ndimage.find_objects(labels + 1, max_label=num_regions)):
        if found is not None:
            rows, cols = found
            boxes[region] = (cols.start, rows.start, cols.stop, rows.stop)
    return sizes, boxes


def adjacent_pairs(labels: np.ndarray) -> np.ndarray:
    """Unique pairs ``(E, 2)`` int64, ``a < b``, of regions sharing a 4-connected pixel edge."""
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {labels.shape}")
    from jaxcv.proposals import _compiled

    stride = int(labels.max()) + 1 if labels.size else 1
    codes = np.unique(_compiled.boundary_codes(np.ascontiguousarray(labels, np.int64), stride))
    return np.stack(np.divmod(codes, stride), axis=1).reshape(-1, 2)  # sorted (a, b) rows
