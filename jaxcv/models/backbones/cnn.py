"""The lecture's "raw" CNN: conv-pool-conv-pool, then fully connected layers.

``CNNBackbone``: for each width in ``channels``, a ``k x k`` conv (bias), optional BatchNorm,
ReLU, and a ``p x p`` max-pool with stride ``p``. ``CNN`` flattens the last pool in ``(h, w, c)``
order (so an FC layer reshapes into a conv kernel, Overfeat-style) and applies hidden FC layers
``fc1, fc2, ...`` (ReLU, dropout) and the output layer ``logits``.

With ``padding='SAME'`` it runs on 8x8 digits (8 -> 4 -> 2) as well as on 128x128 scenes.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcv.models.layers import (
    batch_norm,
    check_images,
    conv_kernel_init,
    max_pool,
    torch_linear_kernel_init,
)

Dtype = Any
PADDINGS = ("SAME", "VALID")


def _output_size(size: int, kernel: int, pool: int, padding: str, stages: int) -> int:
    for _ in range(stages):
        if padding == "VALID":
            size = size - kernel + 1
        size = size // pool if size >= 1 else 0
    return size


class CNNBackbone(nn.Module):
    """Conv-pool stages returning ``conv{s}`` and ``pool{s}`` feature maps.

    Attributes:
      channels: output channels of each conv, one pool after each.
      kernel_size: square conv kernel size.
      padding: ``'SAME'`` (size kept by convs) or ``'VALID'`` (shrinks by ``kernel_size - 1``).
      pool_size: max-pool window and stride.
      batch_norm: BatchNorm between each conv and its ReLU.
      bn_axis_name: axis to synchronise BatchNorm statistics over under pmap, or None.
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    channels: Sequence[int] = (32, 64)
    kernel_size: int = 3
    padding: str = "SAME"
    pool_size: int = 2
    batch_norm: bool = False
    bn_axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool = False) -> dict[str, jnp.ndarray]:
        """Run the conv stages.

        Args:
          images: ``(B, H, W, C)`` float images.
          train: batch statistics for BatchNorm when True.

        Returns:
          ``{"conv{s}": (B, H_s, W_s, channels[s-1]), "pool{s}": (B, H_s // p, W_s // p, ...)}``
          for ``s = 1..len(channels)``.
        """
        check_images(images)
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}; got {self.padding!r}")
        n = len(self.channels)
        out_hw = [
            _output_size(s, self.kernel_size, self.pool_size, self.padding, n)
            for s in images.shape[1:3]
        ]
        if min(out_hw) < 1:
            raise ValueError(
                f"images of shape {images.shape} are too small for {n} conv({self.kernel_size}, "
                f"{self.padding})-pool({self.pool_size}) stages: the last pool would be empty"
            )
        features = {}
        x = images
        for s, width in enumerate(self.channels, start=1):
            x = nn.Conv(
                width,
                (self.kernel_size, self.kernel_size),
                padding=self.padding,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                kernel_init=conv_kernel_init,
                name=f"conv{s}",
            )(x)
            if self.batch_norm:
                x = batch_norm(
                    train,
                    axis_name=self.bn_axis_name,
                    dtype=self.dtype,
                    param_dtype=self.param_dtype,
                    name=f"bn{s}",
                )(x)
            x = nn.relu(x)
            features[f"conv{s}"] = x
            x = max_pool(x, self.pool_size, self.pool_size)
            features[f"pool{s}"] = x
        return features


class CNN(nn.Module):
    """The raw CNN classifier: :class:`CNNBackbone`, flatten, FC layers.

    ``apply(variables, images (B, H, W, C), train=bool, rngs={'dropout': key} when train)``
    returns float32 logits ``(B, num_classes)``; add ``mutable=['batch_stats']`` in training when
    ``batch_norm``. ``apply(..., method="features")`` returns the backbone's feature dict.

    Attributes:
      num_classes: output classes.
      channels, kernel_size, padding, pool_size, batch_norm: see :class:`CNNBackbone`.
      hidden_units: widths of the hidden FC layers (``()`` for a single linear classifier).
      dropout_rate: dropout after each hidden FC layer.
      freeze_backbone: run the backbone in inference mode (BatchNorm running statistics, left
        unchanged) behind ``stop_gradient``: training then computes no backward pass through
        it. Pair with ``optimizer.freeze=["^backbone/"]`` so weight decay leaves it alone too.
      bn_axis_name: axis to synchronise BatchNorm statistics over under pmap, or None.
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    num_classes: int = 10
    channels: Sequence[int] = (32, 64)
    kernel_size: int = 3
    padding: str = "SAME"
    pool_size: int = 2
    batch_norm: bool = False
    hidden_units: Sequence[int] = (128,)
    dropout_rate: float = 0.5
    freeze_backbone: bool = False
    bn_axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self) -> None:
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive int; got {self.num_classes!r}")
        self.backbone = CNNBackbone(
            channels=tuple(self.channels),
            kernel_size=self.kernel_size,
            padding=self.padding,
            pool_size=self.pool_size,
            batch_norm=self.batch_norm,
            bn_axis_name=self.bn_axis_name,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        dense = {
            "dtype": self.dtype,
            "param_dtype": self.param_dtype,
            "kernel_init": torch_linear_kernel_init,
        }
        self.hidden = [
            nn.Dense(units, name=f"fc{i}", **dense)
            for i, units in enumerate(self.hidden_units, start=1)
        ]
        self.logits = nn.Dense(self.num_classes, **dense)
        self.dropout = nn.Dropout(self.dropout_rate)

    def features(self, images: jnp.ndarray, train: bool = False) -> dict[str, jnp.ndarray]:
        """The backbone's named feature maps (see :meth:`CNNBackbone.__call__`)."""
        return self.backbone(images, train)

    def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Classify ``(B, H, W, C)`` images; returns float32 logits ``(B, num_classes)``."""
        x = self.backbone(images, train and not self.freeze_backbone)[f"pool{len(self.channels)}"]
        if self.freeze_backbone:
            x = jax.lax.stop_gradient(x)
        x = x.reshape(x.shape[0], -1)
        for layer in self.hidden:
            x = self.dropout(nn.relu(layer(x)), deterministic=not train)
        return self.logits(x).astype(jnp.float32)
