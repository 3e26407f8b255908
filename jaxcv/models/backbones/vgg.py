"""VGG-11/16 (Simonyan & Zisserman 2015), with optional BatchNorm, in torchvision's layout.

Each stage ``s`` is ``n_s`` 3x3 convs (padding 1, bias), each followed by BatchNorm (``_bn``
variants) and ReLU, then a 2x2/2 max-pool. Parameters are named after the paper:
``backbone/conv{s}_{i}`` (and ``backbone/bn{s}_{i}``), then ``fc6``, ``fc7``, ``fc8`` for the
classifier ``FC-4096, ReLU, Dropout, FC-4096, ReLU, Dropout, FC-num_classes``.

torchvision mapping: ``features.{k}`` is the k-th layer of the flat conv/BN/ReLU/pool list and
``classifier.{0,3,6}`` are ``fc6, fc7, fc8``. The classifier's input here is flattened from NHWC,
i.e. in ``(h, w, c)`` order; torchvision flattens NCHW in ``(c, h, w)`` order, so ``fc6``'s kernel
is torch's ``weight.reshape(F, C, h, w).transpose(2, 3, 1, 0).reshape(h * w * C, F)``. The
``(h, w, c)`` order is what lets ``fc6`` be reshaped into an ``(h, w, C, F)`` conv kernel
(Overfeat, FCN).

Named features for heads: ``conv{s}`` (last ReLU of stage s) and ``pool{s}``, e.g. ``pool3``
(stride 8) and ``pool4`` (stride 16) for FCN skips, ``conv5`` (stride 16) for Faster R-CNN.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcv.models.layers import (
    adaptive_avg_pool,
    batch_norm,
    check_images,
    conv,
    max_pool,
    vgg_linear_kernel_init,
)

Dtype = Any

#: Conv widths per stage (torchvision's configs "A" and "D").
VGG11_STAGES: tuple[tuple[int, ...], ...] = ((64,), (128,), (256, 256), (512, 512), (512, 512))
VGG16_STAGES: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)


class VGGBackbone(nn.Module):
    """The VGG conv stages, returning ``conv{s}`` and ``pool{s}`` feature maps.

    Attributes:
      stages: conv widths per stage, e.g. :data:`VGG16_STAGES`.
      batch_norm: BatchNorm after every conv (torchvision's ``vgg*_bn``).
      bn_axis_name: axis to synchronise BatchNorm statistics over under pmap, or None.
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    stages: Sequence[Sequence[int]] = VGG16_STAGES
    batch_norm: bool = False
    bn_axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool = False) -> dict[str, jnp.ndarray]:
        """Run the conv stages.

        Args:
          images: ``(B, H, W, C)`` float images with ``H, W >= 2 ** len(stages)``.
          train: batch statistics for BatchNorm when True.

        Returns:
          ``{"conv{s}": (B, H_s, W_s, C_s), "pool{s}": (B, H_s // 2, W_s // 2, C_s)}`` for
          ``s = 1..len(stages)``, with ``H_1 = H`` and ``H_{s+1} = H_s // 2``.
        """
        check_images(images)
        min_size = 2 ** len(self.stages)
        if min(images.shape[1:3]) < min_size:
            raise ValueError(
                f"VGG with {len(self.stages)} pooling stages needs images of at least "
                f"{min_size}x{min_size}; got shape {images.shape}"
            )
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        features = {}
        x = images
        for s, widths in enumerate(self.stages, start=1):
            for i, width in enumerate(widths, start=1):
                x = conv(width, 3, 1, padding=1, use_bias=True, name=f"conv{s}_{i}", **kw)(x)
                if self.batch_norm:
                    x = batch_norm(train, axis_name=self.bn_axis_name, name=f"bn{s}_{i}", **kw)(x)
                x = nn.relu(x)
            features[f"conv{s}"] = x
            x = max_pool(x, 2, 2)
            features[f"pool{s}"] = x
        return features


class VGG(nn.Module):
    """VGG image classifier: :class:`VGGBackbone`, pooling, ``fc6``, ``fc7``, ``fc8``.

    ``apply(variables, images (B, H, W, C), train=bool, rngs={'dropout': key} when train,
    mutable=['batch_stats'] when train and batch_norm)`` returns float32 logits
    ``(B, num_classes)``. ``apply(..., method="features")`` returns the backbone's feature dict.

    Attributes:
      num_classes: output classes.
      stages: conv widths per stage.
      batch_norm: BatchNorm after every conv.
      fc_width: width of ``fc6`` and ``fc7`` (4096 in the paper; smaller for small images).
      dropout_rate: dropout after ``fc6`` and ``fc7``.
      pool_output: ``(h, w)`` of the adaptive average pool before ``fc6`` (torchvision's
        ``(7, 7)``; ``(1, 1)`` is global average pooling for small images), or None to flatten
        the last pool as it is (input size then fixes ``fc6``'s shape).
      freeze_backbone: run the conv stages in inference mode (BatchNorm running statistics)
        behind ``stop_gradient``: no backward pass through them in training; pair with
        ``optimizer.freeze=["^backbone/"]`` so weight decay leaves them alone too.
      bn_axis_name: axis to synchronise BatchNorm statistics over under pmap, or None.
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    num_classes: int = 1000
    stages: Sequence[Sequence[int]] = VGG16_STAGES
    batch_norm: bool = False
    fc_width: int = 4096
    dropout_rate: float = 0.5
    pool_output: Sequence[int] | None = (7, 7)
    freeze_backbone: bool = False
    bn_axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self) -> None:
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive int; got {self.num_classes!r}")
        self.backbone = VGGBackbone(
            stages=tuple(tuple(w) for w in self.stages),
            batch_norm=self.batch_norm,
            bn_axis_name=self.bn_axis_name,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        dense = {
            "dtype": self.dtype,
            "param_dtype": self.param_dtype,
            "kernel_init": vgg_linear_kernel_init,
        }
        self.fc6 = nn.Dense(self.fc_width, **dense)
        self.fc7 = nn.Dense(self.fc_width, **dense)
        self.fc8 = nn.Dense(self.num_classes, **dense)
        self.dropout = nn.Dropout(self.dropout_rate)

    def features(self, images: jnp.ndarray, train: bool = False) -> dict[str, jnp.ndarray]:
        """The backbone's named feature maps (see :meth:`VGGBackbone.__call__`)."""
        return self.backbone(images, train)

    def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Classify ``(B, H, W, C)`` images; returns float32 logits ``(B, num_classes)``."""
        x = self.backbone(images, train and not self.freeze_backbone)[f"pool{len(self.stages)}"]
        if self.freeze_backbone:
            x = jax.lax.stop_gradient(x)
        if self.pool_output is not None:
            x = adaptive_avg_pool(x, self.pool_output)
        x = x.reshape(x.shape[0], -1)  # (h, w, c) order, see the module docstring
        x = self.dropout(nn.relu(self.fc6(x)), deterministic=not train)
        x = self.dropout(nn.relu(self.fc7(x)), deterministic=not train)
        return self.fc8(x).astype(jnp.float32)


class VGG11(VGG):
    """VGG-11 (configuration A), no BatchNorm."""

    stages: Sequence[Sequence[int]] = VGG11_STAGES


class VGG11BN(VGG):
    """VGG-11 with BatchNorm after every conv."""

    stages: Sequence[Sequence[int]] = VGG11_STAGES
    batch_norm: bool = True


class VGG16(VGG):
    """VGG-16 (configuration D), no BatchNorm."""

    stages: Sequence[Sequence[int]] = VGG16_STAGES


class VGG16BN(VGG):
    """VGG-16 with BatchNorm after every conv."""

    stages: Sequence[Sequence[int]] = VGG16_STAGES
    batch_norm: bool = True
