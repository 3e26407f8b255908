"""Faster R-CNN with a feature pyramid (torchvision's ``fasterrcnn_resnet50_fpn``) as a task.

:class:`FasterRCNNFPNTask` is :class:`jaxcv.tasks.faster_rcnn.FasterRCNNTask` (the same joint
loss, RoI sampling, losses, post-processing and evaluator, one jitted step with static shapes)
for :class:`jaxcv.models.faster_rcnn_fpn.FasterRCNNFPN`, whose RPN runs on five levels
(``"0".."3"``, ``"pool"``) and whose box head pools each RoI from its own level. Three steps
differ, as in torchvision's ``RegionProposalNetwork`` and ``RoIHeads``:

* anchors: one size per level, ``32, 64, 128, 256, 512`` pixels, aspect ratios ``0.5, 1, 2``
  (:func:`jaxcv.tasks.fpn_proposal_layer.fpn_anchors`, strides ``input // feature``). The RPN
  loss labels the anchors of all levels together (IoU >= 0.7 / < 0.3, each object's best
  anchors positive) and samples 256 per image, half positive at most;
* proposals: :func:`~jaxcv.tasks.fpn_proposal_layer.generate_fpn_proposals`:
  ``rpn_pre_nms_top_n_*`` anchors *per level* by objectness, decoded, clipped, NMS at 0.7
  within each level, then the ``rpn_post_nms_top_n_*`` best per image (torchvision's training
  numbers 2000 / 2000, test 1000 / 1000: :data:`FPN_SETTINGS`);
* the box head: :meth:`FasterRCNNFPN.box_head`'s multi-scale RoI align (each RoI on the level
  of FPN eq. 1), the two-MLP head and the predictor, on 512 sampled RoIs per image (25%
  foreground at most).

The network input is the pipeline's fixed canvas (``data.image_size``): anchors, proposals'
clipping and the RoI align's level scales come from that static size, as torchvision's from a
batch padded to the same size.

A converted torchvision detector (``jaxcv convert torchvision fasterrcnn_resnet50_fpn``)
fine-tunes on a dataset with other classes through ``model.init_from`` with
``model.init_fresh=["box_predictor"]`` (the class-dependent ``cls_score`` and ``bbox_pred``
start fresh). Models with BatchNorm in their heads (torchvision's ``_v2``) run at test time
only: training them would need the heads' batch statistics, which :meth:`box_head` does not
update (:meth:`FasterRCNNFPNTask.detector_loss` refuses).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxcv.tasks.faster_rcnn import FasterRCNNSettings, FasterRCNNTask
from jaxcv.tasks.fpn_proposal_layer import (
    FPN_ANCHOR_SIZES,
    FPN_ASPECT_RATIOS,
    fpn_anchors,
    generate_fpn_proposals,
)
from jaxcv.tasks.settings import settings_from_config

__all__ = ["FPN_SETTINGS", "FasterRCNNFPNTask", "task_from_config"]

Array = jax.Array

#: torchvision's ``fasterrcnn_resnet50_fpn`` defaults: per-level pre-NMS top 2000 (train) /
#: 1000 (test), 2000 / 1000 proposals per image; the rest as :class:`FasterRCNNSettings`.
FPN_SETTINGS = FasterRCNNSettings(
    rpn_pre_nms_top_n_train=2000,
    rpn_post_nms_top_n_train=2000,
    rpn_pre_nms_top_n_test=1000,
    rpn_post_nms_top_n_test=1000,
)


class FasterRCNNFPNTask(FasterRCNNTask):
    """The ``Task`` protocol for :class:`jaxcv.models.faster_rcnn_fpn.FasterRCNNFPN`.

    Args:
      model: a ``FasterRCNNFPN`` (``rpn`` returning per-level outputs, ``box_head(features,
        rois, image_size)``; ``num_anchors`` = 3, one size and three ratios per level).
      settings: :class:`~jaxcv.tasks.faster_rcnn.FasterRCNNSettings` (default
        :data:`FPN_SETTINGS`); ``rpn_pre_nms_top_n_*`` count per level.
      **overrides: fields of the settings replacing those of ``settings``.
    """

    anchor_sizes: Sequence[Sequence[float]] = FPN_ANCHOR_SIZES
    aspect_ratios: Sequence[float] = FPN_ASPECT_RATIOS

    def __init__(self, model, settings: FasterRCNNSettings | None = None, **overrides: Any):
        super().__init__(model, settings or FPN_SETTINGS, **overrides)
        per_position = len(self.aspect_ratios) * len(self.anchor_sizes[0])
        if getattr(model, "num_anchors", per_position) != per_position:
            raise ValueError(
                f"the FPN RPN has {per_position} anchors per position and level (sizes "
                f"{self.anchor_sizes}, ratios {self.aspect_ratios}); the model predicts "
                f"{model.num_anchors} (model.num_anchors)"
            )

    def rpn_anchors(self, features: dict[str, Array], image_size: Sequence[int]) -> list[Array]:
        """One ``(h_l * w_l * 3, 4)`` grid per level of ``features`` (finest first), strides
        ``image_size // feature_size`` (:func:`~jaxcv.tasks.fpn_proposal_layer.fpn_anchors`)."""
        sizes = [f.shape[1:3] for f in features.values()]
        grids = fpn_anchors(sizes, image_size, self.anchor_sizes, self.aspect_ratios)
        return [jnp.asarray(a) for a in grids]

    def propose(
        self,
        objectness: list[Array],
        deltas: list[Array],
        anchors: list[Array],
        image_size: Sequence[int],
        *,
        train: bool,
    ) -> tuple[Array, Array]:
        """Per-level top-k, decoding, clipping to ``image_size``, per-level NMS, the best
        ``rpn_post_nms_top_n_*`` per image: ``(B, P, 4)`` boxes and ``valid (B, P)``."""
        s = self.settings
        boxes, _, valid = generate_fpn_proposals(
            objectness,
            deltas,
            anchors,
            tuple(int(v) for v in image_size),
            pre_nms_top_n=s.rpn_pre_nms_top_n_train if train else s.rpn_pre_nms_top_n_test,
            post_nms_top_n=s.rpn_post_nms_top_n_train if train else s.rpn_post_nms_top_n_test,
            nms_threshold=s.rpn_nms_threshold,
            min_size=s.rpn_min_size,
        )
        return boxes, valid

    def box_head(
        self, variables: dict, features: dict[str, Array], rois: Array, image_size: Sequence[int]
    ) -> tuple[Array, Array]:
        """Multi-scale RoI align over the levels ``"0".."3"`` (scales from ``image_size``), the
        box head and the predictor: ``(B, R, K + 1)`` logits, ``(B, R, K + 1, 4)`` deltas."""
        size = tuple(int(v) for v in image_size)
        return self.model.apply(variables, features, rois, size, method="box_head")

    def detector_loss(self, params, model_state, batch, rng, *, train: bool = True):
        """:meth:`FasterRCNNTask.detector_loss` (same arguments and outputs; ``aux["features"]``
        is the dict of levels).

        Raises:
          NotImplementedError: training a model with BatchNorm in its heads (torchvision's
            ``_v2``, ``head_batch_norm``): their batch statistics are not implemented
            (inference runs them on their running statistics).
        """
        if train and getattr(self.model, "head_batch_norm", False):
            raise NotImplementedError(
                "training a detector with BatchNorm in its heads (head_batch_norm=True, "
                "torchvision's _v2) is not supported: the heads' batch statistics would not "
                "be updated; train the v1 layout (head_batch_norm=False)"
            )
        return super().detector_loss(params, model_state, batch, rng, train=train)


def task_from_config(config, model) -> FasterRCNNFPNTask:
    """The task of ``config.task == "faster_rcnn_fpn"`` around ``model``, its settings from
    ``config.detection`` over :data:`FPN_SETTINGS` (absent keys keep those)."""
    settings = settings_from_config(FasterRCNNSettings, config, "detection", defaults=FPN_SETTINGS)
    return FasterRCNNFPNTask(model, settings)
