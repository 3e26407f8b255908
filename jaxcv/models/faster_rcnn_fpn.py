"""torchvision's Faster R-CNN with a ResNet-50 FPN (``fasterrcnn_resnet50_fpn`` and ``_v2``).

The parts with parameters, in torchvision's layout; as in :mod:`jaxcv.models.faster_rcnn`, the
decisions between them (anchors, the proposal layer, RoI sampling, post-processing) live
outside the module: the test-time proposal layer is
:func:`jaxcv.tasks.fpn_proposal_layer.generate_fpn_proposals`::

    features, objectness, rpn_deltas = model.apply(variables, images, method="rpn")
    ... proposals (B, R, 4) from the per-level outputs ...
    class_logits, box_deltas = model.apply(
        variables, features, proposals, image_size, method="box_head")

The whole detector on images, with torchvision's transform and post-processing, is
:mod:`jaxcv.predict.detector`; ``jaxcv convert torchvision fasterrcnn_resnet50_fpn[_v2]``
converts torchvision's weights to it (:mod:`jaxcv.models.convert`, model name
``faster_rcnn_fpn``). :class:`jaxcv.models.mask_rcnn_fpn.MaskRCNNFPN` adds the mask branch.

* ``backbone``: :class:`jaxcv.models.fpn.ResNetFPNBackbone` (levels ``"0".."3"``, ``"pool"``).
* ``rpn``: :class:`jaxcv.models.rpn.RPNHead` shared by all five levels (torchvision's
  ``RPNHead(256, 3)``: 3x3 conv + ReLU, 1x1 ``cls_logits`` and ``bbox_pred``).
* box branch: :func:`jaxcv.ops.multiscale_roi_align.multiscale_roi_align` over ``"0".."3"``
  (7x7, sampling ratio 2, ``aligned=False``), :class:`TwoMLPHead` (``fc6``, ``fc7``, 1024) and
  :class:`FastRCNNPredictor` (``cls_score``, ``bbox_pred``).

The ``_v2`` detectors (:data:`TORCHVISION_V2`, ``fasterrcnn_resnet50_fpn_v2``) differ in four
places: a BatchNorm after every FPN conv (``fpn_batch_norm``), two 3x3 convs in the RPN head
(``rpn_conv_depth=2``), :class:`FastRCNNConvFCHead` as the box head (four 3x3 conv + BN + ReLU
of 256 channels, then one 1024-wide ``fc`` + ReLU: ``box_head_convs=4``,
``head_batch_norm``), and a backbone built with ``nn.BatchNorm2d`` rather than
``FrozenBatchNorm2d`` (``frozen_batch_norm=False``; in eval mode both are the same function
of the running statistics, so converted weights give the same outputs either way).

Parameter paths: ``backbone/{body,fpn}/...``, ``rpn/{conv,conv2,cls_logits,bbox_pred}``,
``box_head/{fc6,fc7}`` (v2: ``box_head/conv{1..4}/{conv,bn}``, ``box_head/fc``),
``box_predictor/{cls_score,bbox_pred}`` (torchvision's ``backbone.*``,
``rpn.head.{conv.0.0,conv.1.0,cls_logits,bbox_pred}``, ``roi_heads.box_head.*``,
``roi_heads.box_predictor.*``). ``fc6`` (v2: ``fc``) reads the pooled ``(7, 7, C)`` features
flattened in NHWC ``(h, w, c)`` order; torchvision flattens ``(c, h, w)``, so a converted
kernel is permuted as VGG's ``fc6`` (:mod:`jaxcv.models.convert`).

Training with BatchNorm in the heads (v2, ``train=True``): :meth:`FasterRCNNFPN.box_head`'s
BatchNorm statistics run over every RoI of the batch, padding RoIs included; pass only real
RoIs (torchvision normalises over its sampled RoIs).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcv.models.fpn import POOL_LEVEL, ConvNorm, ResNetFPNBackbone
from jaxcv.models.layers import check_images, torch_linear_kernel_init
from jaxcv.models.rpn import RPNHead
from jaxcv.ops.multiscale_roi_align import multiscale_roi_align

Dtype = Any

#: The fields that make a :class:`FasterRCNNFPN` (or ``MaskRCNNFPN``) torchvision's ``_v2``.
TORCHVISION_V2 = {
    "fpn_batch_norm": True,
    "rpn_conv_depth": 2,
    "box_head_convs": 4,
    "head_batch_norm": True,
    "frozen_batch_norm": False,
}
#: torchvision's ``kaiming_normal_(mode="fan_out", nonlinearity="relu")`` of the head convs.
head_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _torch_linear(features: int, name: str, kw: dict) -> nn.Dense:
    return nn.Dense(features, kernel_init=torch_linear_kernel_init, name=name, **kw)


class TwoMLPHead(nn.Module):
    """torchvision's ``TwoMLPHead``: flatten, ``fc6`` + ReLU, ``fc7`` + ReLU.

    Maps ``(..., 7, 7, C)`` pooled RoI features to ``(..., representation_size)``.
    """

    representation_size: int = 1024
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, pooled: jnp.ndarray) -> jnp.ndarray:
        if pooled.ndim < 3:
            raise ValueError(f"TwoMLPHead expects (..., oh, ow, C); got shape {pooled.shape}")
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        x = pooled.reshape(*pooled.shape[:-3], -1).astype(self.dtype)
        x = nn.relu(_torch_linear(self.representation_size, "fc6", kw)(x))
        return nn.relu(_torch_linear(self.representation_size, "fc7", kw)(x))


class FastRCNNConvFCHead(nn.Module):
    """torchvision's ``FastRCNNConvFCHead`` (the ``_v2`` box head): ``num_convs`` x (3x3 conv,
    BatchNorm when ``batch_norm`` else a conv bias, ReLU), flatten, ``fc`` + ReLU.

    Maps ``(..., 7, 7, C)`` pooled RoI features to ``(..., representation_size)``.
    """

    num_convs: int = 4
    channels: int = 256
    representation_size: int = 1024
    batch_norm: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, pooled: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if pooled.ndim < 3:
            raise ValueError(
                f"FastRCNNConvFCHead expects (..., oh, ow, C); got shape {pooled.shape}"
            )
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        lead = pooled.shape[:-3]
        x = pooled.reshape(-1, *pooled.shape[-3:]).astype(self.dtype)
        for i in range(self.num_convs):
            block = ConvNorm(
                self.channels, 3, self.batch_norm, head_conv_init, name=f"conv{i + 1}", **kw
            )
            x = nn.relu(block(x, train))
        x = x.reshape(*lead, -1)
        return nn.relu(_torch_linear(self.representation_size, "fc", kw)(x))


class FastRCNNPredictor(nn.Module):
    """torchvision's ``FastRCNNPredictor``: ``(..., D)`` -> logits ``(..., K + 1)`` and
    class-specific deltas ``(..., K + 1, 4)`` (float32; ``num_classes`` = ``K + 1`` here,
    background included, as torchvision counts)."""

    num_classes: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        logits = _torch_linear(self.num_classes, "cls_score", kw)(x).astype(jnp.float32)
        deltas = _torch_linear(4 * self.num_classes, "bbox_pred", kw)(x).astype(jnp.float32)
        return logits, deltas.reshape(*x.shape[:-1], self.num_classes, 4)


class FasterRCNNFPN(nn.Module):
    """Backbone with FPN, shared RPN head, multi-scale RoI align and the two-MLP box head.

    Attributes:
      num_classes: ``K`` object classes (``K + 1`` outputs, 0 = background; torchvision's
        COCO detector has ``num_classes=91``, i.e. ``K = 90`` here).
      depth: ResNet depth of the backbone (50).
      num_anchors: anchors per position and level (3: torchvision's three aspect ratios).
      roi_size: multi-scale RoI align output size (7).
      sampling_ratio: RoI align samples per bin and axis (2).
      representation_size: width of ``fc6``/``fc7`` (v2: of ``fc``) (1024).
      frozen_batch_norm: the backbone's BatchNorms on running statistics always (True, as
        torchvision's pre-trained v1 detectors; False in v2).
      fpn_batch_norm: a BatchNorm after every FPN conv (v2).
      rpn_conv_depth: 3x3 convs of the RPN head (1; 2 in v2).
      box_head_convs: 0 for :class:`TwoMLPHead`; ``n > 0`` for :class:`FastRCNNConvFCHead`
        with ``n`` convs (4 in v2).
      head_batch_norm: BatchNorm (instead of a conv bias) in the box head's convs and in
        ``MaskRCNNFPN``'s mask head (v2).
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    num_classes: int = 90
    depth: int = 50
    num_anchors: int = 3
    roi_size: int = 7
    sampling_ratio: int = 2
    representation_size: int = 1024
    frozen_batch_norm: bool = True
    fpn_batch_norm: bool = False
    rpn_conv_depth: int = 1
    box_head_convs: int = 0
    head_batch_norm: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self) -> None:
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive int; got {self.num_classes!r}")
        if self.box_head_convs < 0:
            raise ValueError(f"box_head_convs must be >= 0; got {self.box_head_convs}")
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        self.trunk = ResNetFPNBackbone(
            depth=self.depth,
            fpn_batch_norm=self.fpn_batch_norm,
            frozen_batch_norm=self.frozen_batch_norm,
            name="backbone",
            **kw,
        )
        self.rpn_head = RPNHead(self.num_anchors, conv_depth=self.rpn_conv_depth, name="rpn", **kw)
        if self.box_head_convs > 0:
            self.mlp = FastRCNNConvFCHead(
                self.box_head_convs,
                representation_size=self.representation_size,
                batch_norm=self.head_batch_norm,
                name="box_head",
                **kw,
            )
        else:
            self.mlp = TwoMLPHead(self.representation_size, name="box_head", **kw)
        self.predictor = FastRCNNPredictor(self.num_classes + 1, name="box_predictor", **kw)

    def rpn(
        self, images: jnp.ndarray, train: bool = False
    ) -> tuple[dict[str, jnp.ndarray], list[jnp.ndarray], list[jnp.ndarray]]:
        """Backbone and RPN head on every level.

        Args:
          images: ``(B, H, W, 3)`` normalised (and padded) images.
          train: BatchNorm mode (only matters with ``frozen_batch_norm=False``).

        Returns:
          ``features``: the backbone's ``{"0": (B, H/4, W/4, 256), ..., "pool": H/64}``;
          ``objectness``: per level ``(B, h_l * w_l * A)`` float32 logits;
          ``deltas``: per level ``(B, h_l * w_l * A, 4)`` float32, in
          :func:`jaxcv.tasks.fpn_proposal_layer.fpn_anchors` order.
        """
        check_images(images)
        features = self.trunk(images, train)
        objectness, deltas = [], []
        for feature in features.values():
            o, d = self.rpn_head(feature)
            objectness.append(o)
            deltas.append(d)
        return features, objectness, deltas

    def box_head(
        self,
        features: dict[str, jnp.ndarray],
        rois: jnp.ndarray,
        image_size: Sequence[int],
        train: bool = False,
    ) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Multi-scale RoI align, the box head (v1 two-MLP, v2 convs + FC) and the predictor on
        ``rois``.

        Args:
          features: :meth:`rpn`'s feature dict (``"pool"`` is not pooled from).
          rois: ``(B, R, 4)`` ``xyxy`` boxes in input pixels.
          image_size: static ``(H, W)``, the largest image size of the batch before padding
            (fixes each level's scale, :func:`jaxcv.ops.multiscale_roi_align.infer_scales`).
          train: BatchNorm mode of the v2 box head (batch statistics over all ``B * R``
            RoIs); no effect on the v1 head.

        Returns:
          ``class_logits``: ``(B, R, K + 1)`` float32;
          ``box_deltas``: ``(B, R, K + 1, 4)`` float32 class-specific deltas (weights
          ``(10, 10, 5, 5)`` in torchvision's ``RoIHeads``).
        """
        levels = [v for k, v in features.items() if k != POOL_LEVEL]
        if rois.ndim != 3 or rois.shape[-1] != 4 or rois.shape[0] != levels[0].shape[0]:
            raise ValueError(
                f"rois must be (B, R, 4) with B = {levels[0].shape[0]}; got shape {rois.shape}"
            )
        pooled = multiscale_roi_align(
            levels, rois, tuple(image_size), self.roi_size, self.sampling_ratio
        )
        hidden = self.mlp(pooled, train) if self.box_head_convs > 0 else self.mlp(pooled)
        return self.predictor(hidden)

    def __call__(
        self, images: jnp.ndarray, rois: jnp.ndarray, train: bool = False
    ) -> dict[str, Any]:
        """Everything at once (used by ``init``): :meth:`rpn`, then :meth:`box_head` on
        ``rois`` with the input size as ``image_size``.

        Returns:
          ``{"features", "objectness", "rpn_deltas", "class_logits", "box_deltas"}``.
        """
        features, objectness, rpn_deltas = self.rpn(images, train)
        class_logits, box_deltas = self.box_head(features, rois, images.shape[1:3], train)
        return {
            "features": features,
            "objectness": objectness,
            "rpn_deltas": rpn_deltas,
            "class_logits": class_logits,
            "box_deltas": box_deltas,
        }
