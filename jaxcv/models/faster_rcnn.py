"""Faster R-CNN (Ren et al. 2015): backbone, RPN head and RoI box head, as one Linen module.

The module holds the parameters and the differentiable parts; everything between them that is
a decision rather than a function of the parameters (anchor labelling, the proposal layer,
RoI sampling, post-processing) lives in :mod:`jaxcv.tasks.faster_rcnn`, which calls the
module's methods::

    features, objectness, rpn_deltas = model.apply(variables, images, train=..., method="rpn")
    ... proposals and sampled RoIs (B, R, 4) ...
    class_logits, box_deltas = model.apply(variables, features, rois, method="box_head")

``model.apply(variables, images, rois)`` (``__call__``) runs all three; it is what ``init``
uses. Parameter tree: ``backbone/...``, ``rpn/{conv,cls_logits,bbox_pred}``, the box head's
``fc6``, ``fc7``, ``cls_score`` and ``bbox_pred``.

Backbones (:data:`BACKBONES`), all at stride 16 as in the paper:

* ``"small"``: :class:`jaxcv.models.backbones.small.SmallBackbone` (``c4``), for CPU runs;
* ``"vgg16"`` / ``"vgg16_bn"``: VGG-16's ``conv5`` (the paper's backbone, 512 channels);
* ``"resnet18"`` / ``"resnet34"`` / ``"resnet50"``: the ResNet C4 trunk (``layer1..3``).

RoI features: ``roi_align`` to ``roi_size x roi_size`` (7) with ``sampling_ratio`` 2 and
``aligned=False`` by default (torchvision's Faster R-CNN setting). The box head is two FC
layers (torchvision's ``TwoMLPHead``, ``representation_size`` 1024) followed by the sibling
``cls_score`` (``K + 1`` logits, class 0 = background) and class-specific ``bbox_pred``
(``4 (K + 1)`` deltas, weights ``(10, 10, 5, 5)``), initialised N(0, 0.01) and N(0, 0.001)
as in the paper.
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcv.models.backbones.resnet import RESNET_SPECS, ResNetBackbone
from jaxcv.models.backbones.small import SmallBackbone
from jaxcv.models.backbones.vgg import VGG16_STAGES, VGGBackbone
from jaxcv.models.layers import check_features_and_rois, check_images, torch_linear_kernel_init
from jaxcv.models.rpn import RPNHead
from jaxcv.ops.anchors import num_anchors_per_location
from jaxcv.ops.roi_align import roi_align

Dtype = Any

#: The feature stride every backbone below produces.
STRIDE = 16


def _small(m: "FasterRCNN") -> nn.Module:
    return SmallBackbone(
        widths=tuple(m.backbone_widths),
        depth=m.backbone_depth,
        norm=m.backbone_norm,
        dtype=m.dtype,
        param_dtype=m.param_dtype,
        name="backbone",
    )


def _vgg16(batch_norm: bool) -> Callable[["FasterRCNN"], nn.Module]:
    def build(m: "FasterRCNN") -> nn.Module:
        # Only the first four pools are used: conv5 is at stride 16.
        return VGGBackbone(
            stages=VGG16_STAGES,
            batch_norm=batch_norm,
            dtype=m.dtype,
            param_dtype=m.param_dtype,
            name="backbone",
        )

    return build


def _resnet(depth: int) -> Callable[["FasterRCNN"], nn.Module]:
    block_type, sizes = RESNET_SPECS[depth]

    def build(m: "FasterRCNN") -> nn.Module:
        return ResNetBackbone(
            stage_sizes=sizes,
            block_type=block_type,
            stem="imagenet",
            num_stages=3,
            dtype=m.dtype,
            param_dtype=m.param_dtype,
            name="backbone",
        )

    return build


#: backbone name -> (builder from the detector's fields, name of the stride-16 feature map).
BACKBONES: dict[str, tuple[Callable[["FasterRCNN"], nn.Module], str]] = {
    "small": (_small, "c4"),
    "vgg16": (_vgg16(False), "conv5"),
    "vgg16_bn": (_vgg16(True), "conv5"),
    "resnet18": (_resnet(18), "c4"),
    "resnet34": (_resnet(34), "c4"),
    "resnet50": (_resnet(50), "c4"),
}


class FasterRCNN(nn.Module):
    """Backbone + RPN head + RoI box head.

    Attributes:
      num_classes: ``K`` object classes (the classifier has ``K + 1`` outputs, 0 = background).
      backbone: a key of :data:`BACKBONES`.
      backbone_widths, backbone_depth, backbone_norm: fields of the ``"small"`` backbone.
      anchor_sizes: anchor sizes in pixels (square root of the area).
      aspect_ratios: anchor height / width ratios.
      rpn_channels: width of the RPN's 3x3 conv (None: the feature channels).
      roi_size: RoI align output size (7).
      sampling_ratio: RoI align samples per bin and axis (2).
      aligned: RoI align's half-pixel shift (False, as torchvision's Faster R-CNN).
      representation_size: width of the two FC layers of the box head (1024).
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    num_classes: int = 3
    backbone: str = "small"
    backbone_widths: Sequence[int] = (32, 64, 128, 256)
    backbone_depth: int = 2
    backbone_norm: str = "group"
    anchor_sizes: Sequence[float] = (16.0, 32.0, 64.0)
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)
    rpn_channels: int | None = None
    roi_size: int = 7
    sampling_ratio: int = 2
    aligned: bool = False
    representation_size: int = 1024
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def stride(self) -> int:
        """The backbone feature stride (16)."""
        return STRIDE

    @property
    def num_anchors(self) -> int:
        """``A``: anchors per feature-map position."""
        return num_anchors_per_location(self.anchor_sizes, self.aspect_ratios)

    def setup(self) -> None:
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive int; got {self.num_classes!r}")
        if self.backbone not in BACKBONES:
            raise ValueError(
                f"unknown backbone {self.backbone!r}; valid: {', '.join(sorted(BACKBONES))}"
            )
        build, self._feature_key = BACKBONES[self.backbone]
        self.trunk = build(self)
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        self.rpn_head = RPNHead(self.num_anchors, self.rpn_channels, name="rpn", **kw)
        self.fc6 = nn.Dense(self.representation_size, kernel_init=torch_linear_kernel_init, **kw)
        self.fc7 = nn.Dense(self.representation_size, kernel_init=torch_linear_kernel_init, **kw)
        self.cls_score = nn.Dense(
            self.num_classes + 1, kernel_init=nn.initializers.normal(0.01), **kw
        )
        self.bbox_pred = nn.Dense(
            4 * (self.num_classes + 1), kernel_init=nn.initializers.normal(0.001), **kw
        )

    def rpn(
        self, images: jnp.ndarray, train: bool = False
    ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
        """Backbone and RPN head.

        Args:
          images: ``(B, H, W, 3)`` normalised images, ``H, W >= 16`` (the stride).
          train: BatchNorm mode of the backbone (if it has BatchNorm).

        Returns:
          ``features``: ``(B, h, w, C)`` stride-16 map (``h = H // 16`` up to rounding);
          ``objectness``: ``(B, h * w * A)`` float32 logits;
          ``deltas``: ``(B, h * w * A, 4)`` float32 RPN deltas, in
          :func:`jaxcv.ops.make_anchors` order.
        """
        check_images(images)
        if min(images.shape[1:3]) < self.stride:
            raise ValueError(
                f"images of shape {images.shape} are smaller than the backbone's stride "
                f"{self.stride}: the feature map would be one cell of padding; use inputs of "
                f"at least {self.stride}x{self.stride} (data.image_size)"
            )
        features = self.trunk(images, train=train)[self._feature_key]
        objectness, deltas = self.rpn_head(features)
        return features, objectness, deltas

    def box_head(self, features: jnp.ndarray, rois: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        """RoI align and the box head on ``rois``.

        Args:
          features: ``(B, h, w, C)`` stride-16 feature map from :meth:`rpn`.
          rois: ``(B, R, 4)`` ``xyxy`` boxes in input pixels.

        Returns:
          ``class_logits``: ``(B, R, K + 1)`` float32;
          ``box_deltas``: ``(B, R, K + 1, 4)`` float32 class-specific deltas.
        """
        check_features_and_rois(features, rois)
        pooled = roi_align(
            features,
            rois,
            self.roi_size,
            spatial_scale=1.0 / self.stride,
            sampling_ratio=self.sampling_ratio,
            aligned=self.aligned,
        )
        batch, num_rois = rois.shape[:2]
        x = pooled.reshape(batch, num_rois, -1).astype(self.dtype)
        x = nn.relu(self.fc6(x))
        x = nn.relu(self.fc7(x))
        logits = self.cls_score(x).astype(jnp.float32)
        deltas = self.bbox_pred(x).astype(jnp.float32)
        return logits, deltas.reshape(batch, num_rois, self.num_classes + 1, 4)

    def __call__(
        self, images: jnp.ndarray, rois: jnp.ndarray, train: bool = False
    ) -> dict[str, jnp.ndarray]:
        """Everything at once (used by ``init``): :meth:`rpn` then :meth:`box_head` on ``rois``.

        Args:
          images: ``(B, H, W, 3)``.
          rois: ``(B, R, 4)`` ``xyxy`` boxes in input pixels.
          train: BatchNorm mode.

        Returns:
          ``{"features", "objectness", "rpn_deltas", "class_logits", "box_deltas"}`` with the
          shapes given in :meth:`rpn` and :meth:`box_head`.
        """
        features, objectness, rpn_deltas = self.rpn(images, train)
        class_logits, box_deltas = self.box_head(features, rois)
        return {
            "features": features,
            "objectness": objectness,
            "rpn_deltas": rpn_deltas,
            "class_logits": class_logits,
            "box_deltas": box_deltas,
        }
