"""Classification + localization: one conv trunk, a class head and a box head.

``Localizer`` runs a :class:`~jaxcv.models.backbones.cnn.CNNBackbone` (``VALID`` convolutions
and ``p x p`` max-pools, so that the network is exactly translation-equivariant and its fully
connected heads can later be turned into convolutions, Overfeat-style, see
:mod:`jaxcv.models.overfeat`), flattens the last pool in ``(h, w, c)`` order and feeds two
heads of fully connected layers:

* class head ``cls_fc1 .. cls_fcN`` (ReLU, dropout) then ``cls_out``: logits ``(B, K)``, or
  ``(B, K + 1)`` with ``background=True`` (the last column is "no object", trained on
  background windows, see :mod:`jaxcv.tasks.window_sampling`);
* box head ``box_fc1 .. box_fcN`` (ReLU) then ``box_out``: box deltas ``(B, 4)``
  (class-agnostic) or ``(B, K, 4)`` (class-specific, one box per class).

Box deltas are the R-CNN parameterisation (:func:`jaxcv.ops.boxes.encode_boxes`) of the object
box relative to the *window*, the ``(0, 0, W, H)`` box of the network input; the task
(:mod:`jaxcv.tasks.localization`) encodes and decodes them with its ``box_weights``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcv.models.backbones.cnn import CNNBackbone
from jaxcv.models.layers import check_images, torch_linear_kernel_init

Dtype = Any

__all__ = ["Localizer", "trunk_output_size"]


def trunk_output_size(size: int, kernel_size: int, pool_size: int, stages: int) -> int:
    """Side of the last pool of a ``VALID`` conv(k)-pool(p) trunk with ``stages`` stages.

    Each stage maps ``n -> (n - k + 1) // p``. Returns 0 when the input is too small.
    """
    for _ in range(stages):
        size = size - kernel_size + 1
        if size < 1:
            return 0
        size //= pool_size
    return size


class Localizer(nn.Module):
    """Conv trunk with a class head and a box-regression head.

    ``apply(variables, images (B, H, W, C), train=bool, rngs={'dropout': key} when train and
    dropout_rate > 0, mutable=['batch_stats'] when train and batch_norm)`` returns
    ``{"logits": (B, K) or (B, K + 1) float32, "box_deltas": (B, 4) or (B, K, 4) float32}``.

    Attributes:
      num_classes: ``K`` object classes.
      background: one more logit, the last, for "no object in this window" (boxes stay one
        per object class).
      channels: conv widths, one ``kernel_size`` ``VALID`` conv + ReLU + max-pool per stage.
      kernel_size: square conv kernel size.
      pool_size: max-pool window and stride.
      batch_norm: BatchNorm between each conv and its ReLU (an affine map per channel at
        inference, so the fully-convolutional conversion stays exact).
      hidden_units: widths of the class head's hidden FC layers.
      box_hidden_units: widths of the box head's hidden FC layers.
      class_specific: one box per class ``(B, K, 4)`` instead of one ``(B, 4)``.
      dropout_rate: dropout after each hidden FC layer of the class head.
      bn_axis_name: axis to synchronise BatchNorm statistics over under pmap, or None.
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    num_classes: int = 4
    background: bool = False
    channels: Sequence[int] = (16, 32, 64, 128)
    kernel_size: int = 3
    pool_size: int = 2
    batch_norm: bool = True
    hidden_units: Sequence[int] = (256,)
    box_hidden_units: Sequence[int] = (256,)
    class_specific: bool = False
    dropout_rate: float = 0.0
    bn_axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def stride(self) -> int:
        """Total stride of the trunk: ``pool_size ** len(channels)``."""
        return int(self.pool_size) ** len(self.channels)

    def feature_size(self, size: int) -> int:
        """Side of the last pool for an input side ``size`` (0 if too small)."""
        return trunk_output_size(size, self.kernel_size, self.pool_size, len(self.channels))

    def setup(self) -> None:
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive int; got {self.num_classes!r}")
        if not self.channels:
            raise ValueError("channels must have at least one stage")
        self.backbone = CNNBackbone(
            channels=tuple(self.channels),
            kernel_size=self.kernel_size,
            padding="VALID",
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
        self.cls_hidden = [
            nn.Dense(u, name=f"cls_fc{i}", **dense) for i, u in enumerate(self.hidden_units, 1)
        ]
        self.cls_out = nn.Dense(self.num_classes + int(self.background), **dense)
        self.box_hidden = [
            nn.Dense(u, name=f"box_fc{i}", **dense) for i, u in enumerate(self.box_hidden_units, 1)
        ]
        # Small initial deltas: the first predictions are (close to) the whole window.
        self.box_out = nn.Dense(
            4 * self.num_classes if self.class_specific else 4,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.initializers.normal(1e-3),
        )
        self.dropout = nn.Dropout(self.dropout_rate)

    def features(self, images: jnp.ndarray, train: bool = False) -> dict[str, jnp.ndarray]:
        """The trunk's named feature maps (see :meth:`CNNBackbone.__call__`)."""
        return self.backbone(images, train)

    def __call__(self, images: jnp.ndarray, train: bool = False) -> dict[str, jnp.ndarray]:
        """Classify and localise one object per image.

        Args:
          images: ``(B, H, W, C)`` float images; ``H, W`` must leave a non-empty last pool.
          train: BatchNorm batch statistics and dropout when True.

        Returns:
          ``logits (B, K)`` (``(B, K + 1)`` with background, last) float32 and
          ``box_deltas`` ``(B, 4)`` (class-agnostic) or
          ``(B, K, 4)`` (class-specific) float32, relative to the ``(0, 0, W, H)`` window.
        """
        check_images(images)
        h, w = (self.feature_size(s) for s in images.shape[1:3])
        if min(h, w) < 1:
            raise ValueError(
                f"images of shape {images.shape} are too small for the Localizer trunk "
                f"({len(self.channels)} VALID conv{self.kernel_size}-pool{self.pool_size} stages)"
            )
        x = self.backbone(images, train)[f"pool{len(self.channels)}"]
        x = x.reshape(x.shape[0], -1)  # (h, w, c) order: reshapes into a conv kernel
        c = x
        for layer in self.cls_hidden:
            c = self.dropout(nn.relu(layer(c)), deterministic=not train)
        logits = self.cls_out(c).astype(jnp.float32)
        b = x
        for layer in self.box_hidden:
            b = nn.relu(layer(b))
        deltas = self.box_out(b).astype(jnp.float32)
        if self.class_specific:
            deltas = deltas.reshape(deltas.shape[0], self.num_classes, 4)
        return {"logits": logits, "box_deltas": deltas}
