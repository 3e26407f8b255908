"""ResNet-18/34/50 (He et al. 2016) in torchvision's layout.

Parameter paths mirror torchvision's state-dict names so weights map one to one:

=====================================  ==========================================
jaxcv (``/``-joined)                   torchvision
=====================================  ==========================================
``backbone/conv1``, ``backbone/bn1``   ``conv1``, ``bn1``
``backbone/layer{s}/block{i}/conv{j}`` ``layer{s}.{i}.conv{j}`` (same for ``bn{j}``)
``.../downsample_conv``, ``_bn``       ``layer{s}.{i}.downsample.0``, ``.1``
``fc``                                 ``fc``
=====================================  ==========================================

Bottleneck blocks put the stride in the 3x3 conv (ResNet v1.5, as torchvision). The ImageNet
stem is a 7x7/2 conv (padding 3) and a 3x3/2 max-pool (padding 1); the CIFAR stem is a 3x3/1 conv
without max-pool. :class:`ResNetBackbone` returns named feature maps ``stem, c2, c3, c4, c5``
(strides 4, 4, 8, 16, 32 with the ImageNet stem; 1, 1, 2, 4, 8 with the CIFAR stem); with
``num_stages=3`` it is the C4 trunk (stride 16) of Faster R-CNN, whose ``layer4`` then becomes
the RoI head (:class:`ResNetStage`).
"""

from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcv.models.layers import (
    batch_norm,
    check_images,
    conv,
    conv_kernel_init,
    max_pool,
    torch_linear_kernel_init,
)

Dtype = Any

#: depth -> (block type, blocks per stage), as in torchvision.
RESNET_SPECS: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}
STEMS = ("imagenet", "cifar")


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection: ``(B, H, W, C_in) -> (B, H/s, W/s, F)``."""

    features: int
    strides: int = 1
    dilation: int = 1
    zero_init_residual: bool = False
    bn_axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    expansion: ClassVar[int] = 1

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if self.dilation != 1:
            raise ValueError(
                f"BasicBlock supports only dilation 1 (as torchvision); got {self.dilation}: "
                "use bottleneck blocks (ResNet-50) for a dilated trunk"
            )
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        bn_kw = {**kw, "axis_name": self.bn_axis_name}
        y = conv(self.features, 3, self.strides, name="conv1", **kw)(x)
        y = nn.relu(batch_norm(train, name="bn1", **bn_kw)(y))
        y = conv(self.features, 3, 1, name="conv2", **kw)(y)
        y = batch_norm(train, zero_init=self.zero_init_residual, name="bn2", **bn_kw)(y)
        return nn.relu(y + _shortcut(self, x, train, self.features * self.expansion))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, v1.5), 1x1 expand x4: ``(B, H, W, C_in) -> (B, H/s, W/s, 4F)``.

    ``dilation > 1`` dilates the 3x3 conv (padding = dilation, torchvision's
    ``replace_stride_with_dilation``), keeping the spatial size.
    """

    features: int
    strides: int = 1
    dilation: int = 1
    zero_init_residual: bool = False
    bn_axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    expansion: ClassVar[int] = 4

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        bn_kw = {**kw, "axis_name": self.bn_axis_name}
        y = conv(self.features, 1, 1, name="conv1", **kw)(x)
        y = nn.relu(batch_norm(train, name="bn1", **bn_kw)(y))
        y = _conv3x3(self.features, self.strides, self.dilation, "conv2", kw)(y)
        y = nn.relu(batch_norm(train, name="bn2", **bn_kw)(y))
        y = conv(self.features * self.expansion, 1, 1, name="conv3", **kw)(y)
        y = batch_norm(train, zero_init=self.zero_init_residual, name="bn3", **bn_kw)(y)
        return nn.relu(y + _shortcut(self, x, train, self.features * self.expansion))


def _conv3x3(features: int, strides: int, dilation: int, name: str, kw: dict) -> nn.Conv:
    """torchvision's ``conv3x3``: padding = dilation, so a stride-1 conv keeps the size."""
    if dilation == 1:
        return conv(features, 3, strides, name=name, **kw)
    return nn.Conv(
        features,
        (3, 3),
        strides=(strides, strides),
        padding=((dilation, dilation), (dilation, dilation)),
        kernel_dilation=(dilation, dilation),
        use_bias=False,
        kernel_init=conv_kernel_init,
        name=name,
        **kw,
    )


def _shortcut(block: nn.Module, x: jnp.ndarray, train: bool, out_features: int) -> jnp.ndarray:
    """Identity, or torchvision's ``downsample`` (1x1 strided conv + BN) when shapes change."""
    if block.strides == 1 and x.shape[-1] == out_features:
        return x
    kw = {"dtype": block.dtype, "param_dtype": block.param_dtype}
    x = conv(out_features, 1, block.strides, padding=0, name="downsample_conv", **kw)(x)
    return batch_norm(train, axis_name=block.bn_axis_name, name="downsample_bn", **kw)(x)


BLOCKS: dict[str, type[nn.Module]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def _block_class(block_type: str) -> type[nn.Module]:
    if block_type not in BLOCKS:
        raise ValueError(f"unknown block_type {block_type!r}; valid: {sorted(BLOCKS)}")
    return BLOCKS[block_type]


class ResNetStage(nn.Module):
    """One residual stage (torchvision's ``layerN``): ``num_blocks`` blocks, the first strided.

    Maps ``(B, H, W, C_in)`` to ``(B, H / strides, W / strides, features * expansion)``. Used by
    :class:`ResNetBackbone`, and alone as the C5 RoI head of a C4 detector. ``first_dilation``
    is the 3x3 dilation of the first block and ``dilation`` that of the others (torchvision's
    ``_make_layer``: a stage whose stride became dilation starts with the previous dilation).
    """

    block_type: str
    num_blocks: int
    features: int
    strides: int = 1
    dilation: int = 1
    first_dilation: int = 1
    zero_init_residual: bool = False
    bn_axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if x.ndim != 4:
            raise ValueError(f"ResNetStage expects (B, H, W, C); got shape {x.shape}")
        block_cls = _block_class(self.block_type)
        for i in range(self.num_blocks):
            x = block_cls(
                self.features,
                strides=self.strides if i == 0 else 1,
                dilation=self.first_dilation if i == 0 else self.dilation,
                zero_init_residual=self.zero_init_residual,
                bn_axis_name=self.bn_axis_name,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"block{i}",
            )(x, train)
        return x


class ResNetBackbone(nn.Module):
    """The ResNet trunk: stem and residual stages, returning named feature maps.

    Attributes:
      stage_sizes: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
      block_type: ``"basic"`` or ``"bottleneck"``.
      stem: ``"imagenet"`` (7x7/2 conv + 3x3/2 max-pool) or ``"cifar"`` (3x3/1 conv).
      width: channels of the stem and of the first stage's blocks (64 in the paper).
      num_stages: how many of the stages to build (4: up to ``c5``; 3: the C4 trunk).
      replace_stride_with_dilation: for stages 2, 3, 4 (torchvision's ``layer2..4``), replace
        the stride 2 by dilation (torchvision's option of the same name; bottleneck blocks
        only). ``(False, True, True)`` is the stride-8 trunk of torchvision's FCN/DeepLab.
      zero_init_residual: zero the last BN scale of each block (torchvision's option).
      bn_axis_name: axis to synchronise BatchNorm statistics over under pmap, or None.
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    block_type: str = "basic"
    stem: str = "imagenet"
    width: int = 64
    num_stages: int = 4
    replace_stride_with_dilation: Sequence[bool] = (False, False, False)
    zero_init_residual: bool = False
    bn_axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool = False) -> dict[str, jnp.ndarray]:
        """Run the trunk.

        Args:
          images: ``(B, H, W, C)`` float images.
          train: use batch statistics (and update ``batch_stats``) when True.

        Returns:
          ``{"stem": (B, H/4, W/4, w), "c2": (B, H/4, W/4, w e), "c3": (B, H/8, W/8, 2 w e),
          "c4": (B, H/16, W/16, 4 w e), "c5": (B, H/32, W/32, 8 w e)}`` with the ImageNet stem
          (``w`` = width, ``e`` = block expansion, sizes rounded up as torch does; the CIFAR stem
          divides by 8 less); only ``c2..c{num_stages+1}`` are present. A stage whose stride
          is replaced by dilation keeps the size of the previous one.
        """
        check_images(images)
        if self.stem not in STEMS:
            raise ValueError(f"unknown stem {self.stem!r}; valid: {list(STEMS)}")
        if not 1 <= self.num_stages <= len(self.stage_sizes):
            raise ValueError(
                f"num_stages must be in 1..{len(self.stage_sizes)}; got {self.num_stages}"
            )
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        if self.stem == "imagenet":
            x = conv(self.width, 7, 2, padding=3, name="conv1", **kw)(images)
        else:
            x = conv(self.width, 3, 1, padding=1, name="conv1", **kw)(images)
        x = nn.relu(batch_norm(train, axis_name=self.bn_axis_name, name="bn1", **kw)(x))
        if self.stem == "imagenet":
            x = max_pool(x, 3, 2, padding=1)
        dilate = tuple(bool(d) for d in self.replace_stride_with_dilation)
        if len(dilate) != 3:
            raise ValueError(
                "replace_stride_with_dilation needs 3 flags (layer2, layer3, layer4); got "
                f"{self.replace_stride_with_dilation!r}"
            )
        features = {"stem": x}
        dilation = 1
        for s in range(self.num_stages):
            strides, previous = (1 if s == 0 else 2), dilation
            if s > 0 and dilate[s - 1]:
                dilation, strides = dilation * strides, 1
            x = ResNetStage(
                self.block_type,
                self.stage_sizes[s],
                self.width * 2**s,
                strides=strides,
                dilation=dilation,
                first_dilation=previous,
                zero_init_residual=self.zero_init_residual,
                bn_axis_name=self.bn_axis_name,
                name=f"layer{s + 1}",
                **kw,
            )(x, train)
            features[f"c{s + 2}"] = x
        return features


class ResNet(nn.Module):
    """ResNet image classifier: :class:`ResNetBackbone`, global average pool, ``fc``.

    ``apply(variables, images (B, H, W, C), train=bool, mutable=['batch_stats'] when train)``
    returns float32 logits ``(B, num_classes)`` whatever the compute dtype.
    ``apply(..., method="features")`` returns the backbone's feature dict.

    ``freeze_backbone=True`` runs the backbone in inference mode (BatchNorm running statistics,
    left unchanged) behind ``stop_gradient``, so training computes no backward pass through it;
    pair it with ``optimizer.freeze=["^backbone/"]`` so weight decay leaves it alone too.
    """

    num_classes: int = 1000
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    block_type: str = "basic"
    stem: str = "imagenet"
    width: int = 64
    zero_init_residual: bool = False
    freeze_backbone: bool = False
    bn_axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self) -> None:
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive int; got {self.num_classes!r}")
        self.backbone = ResNetBackbone(
            stage_sizes=tuple(self.stage_sizes),
            block_type=self.block_type,
            stem=self.stem,
            width=self.width,
            num_stages=len(self.stage_sizes),
            zero_init_residual=self.zero_init_residual,
            bn_axis_name=self.bn_axis_name,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        self.fc = nn.Dense(
            self.num_classes,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=torch_linear_kernel_init,
        )

    def features(self, images: jnp.ndarray, train: bool = False) -> dict[str, jnp.ndarray]:
        """The backbone's named feature maps (see :meth:`ResNetBackbone.__call__`)."""
        return self.backbone(images, train)

    def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Classify ``(B, H, W, C)`` images; returns float32 logits ``(B, num_classes)``."""
        last = self.backbone(images, train and not self.freeze_backbone)
        last = last[f"c{len(self.stage_sizes) + 1}"]
        if self.freeze_backbone:
            last = jax.lax.stop_gradient(last)
        pooled = jnp.mean(last.astype(jnp.float32), axis=(1, 2))
        return self.fc(pooled).astype(jnp.float32)


class ResNet18(ResNet):
    """ResNet-18: basic blocks ``(2, 2, 2, 2)``."""

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    block_type: str = "basic"


class ResNet34(ResNet):
    """ResNet-34: basic blocks ``(3, 4, 6, 3)``."""

    stage_sizes: Sequence[int] = (3, 4, 6, 3)
    block_type: str = "basic"


class ResNet50(ResNet):
    """ResNet-50: bottleneck blocks ``(3, 4, 6, 3)`` (v1.5)."""

    stage_sizes: Sequence[int] = (3, 4, 6, 3)
    block_type: str = "bottleneck"
