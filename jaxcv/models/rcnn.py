"""R-CNN (Girshick et al. 2014): warp every proposal, run a CNN on each crop, score and refine.

Each proposal is dilated by ``context_padding`` pixels of context at the warped size and
warped (anisotropically, whatever its aspect ratio) to ``warp_size x warp_size`` with a
bilinear crop-and-resize (:mod:`jaxcv.ops.warp`; outside the image: 0, the normalised mean).
A classifier trunk runs on every crop (``"small"``: the stride-16 conv trunk of the CPU
experiments, its ``c4`` map; ``"vgg16"`` / ``"vgg16_bn"``: VGG-16's five conv stages,
``pool5``), then ``fc6`` and ``fc7`` (ReLU, dropout in training) and the sibling outputs:

* ``cls_score``: ``K + 1`` softmax logits. The paper trained per-class linear SVMs on ``fc7``
  features after fine-tuning (:mod:`jaxcv.tasks.rcnn_svm`); :mod:`jaxcv.tasks.rcnn` uses the
  softmax of the fine-tuned network instead, as later work (Fast R-CNN, sec. 5.4) showed it
  does as well.
* ``bbox_pred``: class-specific box regression. The paper fitted it (ridge regression) on
  ``pool5`` features; here it is a linear layer on the same ``pool5`` features, trained jointly
  (``box_features="pool5"``, the default) or on ``fc7`` (``"fc7"``).

The crops of one image never share computation (that is what Fast R-CNN fixes), so the cost is
``R`` trunk passes per image. ``model.apply(variables, images, rois)`` returns
``{"class_logits": (B, R, K + 1), "box_deltas": (B, R, K + 1, 4)}``; the task
(:mod:`jaxcv.tasks.rcnn`) samples the training RoIs and scores test proposals in chunks.
``model.apply(variables, images, rois, method=RCNN.features)`` returns the ``pool5`` and
``fc7`` features of the same RoIs, which the paper's SVMs and ridge regressors
(:mod:`jaxcv.tasks.rcnn_svm`) are fitted on.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcv.models.fast_rcnn import BoxHead
from jaxcv.models.faster_rcnn import BACKBONES
from jaxcv.models.layers import check_images
from jaxcv.ops.warp import RCNN_CONTEXT_PADDING, context_boxes, crop_and_resize

Dtype = Any

#: R-CNN trunk -> the feature map its head reads (the whole crop's last pooled map).
FEATURE_KEYS = {"small": "c4", "vgg16": "pool5", "vgg16_bn": "pool5"}
BOX_FEATURES = ("pool5", "fc7")


class RCNN(nn.Module):
    """Warp + per-crop CNN + softmax classifier and class-specific box regressor.

    Attributes:
      num_classes: ``K`` object classes (``K + 1`` outputs, 0 = background).
      backbone: ``"small"``, ``"vgg16"`` or ``"vgg16_bn"`` (:data:`FEATURE_KEYS`).
      backbone_widths, backbone_depth, backbone_norm: fields of the ``"small"`` trunk.
      warp_size: side of the warped crops (227 in the paper's AlexNet, 224 for VGG-16).
      context_padding: context pixels around the box at the warped size (16).
      representation_size: width of ``fc6`` and ``fc7`` (4096 for VGG-16).
      dropout_rate: dropout after ``fc6``/``fc7`` in training (0.5 in the paper).
      box_features: ``"pool5"`` (the paper's regressor input) or ``"fc7"``.
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    num_classes: int = 3
    backbone: str = "small"
    backbone_widths: Sequence[int] = (32, 64, 128, 256)
    backbone_depth: int = 2
    backbone_norm: str = "group"
    warp_size: int = 64
    context_padding: float = RCNN_CONTEXT_PADDING
    representation_size: int = 1024
    dropout_rate: float = 0.0
    box_features: str = "pool5"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self) -> None:
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive int; got {self.num_classes!r}")
        if self.backbone not in FEATURE_KEYS:
            raise ValueError(
                f"unknown R-CNN backbone {self.backbone!r}; valid: {', '.join(FEATURE_KEYS)}"
            )
        if self.box_features not in BOX_FEATURES:
            raise ValueError(
                f"box_features must be one of {BOX_FEATURES}; got {self.box_features!r}"
            )
        self.trunk = BACKBONES[self.backbone][0](self)
        self.head = BoxHead(
            self.num_classes,
            self.representation_size,
            self.dropout_rate,
            box_from_input=self.box_features == "pool5",
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="box_head",
        )

    def warp(self, images: jnp.ndarray, rois: jnp.ndarray) -> jnp.ndarray:
        """``images (B, H, W, 3)``, ``rois (B, R, 4)`` xyxy -> crops ``(B, R, S, S, 3)`` (with
        context, no gradient)."""
        boxes = context_boxes(rois, self.warp_size, self.context_padding)
        crops = crop_and_resize(images, boxes, self.warp_size)
        return jax.lax.stop_gradient(crops)

    def pool5(self, images: jnp.ndarray, rois: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """The head's input: the flattened trunk output of every warped RoI.

        Args:
          images: ``(B, H, W, 3)`` normalised images.
          rois: ``(B, R, 4)`` ``xyxy`` boxes in input pixels.
          train: BatchNorm mode of the trunk.

        Returns:
          ``(B, R, F5)`` in the compute dtype, ``F5`` = the trunk map's ``h * w * C``.
        """
        check_images(images)
        if rois.ndim != 3 or rois.shape[-1] != 4 or rois.shape[0] != images.shape[0]:
            raise ValueError(
                f"rois must be (B, R, 4) with B = {images.shape[0]}; got shape {rois.shape}"
            )
        batch, num_rois = rois.shape[:2]
        crops = self.warp(images, rois).reshape(batch * num_rois, *((self.warp_size,) * 2), -1)
        features = self.trunk(crops.astype(self.dtype), train=train)[FEATURE_KEYS[self.backbone]]
        return features.reshape(batch, num_rois, -1)

    def features(self, images: jnp.ndarray, rois: jnp.ndarray) -> dict[str, jnp.ndarray]:
        """The features the paper's SVMs and ridge regressors read (inference mode, no dropout).

        Used as ``model.apply(variables, images, rois, method=RCNN.features)``.

        Args:
          images: ``(B, H, W, 3)`` normalised images.
          rois: ``(B, R, 4)`` ``xyxy`` boxes in input pixels.

        Returns:
          ``{"pool5": (B, R, F5), "fc7": (B, R, representation_size)}`` float32: the head's
          flattened input and its ``fc7`` after ReLU, from the same parameters as
          :meth:`__call__`.
        """
        pool5 = self.pool5(images, rois, train=False)
        _, _, fc7 = self.head(pool5, train=False, return_fc7=True)
        return {"pool5": pool5.astype(jnp.float32), "fc7": fc7}

    def __call__(
        self, images: jnp.ndarray, rois: jnp.ndarray, train: bool = False
    ) -> dict[str, jnp.ndarray]:
        """Score and regress every RoI.

        Args:
          images: ``(B, H, W, 3)`` normalised images.
          rois: ``(B, R, 4)`` ``xyxy`` boxes in input pixels.
          train: BatchNorm/dropout mode (dropout needs a ``"dropout"`` rng).

        Returns:
          ``{"class_logits": (B, R, K + 1), "box_deltas": (B, R, K + 1, 4)}`` float32.
        """
        logits, deltas = self.head(self.pool5(images, rois, train), train=train)
        return {"class_logits": logits, "box_deltas": deltas}
