"""Fully convolutional networks FCN-32s, FCN-16s and FCN-8s (Long, Shelhamer & Darrell 2015).

A classification network made fully convolutional: ``fc6`` becomes a ``k x k`` convolution
(``k = 7`` for VGG-16, whose ``fc6`` reshapes into a ``(7, 7, 512, 4096)`` kernel; smaller for
small inputs), ``fc7`` a ``1 x 1`` convolution, and a ``1 x 1`` score layer ``score_fr`` gives
coarse class scores at stride 32. Learnable transposed convolutions initialised to bilinear
interpolation (:mod:`jaxcv.models.upsample`) bring them back to the input resolution:

* ``"32s"``: ``upscore32(score_fr)``.
* ``"16s"``: ``upscore16(upscore2(score_fr) + score_pool4(pool4))``.
* ``"8s"``: ``upscore8(upscore_pool4(upscore2(score_fr) + score_pool4(pool4)) +
  score_pool3(pool3))``.

``score_pool4`` and ``score_pool3`` are zero-initialised, so at initialisation the skip
branches contribute exactly nothing (the paper's initialisation of FCN-16s from FCN-32s).

Alignment, without the paper's 100-pixel padding and crop offsets. Every convolution keeps its
size (padding ``k // 2``) and images are zero-padded at the bottom/right to a multiple of 32
(the output is cropped back to ``(H, W)``), so every feature map of stride ``s`` has exactly
``H' / s`` cells and cell ``i`` is a fixed pixel position:

* VGG (``2x2/2`` max-pooling): cell ``i`` of stride ``s`` is centred at pixel
  ``(i + 0.5) s - 0.5``. Upsampling with ``alignment="center"`` maps the stride-32 grid onto
  the stride-16 grid of ``pool4`` (``16 p + 7.5``), the stride-8 grid of ``pool3`` and the
  pixels exactly; at initialisation ``upscore32`` *is* ``F.interpolate(align_corners=False)``.
* ResNet (stride-2 ``3x3``/``7x7`` convs and ``3x3`` pools with padding ``k // 2``): cell ``i``
  sits at pixel ``i s``; upsampling uses ``alignment="corner"``.

Composition. With corner alignment the stride-32 knots are stride-16 knots, so bilinear
``x2`` then ``x16`` equals bilinear ``x32``: at initialisation a ResNet FCN-16s/8s gives exactly
its FCN-32s output. With centre alignment the stride-32 centres fall between stride-16 centres,
and ``x2`` then ``x16`` is a different piecewise-linear interpolation than ``x32`` (no
transposed convolution can make them equal: ``x32``'s knots are not on the stride-16 grid), so
a VGG FCN-16s/8s starts from FCN-32s's scores upsampled through the bilinear chain, again with
exactly zero skip contribution, but not from FCN-32s's output itself.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcv.models.backbones.resnet import RESNET_SPECS, ResNetBackbone
from jaxcv.models.backbones.vgg import VGG16_STAGES, VGGBackbone
from jaxcv.models.layers import check_images, conv_kernel_init
from jaxcv.models.upsample import BilinearUpsample

Dtype = Any

VARIANTS = ("32s", "16s", "8s")
BACKBONES = ("vgg", "resnet")
#: A small VGG-style trunk for CPU experiments: five stages (stride 32), one conv each.
SMALL_VGG_STAGES: tuple[tuple[int, ...], ...] = ((16,), (32,), (64, 64), (96, 96), (128, 128))
STRIDE = 32

#: backbone -> (stride-8, stride-16, stride-32) feature names and the grid alignment.
_FEATURES = {
    "vgg": (("pool3", "pool4", "pool5"), "center"),
    "resnet": (("c3", "c4", "c5"), "corner"),
}


def pad_to_multiple(images: jax.Array, multiple: int) -> jax.Array:
    """Zero-pad ``(B, H, W, C)`` at the bottom/right to ``H, W`` multiples of ``multiple``."""
    h, w = images.shape[1:3]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return images
    return jnp.pad(images, ((0, 0), (0, ph), (0, pw), (0, 0)))


def at_input_scale(logits_fn, images: jax.Array, scale: int) -> jax.Array:
    """``logits_fn`` run on ``images (B, H, W, C)`` bilinearly upsampled by the integer
    ``scale``, its ``(B, sH, sW, K)`` logits averaged over each ``s x s`` block back to
    ``(B, H, W, K)`` (exact alignment with half-pixel centres). ``scale`` 1 runs it as it is."""
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"input_scale must be a positive int; got {scale!r}")
    if scale == 1:
        return logits_fn(images)
    b, h, w, c = images.shape
    out = logits_fn(jax.image.resize(images, (b, h * scale, w * scale, c), "bilinear"))
    return out.reshape(b, h, scale, w, scale, -1).mean(axis=(2, 4))


def _square_conv(
    features: int, kernel: int, name: str, dtype: Dtype, param_dtype: Dtype, zero: bool = False
) -> nn.Conv:
    return nn.Conv(
        features,
        (kernel, kernel),
        padding=((kernel // 2, kernel // 2),) * 2,
        kernel_init=nn.initializers.zeros if zero else conv_kernel_init,
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
    )


class FCN(nn.Module):
    """FCN-32s/16s/8s semantic segmentation network on a VGG or ResNet trunk.

    ``apply(variables, images (B, H, W, C), train=bool, rngs={'dropout': key} when train,
    mutable=['batch_stats'] when train with BatchNorm)`` returns float32 per-pixel logits
    ``(B, H, W, num_classes)``. Any ``H, W >= 1`` (padded internally to multiples of 32). With
    ``mutable=['intermediates']`` the coarse maps are also returned (``coarse_scores (B, H'/32,
    W'/32, K)`` of ``score_fr``, ``fused_pool4``, ``fused_pool3``) for inspection.

    Attributes:
      num_classes: ``K`` output classes, background included (21 for VOC).
      variant: ``"32s"``, ``"16s"`` or ``"8s"``.
      backbone: ``"vgg"`` (:class:`VGGBackbone` with ``stages``; VGG-16 by default, or e.g.
        :data:`SMALL_VGG_STAGES`) or ``"resnet"`` (:class:`ResNetBackbone`, ImageNet stem).
      stages: VGG conv widths per stage (exactly 5 stages: stride 32).
      batch_norm: BatchNorm after every VGG conv.
      resnet_depth: 18, 34 or 50.
      resnet_width: channels of the ResNet stem and first stage (64 in the paper).
      fc_width: channels of ``fc6`` and ``fc7`` (4096 for VGG-16); 0 skips them (the ResNet
        variant then scores ``c5`` directly: its ``fc`` made a ``1 x 1`` convolution).
      fc6_kernel: spatial size of ``fc6`` (7 as in VGG-16's ``fc6``; 1 or 3 for small inputs).
      dropout_rate: dropout after ``fc6`` and ``fc7``.
      input_scale: integer factor the images are bilinearly upsampled by before the trunk;
        the fine logits are then averaged over each ``s x s`` block back to the input size
        (exact alignment with half-pixel centres). 2 halves every stride relative to the
        input (pool3's stride 8 becomes 4 input pixels) at 4x the compute: thin parts and
        corners of small objects get resolved. 1 (default) is the paper's network.
      bn_axis_name: axis to synchronise BatchNorm statistics over under pmap, or None.
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    num_classes: int = 21
    variant: str = "8s"
    backbone: str = "vgg"
    stages: Sequence[Sequence[int]] = VGG16_STAGES
    batch_norm: bool = False
    resnet_depth: int = 18
    resnet_width: int = 64
    fc_width: int = 4096
    fc6_kernel: int = 7
    dropout_rate: float = 0.5
    input_scale: int = 1
    bn_axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self) -> None:
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive int; got {self.num_classes!r}")
        if not isinstance(self.input_scale, int) or self.input_scale < 1:
            raise ValueError(f"input_scale must be a positive int; got {self.input_scale!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}; got {self.variant!r}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}; got {self.backbone!r}")
        if self.fc_width < 0 or self.fc6_kernel < 1 or self.fc6_kernel % 2 == 0:
            raise ValueError(
                f"fc_width must be >= 0 and fc6_kernel odd and >= 1; got fc_width="
                f"{self.fc_width}, fc6_kernel={self.fc6_kernel}"
            )
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        if self.backbone == "vgg":
            if len(self.stages) != 5:
                raise ValueError(
                    f"FCN needs a 5-stage VGG trunk (stride 32); got {len(self.stages)} stages"
                )
            self.trunk = VGGBackbone(
                stages=tuple(tuple(w) for w in self.stages),
                batch_norm=self.batch_norm,
                bn_axis_name=self.bn_axis_name,
                name="backbone",
                **kw,
            )
        else:
            if self.resnet_depth not in RESNET_SPECS:
                raise ValueError(
                    f"resnet_depth must be one of {sorted(RESNET_SPECS)}; got {self.resnet_depth}"
                )
            block_type, sizes = RESNET_SPECS[self.resnet_depth]
            self.trunk = ResNetBackbone(
                stage_sizes=sizes,
                block_type=block_type,
                stem="imagenet",
                width=self.resnet_width,
                num_stages=4,
                bn_axis_name=self.bn_axis_name,
                name="backbone",
                **kw,
            )
        if self.fc_width:
            self.fc6 = _square_conv(self.fc_width, self.fc6_kernel, "fc6", **kw)
            self.fc7 = _square_conv(self.fc_width, 1, "fc7", **kw)
            self.dropout = nn.Dropout(self.dropout_rate)
        k = self.num_classes
        self.score_fr = nn.Conv(k, (1, 1), name="score_fr", **kw)
        align = _FEATURES[self.backbone][1]
        up = lambda f, name: BilinearUpsample(f, align, name=name, **kw)
        if self.variant == "32s":
            self.upscore32 = up(32, "upscore32")
        else:
            self.upscore2 = up(2, "upscore2")
            self.score_pool4 = _square_conv(k, 1, "score_pool4", zero=True, **kw)
        if self.variant == "16s":
            self.upscore16 = up(16, "upscore16")
        if self.variant == "8s":
            self.upscore_pool4 = up(2, "upscore_pool4")
            self.score_pool3 = _square_conv(k, 1, "score_pool3", zero=True, **kw)
            self.upscore8 = up(8, "upscore8")

    def features(self, images: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        """The trunk's named feature maps of the padded images (see the backbone docs)."""
        return self.trunk(pad_to_multiple(images, STRIDE), train)

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

    def _logits(self, images: jax.Array, train: bool) -> jax.Array:
        """``(B, H, W, K)`` float32 logits at the resolution of ``images``."""
        h, w = images.shape[1:3]
        feats = self.features(images, train)
        (s8, s16, s32), _ = _FEATURES[self.backbone]
        x = feats[s32]
        if self.fc_width:
            x = self.dropout(nn.relu(self.fc6(x)), deterministic=not train)
            x = self.dropout(nn.relu(self.fc7(x)), deterministic=not train)
        score = self.score_fr(x)
        self.sow("intermediates", "coarse_scores", score)
        if self.variant == "32s":
            out = self.upscore32(score)
        else:
            score = self.upscore2(score) + self.score_pool4(feats[s16])
            self.sow("intermediates", "fused_pool4", score)
            if self.variant == "16s":
                out = self.upscore16(score)
            else:
                score = self.upscore_pool4(score) + self.score_pool3(feats[s8])
                self.sow("intermediates", "fused_pool3", score)
                out = self.upscore8(score)
        return out[:, :h, :w].astype(jnp.float32)


class FCN32s(FCN):
    """FCN-32s: one stride-32 upsampling of the scores."""

    variant: str = "32s"


class FCN16s(FCN):
    """FCN-16s: stride-32 scores fused with ``pool4`` scores, then upsampled by 16."""

    variant: str = "16s"


class FCN8s(FCN):
    """FCN-8s: fused with ``pool4`` and ``pool3`` scores, then upsampled by 8."""

    variant: str = "8s"
