"""Faster R-CNN as a :class:`jaxcv.tasks.base.Task`: joint loss, detections, evaluation.

One jitted train step runs the whole detector (approximate joint training, as in the paper's
end-to-end setting and torchvision): backbone and RPN head, the RPN loss on sampled anchors,
the proposal layer (under ``stop_gradient``), RoI sampling among the proposals plus the ground
truth, RoI align and the box head, and the Fast R-CNN loss. Every shape is static: ground truth
is padded to ``M`` with ``valid``, proposals, sampled anchors/RoIs and detections have fixed
counts with ``valid`` masks, so the step compiles once whatever the number of objects.

Ground truth is first clipped to the image; boxes that are degenerate (a side below
``min_gt_size`` after clipping), non-finite or of a class outside ``1..K`` are dropped
(``valid=False``) and counted in the ``dropped_gt`` metric. Images without objects give an
all-background RPN and RoI loss.

Inference: :func:`jaxcv.tasks.detection.postprocess_detections` (torchvision's
``postprocess_detections``) on the test proposals. When the batch has ``original_size (B, 2)``
(the pipeline resized the images), boxes are scaled back to it.

What depends on the feature layout is three methods: the anchors of each RPN output level
(:meth:`FasterRCNNTask.rpn_anchors`), the proposal layer (:meth:`~FasterRCNNTask.propose`) and the
call of the box head (:meth:`~FasterRCNNTask.box_head`). The RPN may return one array (one
stride-16 map, here) or one per level; the RPN loss labels and samples the anchors of all levels
together (torchvision's ``RegionProposalNetwork``). :mod:`jaxcv.tasks.faster_rcnn_fpn` overrides
the three for a feature pyramid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxcv.ops.anchors import make_anchors
from jaxcv.tasks.detection import DetectionEvaluator, detection_outputs, postprocess_detections
from jaxcv.tasks.inputs import batch_images
from jaxcv.tasks.proposal_layer import generate_proposals
from jaxcv.tasks.rcnn_targets import (
    batch_ground_truth,
    inside_image,
    roi_loss,
    rpn_loss,
    sample_rois,
)
from jaxcv.tasks.settings import replace_settings, settings_from_config

Array = jax.Array


def _levels(x: Any) -> list[Array]:
    """The RPN's per-level outputs as a list (a single-map RPN returns one array)."""
    return list(x) if isinstance(x, list | tuple) else [x]


def _concat(levels: list[Array], axis: int = 1) -> Array:
    """Per-level ``(B, N_l, ...)`` outputs (``axis=1``) or ``(N_l, 4)`` anchors (``axis=0``)
    joined along ``N``, in level order."""
    return levels[0] if len(levels) == 1 else jnp.concatenate(levels, axis=axis)


@dataclasses.dataclass(frozen=True)
class FasterRCNNSettings:
    """Training and inference hyperparameters (torchvision's defaults where they apply).

    RPN: ``rpn_batch_size_per_image`` anchors sampled per image with at most
    ``rpn_positive_fraction`` positives, IoU thresholds ``rpn_fg_iou`` / ``rpn_bg_iou``;
    proposals: ``rpn_pre_nms_top_n_*`` / ``rpn_post_nms_top_n_*`` for train and test, NMS at
    ``rpn_nms_threshold``, ``rpn_min_size``. RoI head: ``roi_batch_size_per_image`` RoIs with at
    most ``roi_positive_fraction`` foreground (IoU >= ``roi_fg_iou``; background below
    ``roi_bg_iou``). Losses: smooth-L1 betas and the weight of each term. Inference:
    ``box_score_threshold``, ``box_nms_threshold``, ``detections_per_image``, ``box_min_size``.
    Ground truth narrower than ``min_gt_size`` pixels is dropped. ``rpn_allowed_border``:
    None trains the RPN on every anchor (torchvision); a number ignores, in training, the anchors
    that cross the image boundary by more than that many pixels (the paper: 0).
    """

    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_fg_iou: float = 0.7
    rpn_bg_iou: float = 0.3
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 512
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 300
    rpn_nms_threshold: float = 0.7
    rpn_min_size: float = 1e-3
    roi_batch_size_per_image: int = 512
    roi_positive_fraction: float = 0.25
    roi_fg_iou: float = 0.5
    roi_bg_iou: float = 0.5
    rpn_box_beta: float = 1.0 / 9.0
    roi_box_beta: float = 1.0 / 9.0
    rpn_cls_weight: float = 1.0
    rpn_box_weight: float = 1.0
    roi_cls_weight: float = 1.0
    roi_box_weight: float = 1.0
    box_score_threshold: float = 0.05
    box_nms_threshold: float = 0.5
    detections_per_image: int = 100
    box_min_size: float = 1e-2
    min_gt_size: float = 1.0
    rpn_allowed_border: float | None = None


class FasterRCNNTask:
    """The ``Task`` protocol for :class:`jaxcv.models.faster_rcnn.FasterRCNN`.

    Args:
      model: a ``FasterRCNN`` module (``rpn`` and ``box_head`` methods, ``anchor_sizes``,
        ``aspect_ratios``, ``num_classes`` fields).
      settings: :class:`FasterRCNNSettings` (default: torchvision's values).
      **overrides: fields of :class:`FasterRCNNSettings` replacing those of ``settings``.
    """

    def __init__(self, model, settings: FasterRCNNSettings | None = None, **overrides: Any):
        self.model = model
        self.settings = replace_settings(
            settings or FasterRCNNSettings(), overrides, "Faster R-CNN setting"
        )

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _images(batch: dict[str, Any]) -> Array:
        return batch_images(batch)

    def anchors(self, feature_size: Sequence[int]) -> Array:
        """``(h * w * A, 4)`` anchors over a ``feature_size = (h, w)`` map at the model's stride.

        The backbone's true stride (16) is used rather than torchvision's
        ``image_size // feature_size``, which is off by one for sizes that are not multiples of
        16 when a backbone rounds up (e.g. a 600-pixel side gives a 38-cell ResNet map).
        """
        return make_anchors(
            tuple(feature_size),
            self.model.stride,
            self.model.anchor_sizes,
            self.model.aspect_ratios,
        )

    # -- what differs between a single feature map and a pyramid (FasterRCNNFPNTask) -----------

    def rpn_anchors(self, features: Any, image_size: Sequence[int]) -> list[Array]:
        """One ``(N_l, 4)`` anchor grid per RPN output level, in the order of the RPN's outputs
        (here one level: :meth:`anchors` over the stride-16 map)."""
        del image_size
        return [jnp.asarray(self.anchors(features.shape[1:3]))]

    def propose(
        self,
        objectness: list[Array],
        deltas: list[Array],
        anchors: list[Array],
        image_size: Sequence[int],
        *,
        train: bool,
    ) -> tuple[Array, Array]:
        """Proposals ``(B, P, 4)`` and their ``valid (B, P)`` from the RPN outputs of every level
        (:func:`~jaxcv.tasks.proposal_layer.generate_proposals` over all anchors at once, the
        ``rpn_*_top_n_*`` counts per image), under ``stop_gradient``."""
        s = self.settings
        boxes, _, valid = generate_proposals(
            _concat(objectness),
            _concat(deltas),
            _concat(anchors, axis=0),
            image_size,
            pre_nms_top_n=s.rpn_pre_nms_top_n_train if train else s.rpn_pre_nms_top_n_test,
            post_nms_top_n=s.rpn_post_nms_top_n_train if train else s.rpn_post_nms_top_n_test,
            nms_threshold=s.rpn_nms_threshold,
            min_size=s.rpn_min_size,
        )
        return boxes, valid

    def box_head(
        self, variables: dict, features: Any, rois: Array, image_size: Sequence[int]
    ) -> tuple[Array, Array]:
        """The model's box head on ``rois (B, R, 4)``: ``class_logits (B, R, K + 1)`` and
        ``box_deltas (B, R, K + 1, 4)``."""
        del image_size
        return self.model.apply(variables, features, rois, method="box_head")

    def _rpn(self, variables, images, train):
        if train and len(variables) > 1:
            mutable = [k for k in variables if k != "params"]
            outputs, updates = self.model.apply(
                variables, images, train=True, method="rpn", mutable=mutable
            )
            return outputs, dict(updates)
        return self.model.apply(variables, images, train=train, method="rpn"), {}

    # -- Task protocol -------------------------------------------------------------------------

    def init_variables(self, rng: Array, batch: dict[str, Any]) -> dict:
        """Initialise from ``batch['image'] (B, H, W, C)``: ``{'params': ...}`` (plus
        ``batch_stats`` for backbones with BatchNorm)."""
        images = self._images(batch)
        rois = jnp.tile(jnp.array([[[0.0, 0.0, 16.0, 16.0]]]), (images.shape[0], 1, 1))
        return dict(self.model.init({"params": rng}, images, rois, train=False))

    def loss_fn(self, params, model_state, batch, rng, *, train: bool = True):
        """The joint Faster R-CNN loss of one batch (:meth:`detector_loss` without its
        intermediates).

        Args:
          params: the ``params`` collection; model_state: e.g. ``{'batch_stats': ...}`` or ``{}``.
          batch: ``image (B, H, W, 3)``, ``boxes (B, M, 4)`` xyxy input pixels,
            ``classes (B, M)`` in ``1..K``, ``valid (B, M)`` bool.
          rng: key for anchor and RoI sampling.
          train: training mode (train proposal counts, BatchNorm batch statistics).

        Returns:
          ``(loss, (metrics, new_model_state))``; ``metrics``: ``loss``, ``rpn_cls``,
          ``rpn_box``, ``roi_cls``, ``roi_box``, ``num_pos`` (sampled positive anchors per
          image), ``num_fg`` (foreground RoIs per image), ``num_proposals`` (valid proposals per
          image) and ``dropped_gt`` (ground-truth boxes dropped in the batch).
        """
        loss, metrics, new_model_state, _ = self.detector_loss(
            params, model_state, batch, rng, train=train
        )
        return loss, (metrics, new_model_state)

    def detector_loss(self, params, model_state, batch, rng, *, train: bool = True):
        """:meth:`loss_fn` and the intermediates a head on the sampled RoIs needs (e.g. a
        mask head): ``(loss, metrics, new_model_state, aux)`` with ``aux``: ``features``
        (the model's: ``(B, h, w, C)``, or a dict of pyramid levels), ``sampled``
        (:func:`~jaxcv.tasks.rcnn_targets.sample_rois`'s dict: ``rois``, ``labels``,
        ``targets``, ``valid``, ``matched``), ``gt_valid (B, M)`` (after sanitising) and
        ``variables`` (params plus the updated model state).
        """
        s = self.settings
        images = self._images(batch)
        image_size = images.shape[1:3]
        gt_boxes, gt_classes, gt_valid, dropped = batch_ground_truth(
            batch, image_size, self.model.num_classes, s.min_gt_size
        )
        variables = {"params": params, **(model_state or {})}
        (features, objectness, rpn_deltas), updates = self._rpn(variables, images, train)
        objectness, rpn_deltas = _levels(objectness), _levels(rpn_deltas)
        anchors = self.rpn_anchors(features, image_size)
        all_anchors = _concat(anchors, axis=0)
        rpn_key, roi_key = jax.random.split(rng)
        rpn_cls, rpn_box, num_pos = rpn_loss(
            rpn_key,
            _concat(objectness),
            _concat(rpn_deltas),
            all_anchors,
            gt_boxes,
            gt_valid,
            batch_size_per_image=s.rpn_batch_size_per_image,
            positive_fraction=s.rpn_positive_fraction,
            high_threshold=s.rpn_fg_iou,
            low_threshold=s.rpn_bg_iou,
            beta=s.rpn_box_beta,
            usable=None
            if s.rpn_allowed_border is None
            else inside_image(all_anchors, image_size, s.rpn_allowed_border),
        )
        proposals, proposal_valid = self.propose(
            objectness, rpn_deltas, anchors, image_size, train=train
        )
        sampled = sample_rois(
            roi_key,
            proposals,
            proposal_valid,
            gt_boxes,
            gt_classes,
            gt_valid,
            batch_size_per_image=s.roi_batch_size_per_image,
            positive_fraction=s.roi_positive_fraction,
            fg_threshold=s.roi_fg_iou,
            bg_threshold=s.roi_bg_iou,
        )
        class_logits, box_deltas = self.box_head(variables, features, sampled["rois"], image_size)
        roi_cls, roi_box = roi_loss(
            class_logits,
            box_deltas,
            sampled["labels"],
            sampled["targets"],
            sampled["valid"],
            s.roi_box_beta,
        )
        loss = (
            s.rpn_cls_weight * rpn_cls
            + s.rpn_box_weight * rpn_box
            + s.roi_cls_weight * roi_cls
            + s.roi_box_weight * roi_box
        )
        batch_size = images.shape[0]
        metrics = {
            "loss": loss,
            "rpn_cls": rpn_cls,
            "rpn_box": rpn_box,
            "roi_cls": roi_cls,
            "roi_box": roi_box,
            "num_pos": num_pos / batch_size,
            "num_fg": jnp.sum(sampled["labels"] > 0).astype(jnp.float32) / batch_size,
            "num_proposals": jnp.sum(proposal_valid).astype(jnp.float32) / batch_size,
            "dropped_gt": jnp.sum(dropped).astype(jnp.float32),
        }
        new_model_state = dict(model_state or {})
        new_model_state.update(updates)
        aux = {
            "features": features,
            "sampled": sampled,
            "gt_valid": gt_valid,
            "variables": {"params": params, **new_model_state},
        }
        return loss, metrics, new_model_state, aux

    def detect(self, variables: dict, batch: dict[str, Any]) -> tuple[dict[str, Array], Array]:
        """Detections and the backbone features they came from (for heads built on top, e.g.
        a mask head).

        Returns:
          ``(outputs, features)``: ``outputs`` as :meth:`predict_fn`; ``features`` as the
          model's ``rpn`` returns them (``(B, h, w, C)``, or a dict of pyramid levels).
        """
        s = self.settings
        images = self._images(batch)
        image_size = images.shape[1:3]
        features, objectness, rpn_deltas = self.model.apply(
            variables, images, train=False, method="rpn"
        )
        proposals, proposal_valid = self.propose(
            _levels(objectness),
            _levels(rpn_deltas),
            self.rpn_anchors(features, image_size),
            image_size,
            train=False,
        )
        class_logits, box_deltas = self.box_head(variables, features, proposals, image_size)
        detections = postprocess_detections(
            class_logits,
            box_deltas,
            proposals,
            proposal_valid,
            image_size,
            score_threshold=s.box_score_threshold,
            nms_threshold=s.box_nms_threshold,
            detections_per_image=s.detections_per_image,
            min_size=s.box_min_size,
        )
        return detection_outputs(detections, batch, image_size), features

    def predict_fn(self, variables: dict, batch: dict[str, Any]) -> dict[str, Array]:
        """Detections for ``batch['image'] (B, H, W, 3)``.

        Returns:
          :func:`detection_outputs` of the detections: ``pred_boxes (B, D, 4)`` xyxy in
          original-image pixels, ``pred_input_boxes (B, D, 4)`` in input pixels,
          ``pred_scores (B, D)``, ``pred_classes (B, D)`` int32 in ``1..K``, ``pred_valid
          (B, D)`` bool, with ``D = detections_per_image``.
        """
        return self.detect(variables, batch)[0]

    def make_evaluator(self) -> DetectionEvaluator:
        """A fresh :class:`DetectionEvaluator`."""
        return DetectionEvaluator()


def task_from_config(config, model) -> FasterRCNNTask:
    """The task of ``config.task == "faster_rcnn"`` around ``model``, with its
    :class:`FasterRCNNSettings` from ``config.detection`` (absent: the defaults)."""
    return FasterRCNNTask(model, settings_from_config(FasterRCNNSettings, config, "detection"))
