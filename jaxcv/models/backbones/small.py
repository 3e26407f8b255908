"""A small, fast stride-16 conv trunk for detection experiments on CPU.

Four stages, each a strided 3x3 conv (stride 2) followed by ``depth - 1`` stride-1 3x3 convs,
every conv followed by a normalisation layer and ReLU. The stages halve the resolution four
times, so the last map ``c4`` has stride 16 (the stride of VGG-16's ``conv5`` and ResNet's
``c4`` that Faster R-CNN's RPN and RoI head expect), at a small fraction of their cost: a
128x128 image goes to an 8x8x``widths[-1]`` map.

Normalisation: ``"group"`` (GroupNorm, the default: independent of the batch, which is small
in detection), ``"batch"`` (BatchNorm with statistics in ``batch_stats``) or ``"none"``.

:class:`SmallClassifier` is the trunk's ImageNet stage: the trunk under ``backbone``, global
average pooling of ``c4`` and one classifier layer ``fc``. A classification run of it is a
``model.init_from`` for the detectors built on the same trunk (:mod:`jaxcv.train.trunk`).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcv.models.layers import batch_norm, check_images, conv

Dtype = Any
NORMS = ("group", "batch", "none")


def _group_count(channels: int, groups: int) -> int:
    """The largest divisor of ``channels`` that is at most ``groups``."""
    return max(g for g in range(1, min(groups, channels) + 1) if channels % g == 0)


class SmallBackbone(nn.Module):
    """Stride-16 conv trunk returning ``c1`` .. ``c4`` (strides 2, 4, 8, 16).

    Attributes:
      widths: output channels of the four stages.
      depth: 3x3 convs per stage (the first has stride 2).
      norm: ``"group"``, ``"batch"`` or ``"none"``.
      groups: GroupNorm groups (reduced to a divisor of the channels when needed).
      bn_axis_name: axis to synchronise BatchNorm statistics over under pmap, or None.
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    widths: Sequence[int] = (32, 64, 128, 256)
    depth: int = 2
    norm: str = "group"
    groups: int = 16
    bn_axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool = False) -> dict[str, jnp.ndarray]:
        """Run the trunk.

        Args:
          images: ``(B, H, W, C)`` float images, ``H, W >= 16``.
          train: BatchNorm uses (and updates) batch statistics when True.

        Returns:
          ``{"c{s}": (B, ceil(H / 2**s), ceil(W / 2**s), widths[s-1])}`` for ``s = 1..4``.
        """
        check_images(images)
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}; got {self.norm!r}")
        if len(self.widths) != 4:
            raise ValueError(f"widths must have 4 entries (one per stage); got {self.widths!r}")
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1; got {self.depth}")
        if min(images.shape[1:3]) < 16:
            raise ValueError(
                f"SmallBackbone has stride 16 and needs images of at least 16x16; "
                f"got shape {images.shape}"
            )
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        features = {}
        x = images
        for s, width in enumerate(self.widths, start=1):
            for i in range(1, self.depth + 1):
                name = f"stage{s}_conv{i}"
                x = conv(
                    width, 3, 2 if i == 1 else 1, use_bias=self.norm == "none", name=name, **kw
                )(x)
                x = nn.relu(self._norm(x, train, f"stage{s}_norm{i}"))
            features[f"c{s}"] = x
        return features

    def _norm(self, x: jnp.ndarray, train: bool, name: str) -> jnp.ndarray:
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        if self.norm == "group":
            groups = _group_count(x.shape[-1], self.groups)
            return nn.GroupNorm(num_groups=groups, epsilon=1e-5, name=name, **kw)(x)
        if self.norm == "batch":
            return batch_norm(train, axis_name=self.bn_axis_name, name=name, **kw)(x)
        return x


class SmallClassifier(nn.Module):
    """:class:`SmallBackbone`, global average pooling of ``c4``, dropout and a linear ``fc``.

    ``apply(variables, images (B, H, W, C), train=bool, rngs={'dropout': key} when train and
    dropout_rate > 0, mutable=['batch_stats'] when train with norm="batch")`` returns float32
    logits ``(B, num_classes)``.

    Attributes:
      num_classes: output classes.
      widths, depth, norm, groups: the trunk's (:class:`SmallBackbone`); detectors name them
        ``backbone_widths``, ``backbone_depth``, ``backbone_norm``.
      dropout_rate: dropout before ``fc``.
      bn_axis_name: axis to synchronise BatchNorm statistics over under pmap, or None.
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    num_classes: int = 10
    widths: Sequence[int] = (32, 64, 128, 256)
    depth: int = 2
    norm: str = "group"
    groups: int = 16
    dropout_rate: float = 0.0
    bn_axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self) -> None:
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive int; got {self.num_classes!r}")
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        self.backbone = SmallBackbone(
            widths=tuple(self.widths),
            depth=self.depth,
            norm=self.norm,
            groups=self.groups,
            bn_axis_name=self.bn_axis_name,
            **kw,
        )
        self.dropout = nn.Dropout(self.dropout_rate)
        self.fc = nn.Dense(self.num_classes, **kw)

    def features(self, images: jnp.ndarray, train: bool = False) -> dict[str, jnp.ndarray]:
        """The trunk's ``c1`` .. ``c4`` (see :meth:`SmallBackbone.__call__`)."""
        return self.backbone(images, train)

    def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Classify ``(B, H, W, C)`` images (``H, W >= 16``); returns ``(B, num_classes)``."""
        x = jnp.mean(self.backbone(images, train)["c4"], axis=(1, 2))
        x = self.dropout(x, deterministic=not train)
        return self.fc(x).astype(jnp.float32)
