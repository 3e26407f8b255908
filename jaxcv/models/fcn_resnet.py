"""torchvision's FCN-ResNet50: a dilated ResNet-50 trunk, an ``FCNHead`` and bilinear upsampling.

This is the segmentation model of ``torchvision.models.segmentation.fcn_resnet50`` (not the
paper's skip-connected FCN-8s of :mod:`jaxcv.models.fcn`), so its checkpoints convert one to one
(:mod:`jaxcv.models.convert`):

* trunk: ResNet-50 with the strides of ``layer3`` and ``layer4`` replaced by dilation 2 and 4
  (``replace_stride_with_dilation=(False, True, True)``): ``c5`` has stride 8, 2048 channels.
* ``classifier`` (torchvision's ``FCNHead(2048, K)``): 3x3 conv 2048 -> 512 (no bias), BatchNorm,
  ReLU, dropout 0.1, 1x1 conv 512 -> K (bias).
* ``aux_classifier`` (``aux=True``; ``FCNHead(1024, K)`` on ``c4``): the same with 256 channels.
* both score maps are resized to the input ``(H, W)`` with bilinear interpolation, half-pixel
  centres (``F.interpolate(mode="bilinear", align_corners=False)``).

Parameter paths: ``backbone/...`` as :class:`jaxcv.models.backbones.ResNetBackbone`,
``classifier/{conv,bn,score}`` and ``aux_classifier/{conv,bn,score}`` (torchvision's
``classifier.{0,1,4}``).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcv.models.backbones.resnet import RESNET_SPECS, ResNetBackbone
from jaxcv.models.layers import batch_norm, check_images, conv

Dtype = Any


class FCNHead(nn.Module):
    """torchvision's ``FCNHead``: ``(B, h, w, C) -> (B, h, w, num_classes)`` scores.

    3x3 conv to ``C // 4`` channels (no bias), BatchNorm, ReLU, dropout, 1x1 conv with bias.
    """

    num_classes: int
    dropout_rate: float = 0.1
    bn_axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if x.ndim != 4:
            raise ValueError(f"FCNHead expects (B, h, w, C); got shape {x.shape}")
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        inter = x.shape[-1] // 4
        x = conv(inter, 3, 1, padding=1, name="conv", **kw)(x)
        x = batch_norm(train, axis_name=self.bn_axis_name, name="bn", **kw)(x)
        x = nn.Dropout(self.dropout_rate)(nn.relu(x), deterministic=not train)
        return conv(self.num_classes, 1, 1, padding=0, use_bias=True, name="score", **kw)(x)


def resize_bilinear(x: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)`` on NHWC ``(B, h, w, C)``.

    For upsampling, ``jax.image.resize``'s triangle kernel with half-pixel centres renormalised
    at the borders is torch's interpolation with source coordinates clamped to the image.
    """
    b, _, _, c = x.shape
    return jax.image.resize(x, (b, int(size[0]), int(size[1]), c), "bilinear")


class FCNResNet(nn.Module):
    """torchvision's FCN-ResNet segmentation model (see the module docstring).

    ``apply(variables, images (B, H, W, C), train=bool, rngs={'dropout': key} when train,
    mutable=['batch_stats'] when train)`` returns float32 logits ``(B, H, W, num_classes)``
    (torchvision's ``out``); ``apply(..., method="outputs")`` returns ``{"out": ..., "aux":
    ...}`` (``aux`` only with ``aux=True``). With ``aux=True``, ``__call__`` evaluates the auxiliary
    head too (so its parameters exist and train); under jit its unused result is dropped.

    Attributes:
      num_classes: classes including background (21 for torchvision's VOC-label checkpoints).
      depth: ResNet depth (50; bottleneck blocks are needed for dilation).
      aux: build torchvision's auxiliary head on ``c4`` (``aux_loss=True`` checkpoints).
      dropout_rate: dropout in the heads (torchvision's 0.1).
      bn_axis_name: axis to synchronise BatchNorm statistics over under pmap, or None.
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    num_classes: int = 21
    depth: int = 50
    aux: bool = False
    dropout_rate: float = 0.1
    bn_axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self) -> None:
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive int; got {self.num_classes!r}")
        if self.depth not in RESNET_SPECS or RESNET_SPECS[self.depth][0] != "bottleneck":
            valid = [d for d, (b, _) in RESNET_SPECS.items() if b == "bottleneck"]
            raise ValueError(
                f"FCNResNet needs a bottleneck ResNet depth in {valid}; got {self.depth}"
            )
        block, sizes = RESNET_SPECS[self.depth]
        kw = {
            "bn_axis_name": self.bn_axis_name,
            "dtype": self.dtype,
            "param_dtype": self.param_dtype,
        }
        self.backbone = ResNetBackbone(
            stage_sizes=sizes,
            block_type=block,
            replace_stride_with_dilation=(False, True, True),
            **kw,
        )
        self.classifier = FCNHead(self.num_classes, self.dropout_rate, **kw)
        if self.aux:
            self.aux_classifier = FCNHead(self.num_classes, self.dropout_rate, **kw)

    def features(self, images: jnp.ndarray, train: bool = False) -> dict[str, jnp.ndarray]:
        """The trunk's named feature maps: ``c2`` stride 4, ``c3``/``c4``/``c5`` stride 8."""
        return self.backbone(images, train)

    def outputs(self, images: jnp.ndarray, train: bool = False) -> dict[str, jnp.ndarray]:
        """``{"out": (B, H, W, K)[, "aux": (B, H, W, K)]}`` float32 logits."""
        check_images(images)
        size = images.shape[1:3]
        feats = self.backbone(images, train)
        result = {"out": resize_bilinear(self.classifier(feats["c5"], train), size)}
        if self.aux:
            result["aux"] = resize_bilinear(self.aux_classifier(feats["c4"], train), size)
        return {k: v.astype(jnp.float32) for k, v in result.items()}

    def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Per-pixel logits ``(B, H, W, num_classes)`` (torchvision's ``out``)."""
        return self.outputs(images, train)["out"]
