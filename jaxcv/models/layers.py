"""Building blocks shared by jaxcv's Flax models, with torchvision's numerics.

Layout: activations are NHWC, conv kernels HWIO, dense kernels ``(in, out)``. Every layer takes
``dtype`` (the compute dtype, e.g. ``jnp.bfloat16`` for mixed precision) and ``param_dtype``
(always float32 by default), so parameters and optimizer state stay float32. A config's
``model.dtype`` may be ``"auto"`` (:func:`canonical_dtype`, :func:`auto_dtype`): bfloat16
compute on GPU and TPU, whose matmul units run bfloat16 at several times the float32 rate, and
float32 on CPU, so the same config trains in mixed precision on an accelerator and gives the
float32 results on CPU.

torchvision equivalence:

* Convolutions use explicit symmetric padding (torch's ``padding=k // 2``), not XLA's ``'SAME'``,
  which pads asymmetrically for strided convolutions on even inputs.
* :data:`conv_kernel_init` is ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``; fan-out of
  an HWIO kernel is ``O * kh * kw``, the same number torch computes from OIHW.
* :data:`torch_linear_kernel_init` is the default ``nn.Linear`` weight init (uniform with bound
  ``1 / sqrt(fan_in)``).
* :func:`batch_norm` uses ``momentum = 1 - 0.1`` (flax's momentum is the decay of the running
  average, torch's is the weight of the new batch) and ``epsilon = 1e-5``; statistics live in the
  ``batch_stats`` collection. One known difference: torch updates ``running_var`` with the
  *unbiased* batch variance (``n / (n - 1)`` times larger), flax with the biased one; both
  normalise the batch itself with the biased variance, so train-mode outputs agree.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

#: torch's BatchNorm momentum 0.1 expressed as flax's running-average decay.
TORCH_BN_MOMENTUM = 0.9
#: torch's BatchNorm epsilon.
TORCH_BN_EPSILON = 1e-5

#: ``torch.nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")`` for HWIO kernels.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
#: torch's default ``nn.Linear`` weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_linear_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
#: torchvision VGG's classifier init: N(0, 0.01).
vgg_linear_kernel_init = nn.initializers.normal(stddev=0.01)


def check_images(images: Any, name: str = "images") -> None:
    """Raise ``ValueError`` unless ``images`` is a float ``(B, H, W, C)`` NHWC array.

    Args:
      images: the array a model received.
      name: how the error message calls it.

    Raises:
      ValueError: rank is not 4, the dtype is not floating (e.g. uint8 pixels that skipped the
        pipeline's normalisation), or the shape looks like NCHW ``(B, 1|3, H, W)``.
    """
    shape = tuple(getattr(images, "shape", ()))
    if len(shape) != 4:
        raise ValueError(f"{name} must be NHWC with shape (B, H, W, C); got shape {shape}")
    dtype = jnp.dtype(images.dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"{name} must be a floating array normalised by the input pipeline; got dtype {dtype}"
            f" with shape {shape}"
        )
    if shape[1] in (1, 3) and shape[3] not in (1, 3, 4) and shape[2] > 4:
        raise ValueError(
            f"{name} must be NHWC (B, H, W, C); got shape {shape}, which looks like NCHW "
            "(transpose with images.transpose(0, 2, 3, 1))"
        )


def check_features_and_rois(features: Any, rois: Any) -> None:
    """Raise ``ValueError`` unless ``features`` is ``(B, h, w, C)`` and ``rois`` is
    ``(B, R, 4)`` with the same ``B`` (the inputs of a RoI head)."""
    if features.ndim != 4:
        raise ValueError(f"features must be (B, h, w, C); got shape {features.shape}")
    if rois.ndim != 3 or rois.shape[-1] != 4 or rois.shape[0] != features.shape[0]:
        raise ValueError(
            f"rois must be (B, R, 4) with B = {features.shape[0]}; got shape {rois.shape}"
        )


def conv(
    features: int,
    kernel_size: int,
    strides: int = 1,
    *,
    padding: int | str | None = None,
    use_bias: bool = False,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    name: str | None = None,
) -> nn.Conv:
    """A square 2-D convolution with torch-style symmetric padding.

    Args:
      features: output channels ``C_out``.
      kernel_size: ``k`` for a ``k x k`` kernel.
      strides: the stride in both directions.
      padding: pixels of zero padding on every side (default ``k // 2``, torch's usual choice),
        or a flax padding string (``'SAME'``, ``'VALID'``).
      use_bias: whether to add a bias (torchvision's convs before BatchNorm have none).
      dtype: compute dtype.
      param_dtype: parameter dtype.
      name: the module name (the parameter path).

    Returns:
      An ``nn.Conv`` mapping ``(B, H, W, C_in)`` to ``(B, H', W', C_out)``.
    """
    if padding is None:
        padding = kernel_size // 2
    pad = padding if isinstance(padding, str) else ((padding, padding), (padding, padding))
    return nn.Conv(
        features,
        (kernel_size, kernel_size),
        strides=(strides, strides),
        padding=pad,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=conv_kernel_init,
        name=name,
    )


def batch_norm(
    train: bool,
    *,
    zero_init: bool = False,
    axis_name: str | None = None,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    name: str | None = None,
) -> nn.BatchNorm:
    """BatchNorm over the channel axis with torch's momentum and epsilon.

    Args:
      train: use (and update) batch statistics when True; running averages when False.
      zero_init: initialise the scale (gamma) to zero, e.g. the last BN of a residual block.
      axis_name: a pmap/shard_map axis to average batch statistics over, or None.
      dtype: compute dtype (statistics are reduced in float32 regardless).
      param_dtype: parameter dtype.
      name: the module name.

    Returns:
      An ``nn.BatchNorm`` mapping ``(B, H, W, C)`` to the same shape.
    """
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=TORCH_BN_MOMENTUM,
        epsilon=TORCH_BN_EPSILON,
        scale_init=nn.initializers.zeros if zero_init else nn.initializers.ones,
        axis_name=axis_name,
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
    )


def max_pool(x: jnp.ndarray, window: int, strides: int, padding: int = 0) -> jnp.ndarray:
    """``torch.nn.MaxPool2d(window, strides, padding)`` on NHWC input (pads with -inf).

    Args:
      x: ``(B, H, W, C)``.
      window: square window size.
      strides: stride in both directions.
      padding: pixels of -inf padding on every side.

    Returns:
      ``(B, (H + 2p - window) // strides + 1, (W + 2p - window) // strides + 1, C)``.
    """
    if x.ndim != 4:
        raise ValueError(f"max_pool expects (B, H, W, C); got shape {x.shape}")
    pad = ((padding, padding), (padding, padding))
    return nn.max_pool(x, (window, window), strides=(strides, strides), padding=pad)


def _adaptive_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
    """``(out_size, in_size)`` averaging weights of torch's adaptive average pooling."""
    weights = np.zeros((out_size, in_size), np.float32)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)  # ceil((i + 1) * in / out)
        weights[i, start:end] = 1.0 / (end - start)
    return weights


def adaptive_avg_pool(x: jnp.ndarray, output_size: Sequence[int]) -> jnp.ndarray:
    """``torch.nn.AdaptiveAvgPool2d(output_size)`` on NHWC input, exactly.

    Output cell ``i`` averages input rows ``floor(i H / h) .. ceil((i + 1) H / h) - 1`` (bins may
    overlap, and repeat inputs when ``h > H``). Implemented as two small averaging matmuls.

    Args:
      x: ``(B, H, W, C)``.
      output_size: ``(h, w)``.

    Returns:
      ``(B, h, w, C)`` in ``x``'s dtype.
    """
    if x.ndim != 4:
        raise ValueError(f"adaptive_avg_pool expects (B, H, W, C); got shape {x.shape}")
    out_h, out_w = (int(s) for s in output_size)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"adaptive_avg_pool output_size must be positive; got {output_size}")
    _, in_h, in_w, _ = x.shape
    if (in_h, in_w) == (out_h, out_w):
        return x
    if out_h == 1 and out_w == 1:
        return jnp.mean(x, axis=(1, 2), keepdims=True)
    rows = jnp.asarray(_adaptive_pool_matrix(in_h, out_h), x.dtype)
    cols = jnp.asarray(_adaptive_pool_matrix(in_w, out_w), x.dtype)
    return jnp.einsum("oh,bhwc,pw->bopc", rows, x, cols)


#: The compute dtype ``"auto"`` gives per jax platform (:func:`auto_dtype`); others: float32.
AUTO_DTYPES = {"gpu": jnp.bfloat16, "cuda": jnp.bfloat16, "rocm": jnp.bfloat16, "tpu": jnp.bfloat16}


def auto_dtype(platform: str | None = None) -> jnp.dtype:
    """The compute dtype of ``"auto"`` on ``platform`` (default: jax's default backend):
    bfloat16 on GPU/TPU (fast bfloat16 matmuls; parameters stay float32), else float32."""
    platform = platform or jax.default_backend()
    return jnp.dtype(AUTO_DTYPES.get(platform.lower(), jnp.float32))


def canonical_dtype(dtype: Any) -> jnp.dtype:
    """Turn ``"float32"``, ``"bfloat16"``, ``jnp.bfloat16``... into a floating ``jnp.dtype``;
    ``"auto"`` is :func:`auto_dtype` of the default backend (bfloat16 on GPU/TPU, float32 on
    CPU)."""
    if isinstance(dtype, str) and dtype == "auto":
        return auto_dtype()
    try:
        result = jnp.dtype(dtype)
    except TypeError as err:
        raise ValueError(f"not a dtype: {dtype!r}") from err
    if not jnp.issubdtype(result, jnp.floating):
        raise ValueError(f"compute dtype must be floating (float32 or bfloat16); got {dtype!r}")
    return result
