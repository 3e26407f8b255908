"""DeconvNet (Noh, Hong & Han 2015): max-pool switches, unpooling and transposed convolutions.

The encoder is a VGG-style trunk whose ``2x2/2`` max-pools remember *where* each maximum came
from (the "switches"); ``fc6`` is a ``k x k`` valid convolution and ``fc7`` a ``1 x 1``. The
decoder mirrors it: a ``k x k`` transposed convolution undoes ``fc6``, then for each stage in
reverse order an unpooling layer puts every value back at its switch position (zeros
elsewhere) and ``3x3`` transposed convolutions (with BatchNorm and ReLU) densify the sparse
map; a ``1 x 1`` convolution scores the classes at full resolution.

Switches are stored as the window-local position ``dy * 2 + dx`` in ``0..3`` (int32, same shape
as the pooled map); unpooling is an equality/one-hot formulation with static shapes (no
scatter), so it compiles once and differentiates as the transpose of the pooling selection.
Ties pick the first maximum in row-major window order, like ``torch.nn.functional.max_pool2d``
(``return_indices=True``). Odd sizes follow torch's floor mode: the last row/column is dropped
by pooling and comes back as zeros from unpooling.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcv.models.fcn import at_input_scale
from jaxcv.models.layers import batch_norm, check_images, conv, conv_kernel_init

Dtype = Any

#: A small encoder for CPU experiments: five stages (stride 32).
SMALL_DECONVNET_STAGES: tuple[tuple[int, ...], ...] = (
    (16,),
    (32,),
    (64, 64),
    (96, 96),
    (128, 128),
)
#: The paper's encoder: VGG-16's conv layers.
DECONVNET_VGG16_STAGES: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)


def _check_nhwc(x: jax.Array, name: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} expects (B, H, W, C); got shape {x.shape}")


def max_pool_with_switches(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``2x2/2`` max-pooling that also returns the position of each maximum.

    Args:
      x: ``(B, H, W, C)`` with ``H, W >= 2``.

    Returns:
      ``pooled (B, H // 2, W // 2, C)`` and ``switches (B, H // 2, W // 2, C)`` int32 in
      ``0..3``: the window-local position ``dy * 2 + dx`` of the (first) maximum.
    """
    _check_nhwc(x, "max_pool_with_switches")
    b, h, w, c = x.shape
    if h < 2 or w < 2:
        raise ValueError(f"max_pool_with_switches needs H, W >= 2; got shape {x.shape}")
    ho, wo = h // 2, w // 2
    windows = x[:, : 2 * ho, : 2 * wo].reshape(b, ho, 2, wo, 2, c)
    windows = windows.transpose(0, 1, 3, 5, 2, 4).reshape(b, ho, wo, c, 4)
    switches = jnp.argmax(windows, axis=-1).astype(jnp.int32)
    pooled = jnp.take_along_axis(windows, switches[..., None], axis=-1)[..., 0]
    return pooled, switches


def max_unpool(x: jax.Array, switches: jax.Array, output_hw: Sequence[int]) -> jax.Array:
    """Place each value of ``x`` at its switch position in a ``2x2`` window, zeros elsewhere.

    Args:
      x: ``(B, h, w, C)`` values, e.g. a decoder feature map.
      switches: ``(B, h, w, C)`` int window positions from :func:`max_pool_with_switches`.
      output_hw: ``(H, W)`` of the map that was pooled (``H // 2 == h``, ``W // 2 == w``).

    Returns:
      ``(B, H, W, C)``; an odd last row/column is zero.
    """
    _check_nhwc(x, "max_unpool")
    if switches.shape != x.shape:
        raise ValueError(f"switches must have the shape of x {x.shape}; got shape {switches.shape}")
    out_h, out_w = (int(s) for s in output_hw)
    b, h, w, c = x.shape
    if out_h // 2 != h or out_w // 2 != w:
        raise ValueError(
            f"output_hw {(out_h, out_w)} does not pool to the input's (h, w) = {(h, w)}"
        )
    onehot = switches[..., None] == jnp.arange(4, dtype=switches.dtype)
    windows = jnp.where(onehot, x[..., None], jnp.zeros((), x.dtype))  # (B, h, w, C, 4)
    out = windows.reshape(b, h, w, c, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(b, 2 * h, 2 * w, c)
    return jnp.pad(out, ((0, 0), (0, out_h - 2 * h), (0, out_w - 2 * w), (0, 0)))


class DeconvNet(nn.Module):
    """DeconvNet semantic segmentation network.

    ``apply(variables, images (B, H, W, C), train=bool, rngs={'dropout': key} when train,
    mutable=['batch_stats'] when train with BatchNorm)`` returns float32 per-pixel logits
    ``(B, H, W, num_classes)``. ``H, W`` must leave a last pooled map of at least
    ``fc6_kernel x fc6_kernel`` (e.g. 224 with the paper's 5 stages and ``fc6_kernel=7``; 128
    with ``fc6_kernel=4``).

    Attributes:
      num_classes: ``K`` output classes, background included.
      stages: encoder conv widths per stage; a ``2x2/2`` switch pool follows each stage.
      batch_norm: BatchNorm after every conv and transposed conv (as in the paper).
      fc_width: channels of ``fc6`` and ``fc7`` (4096 in the paper).
      fc6_kernel: ``fc6``'s valid ``k x k`` kernel (7 in the paper: 7x7 -> 1x1).
      dropout_rate: dropout after ``fc6`` and ``fc7``.
      input_scale: integer factor the images are bilinearly upsampled by before the network;
        the logits are averaged over each ``s x s`` block back to the input size, as
        :class:`jaxcv.models.fcn.FCN`'s ``input_scale`` (1: the paper's network).
      bn_axis_name: axis to synchronise BatchNorm statistics over under pmap, or None.
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    num_classes: int = 21
    stages: Sequence[Sequence[int]] = DECONVNET_VGG16_STAGES
    batch_norm: bool = True
    fc_width: int = 4096
    fc6_kernel: int = 7
    dropout_rate: float = 0.5
    input_scale: int = 1
    bn_axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def _bn_relu(self, x: jax.Array, train: bool, name: str) -> jax.Array:
        if self.batch_norm:
            x = batch_norm(
                train,
                axis_name=self.bn_axis_name,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=name,
            )(x)
        return nn.relu(x)

    def _deconv(self, features: int, kernel: int, name: str, padding: Any) -> nn.ConvTranspose:
        return nn.ConvTranspose(
            features,
            (kernel, kernel),
            padding=padding,
            use_bias=not self.batch_norm,
            kernel_init=conv_kernel_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )

    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        """Per-pixel class logits.

        Args:
          images: ``(B, H, W, C)`` float images.
          train: dropout on and BatchNorm batch statistics.

        Returns:
          ``(B, H, W, num_classes)`` float32 logits.
        """
        check_images(images)
        return at_input_scale(lambda x: self._logits(x, train), images, self.input_scale)

    @nn.compact
    def _logits(self, images: jax.Array, train: bool) -> jax.Array:
        """``(B, H, W, K)`` float32 logits at the resolution of ``images``."""
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive int; got {self.num_classes!r}")
        if not self.stages:
            raise ValueError("DeconvNet needs at least one encoder stage")
        size = list(images.shape[1:3])
        for _ in self.stages:
            size = [s // 2 for s in size]
        if min(size) < self.fc6_kernel:
            raise ValueError(
                f"images of shape {images.shape} pool to {tuple(size)} after {len(self.stages)} "
                f"stages, smaller than fc6_kernel={self.fc6_kernel}"
            )
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        x = images
        pools = []  # (pre-pool (H, W), switches) per stage
        for s, widths in enumerate(self.stages, start=1):
            for i, width in enumerate(widths, start=1):
                x = conv(width, 3, 1, use_bias=not self.batch_norm, name=f"conv{s}_{i}", **kw)(x)
                x = self._bn_relu(x, train, f"bn{s}_{i}")
            hw = x.shape[1:3]
            x, switches = max_pool_with_switches(x)
            pools.append((hw, switches))
        top = x.shape[-1]
        drop = nn.Dropout(self.dropout_rate)
        k = self.fc6_kernel
        x = nn.Conv(self.fc_width, (k, k), padding="VALID", name="fc6", **kw)(x)
        x = drop(self._bn_relu(x, train, "bn_fc6"), deterministic=not train)
        x = nn.Conv(self.fc_width, (1, 1), name="fc7", **kw)(x)
        x = drop(self._bn_relu(x, train, "bn_fc7"), deterministic=not train)
        x = self._deconv(top, k, "deconv_fc6", "VALID")(x)
        x = self._bn_relu(x, train, "bn_deconv_fc6")
        for s in range(len(self.stages), 0, -1):
            hw, switches = pools[s - 1]
            x = max_unpool(x, switches, hw)
            widths = list(self.stages[s - 1])
            outs = [*widths[:-1][::-1], self.stages[s - 2][-1] if s > 1 else widths[0]]
            for i, width in zip(range(len(widths), 0, -1), outs, strict=True):
                x = self._deconv(width, 3, f"deconv{s}_{i}", ((1, 1), (1, 1)))(x)
                x = self._bn_relu(x, train, f"bn_deconv{s}_{i}")
        return nn.Conv(self.num_classes, (1, 1), name="score", **kw)(x).astype(jnp.float32)
