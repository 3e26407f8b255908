"""Learnable upsampling by transposed convolution, initialised to exact bilinear interpolation.

FCN's "deconvolution" layers are transposed convolutions of stride ``f`` whose kernel starts as
the bilinear interpolation kernel (Long, Shelhamer & Darrell 2015). Which bilinear
interpolation a kernel implements depends on where the coarse cells sit on the fine grid; this
module supports the two placements that occur in CNNs, and reproduces each *exactly* (borders
included):

* ``"center"``: coarse cell ``i`` of stride ``f`` is centred at fine coordinate
  ``(i + 0.5) f - 0.5``, i.e. output pixel ``p`` samples the input at ``(p + 0.5) / f - 0.5``
  (half-pixel centres). This is the geometry of ``2x2/2`` max-pooling (VGG) and equals
  ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` (tested to float32
  rounding for factors 1-32). The kernel is Caffe's ``upsample_filt`` (the FCN reference
  code): size ``2f - f % 2``, centre ``f - 0.5`` (``f`` even) or ``f - 1`` (``f`` odd).
* ``"corner"``: coarse cell ``i`` sits at fine coordinate ``i f``: pixel ``p`` samples the input
  at ``p / f`` (the legacy ``align_corners=False, half_pixel_centers=False`` resize of TF1).
  This is the geometry of ``k x k`` stride-2 convolutions/pools with padding ``k // 2``
  (ResNet). Kernel size ``2f - 1``, centre ``f - 1``. Tested against a float64 NumPy reference.

The weights are ``1 - |t - centre| / f`` on the diagonal (channel ``c`` -> channel ``c``) and 0
elsewhere. The input is padded by one cell on each side by *edge replication* before the
transposed convolution and the output is cropped to ``(f H, f W)``; with this padding the
border pixels reproduce the references' clamping (a zero-padded transposed convolution
attenuates the outer ``f / 2`` pixels instead). No other crop offsets are involved: the output
pixel ``p`` lies at fine coordinate ``p`` on the grid of the input's stride-``f`` cells.

Transposed-convolution convention: with ``kernel (k, k, C_in, C_out)`` (HWIO) the output is
``out[o] = sum_i x[i] kernel[k - 1 - (o - i f)]`` (``jax.lax.conv_transpose`` with
``transpose_kernel=False``), i.e. ``torch.nn.ConvTranspose2d`` with
``weight = flip(kernel, (0, 1)).transpose(2, 3, 0, 1)``.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

ALIGNMENTS = ("center", "corner")


def _check_factor(factor: int) -> int:
    if not isinstance(factor, int | np.integer) or factor < 1:
        raise ValueError(f"upsampling factor must be a positive int; got {factor!r}")
    return int(factor)


def _check_alignment(alignment: str) -> None:
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}; got {alignment!r}")


def bilinear_kernel_1d(factor: int, alignment: str = "center") -> np.ndarray:
    """The 1-D bilinear interpolation kernel ``(k,)`` float64 of an upsampling by ``factor``.

    Args:
      factor: the stride ``f`` of the transposed convolution.
      alignment: ``"center"`` (size ``2f - f % 2``, Caffe's ``upsample_filt``) or ``"corner"``
        (size ``2f - 1``); see the module docstring.

    Returns:
      ``(k,)`` weights ``1 - |t - centre| / f``, symmetric, each output phase summing to 1.
    """
    f = _check_factor(factor)
    _check_alignment(alignment)
    size = 2 * f - f % 2 if alignment == "center" else 2 * f - 1
    centre = (size - 1) / 2.0
    t = np.arange(size, dtype=np.float64)
    return 1.0 - np.abs(t - centre) / f


def bilinear_kernel(factor: int, channels: int, alignment: str = "center") -> np.ndarray:
    """The HWIO kernel ``(k, k, C, C)`` float32 of per-channel bilinear upsampling by ``factor``.

    Channel ``c`` maps to channel ``c`` with the outer product of :func:`bilinear_kernel_1d`;
    off-diagonal channel pairs are zero.
    """
    if channels < 1:
        raise ValueError(f"channels must be >= 1; got {channels}")
    k1 = bilinear_kernel_1d(factor, alignment)
    kernel = np.zeros((k1.size, k1.size, channels, channels), np.float32)
    kernel[:, :, np.arange(channels), np.arange(channels)] = np.outer(k1, k1)[:, :, None]
    return kernel


def crop_offset(factor: int, alignment: str = "center") -> int:
    """Where the ``f H`` output rows start in the transposed convolution of the edge-padded input.

    With the input padded by one cell, padded cell ``j`` lands at ``j f + centre``; original cell
    ``i`` must land at ``(i + 0.5) f - 0.5`` (``"center"``) or ``i f`` (``"corner"``), so the
    offset is ``f + centre - (f - 1) / 2`` resp. ``f + centre``: ``f + f // 2`` resp. ``2f - 1``.
    """
    f = _check_factor(factor)
    _check_alignment(alignment)
    return f + f // 2 if alignment == "center" else 2 * f - 1


def upsample_transposed(
    x: jax.Array, kernel: jax.Array, factor: int, alignment: str = "center"
) -> jax.Array:
    """Transposed convolution of stride ``factor`` with edge padding and the aligned crop.

    Args:
      x: ``(B, H, W, C_in)``.
      kernel: ``(k, k, C_in, C_out)`` HWIO, ``k`` the size of :func:`bilinear_kernel_1d`.
      factor: the stride ``f``.
      alignment: ``"center"`` or ``"corner"`` (see the module docstring).

    Returns:
      ``(B, f H, f W, C_out)``; with :func:`bilinear_kernel` this is exact bilinear upsampling.
    """
    if x.ndim != 4:
        raise ValueError(f"upsample expects (B, H, W, C); got shape {x.shape}")
    if kernel.ndim != 4 or kernel.shape[0] != kernel.shape[1] or kernel.shape[2] != x.shape[3]:
        raise ValueError(
            f"kernel must be (k, k, C_in={x.shape[3]}, C_out); got shape {kernel.shape}"
        )
    f = _check_factor(factor)
    k = kernel.shape[0]
    expected = bilinear_kernel_1d(f, alignment).size
    if k != expected:
        raise ValueError(
            f"{alignment} upsampling by {f} needs a {expected}x{expected} kernel; got {k}"
        )
    # The transposed convolution is the correlation of the f-dilated, edge-padded input
    # (padded by k - 1 - offset in front) with the kernel: out[f q + r] = sum_j xp[q + j]
    # kernel[f j + lo - r]. Computing it so would multiply k^2 taps, almost all by the
    # dilation's zeros; each output phase r instead has its own taps (J <= 3 of them per axis),
    # so one J x J convolution with f^2 C_out output channels, then depth-to-space, does it
    # (4f^2 / J^2 times fewer multiplications: 455x at f = 32).
    lo = k - 1 - crop_offset(f, alignment)
    # The j with a tap in 0..k-1 for some phase: f j + lo - r >= 0 at r = 0, < k at r = f - 1.
    jmin, jmax = -(lo // f), (k - lo + f - 2) // f
    size = jmax - jmin + 1
    taps = f * np.arange(jmin, jmax + 1)[:, None] + lo - np.arange(f)[None, :]  # (J, f)
    valid = (taps >= 0) & (taps < k)
    t = np.clip(taps, 0, k - 1)
    sub = kernel.astype(x.dtype)[t[:, :, None, None], t[None, None, :, :]]  # (J, f, J, f, I, O)
    mask = (valid[:, :, None, None] & valid[None, None, :, :])[..., None, None]
    c_in, c_out = kernel.shape[2:]
    sub = jnp.where(mask, sub, 0).transpose(0, 2, 4, 1, 3, 5).reshape(size, size, c_in, -1)
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    # xp[q + j] for q < n, j in [jmin, jmin + J): zero outside xp's n + 2 cells.
    (b, h, w), zeros = x.shape[:3], (max(0, -jmin), max(0, jmin + size - 3))
    xz = jnp.pad(xp, ((0, 0), zeros, zeros, (0, 0)))
    start = jmin + zeros[0]
    xz = xz[:, start : start + h + size - 1, start : start + w + size - 1]
    y = jax.lax.conv_general_dilated(
        xz, sub, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    y = y.reshape(b, h, w, f, f, c_out).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(b, h * f, w * f, c_out)


class BilinearUpsample(nn.Module):
    """A learnable transposed convolution initialised to exact bilinear upsampling.

    ``(B, H, W, C) -> (B, f H, f W, C)``; the ``kernel`` parameter is ``(k, k, C, C)`` HWIO
    (:func:`bilinear_kernel` at initialisation), without bias. Freeze it (optimizer ``freeze``
    regex on its path) to keep fixed bilinear interpolation, as FCN does for its last layer.

    Attributes:
      factor: upsampling factor ``f``.
      alignment: ``"center"`` or ``"corner"`` (see the module docstring).
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    factor: int
    alignment: str = "center"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Upsample ``x (B, H, W, C)`` to ``(B, f H, f W, C)``."""
        if x.ndim != 4:
            raise ValueError(f"BilinearUpsample expects (B, H, W, C); got shape {x.shape}")
        channels = x.shape[-1]
        init = lambda key, shape, dtype: jnp.asarray(
            bilinear_kernel(self.factor, channels, self.alignment), dtype
        )
        size = bilinear_kernel_1d(self.factor, self.alignment).size
        kernel = self.param("kernel", init, (size, size, channels, channels), self.param_dtype)
        return upsample_transposed(x.astype(self.dtype), kernel, self.factor, self.alignment)
