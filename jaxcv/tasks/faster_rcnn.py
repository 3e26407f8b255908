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

Inference (:func:`postprocess_detections`, torchvision's ``postprocess_detections``): softmax
scores, class-specific decoding of each proposal (weights ``(10, 10, 5, 5)``), clipping, the
background column removed, scores ``<= score_threshold`` and tiny boxes masked out,
class-aware NMS, and the top ``detections_per_image`` with a ``valid`` mask. When the batch has
``original_size (B, 2)`` (the pipeline resized the images), boxes are scaled back to it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcv import types
from jaxcv.eval.detection import DetectionAccumulator
from jaxcv.ops.anchors import make_anchors
from jaxcv.ops.boxes import clip_boxes, decode_boxes, small_boxes_mask
from jaxcv.ops.nms import batched_nms
from jaxcv.tasks.base import config_sections
from jaxcv.tasks.proposal_layer import generate_proposals
from jaxcv.tasks.rcnn_targets import (
    ROI_BOX_WEIGHTS,
    batch_ground_truth,
    roi_loss,
    rpn_loss,
    sample_rois,
)

Array = jax.Array
EXAMPLE_VALID = "example_valid"
ORIGINAL_SIZE = "original_size"
IGNORE = "ignore"


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
    Ground truth narrower than ``min_gt_size`` pixels is dropped.
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


def postprocess_detections(
    class_logits: Array,
    box_deltas: Array,
    proposals: Array,
    proposal_valid: Array,
    image_size: Sequence[int],
    *,
    score_threshold: float = 0.05,
    nms_threshold: float = 0.5,
    detections_per_image: int = 100,
    min_size: float = 1e-2,
    weights: Sequence[float] = ROI_BOX_WEIGHTS,
) -> dict[str, Array]:
    """Final detections from the box head's outputs on the test proposals.

    Args:
      class_logits: ``(B, P, K + 1)`` logits (column 0 = background).
      box_deltas: ``(B, P, K + 1, 4)`` class-specific deltas.
      proposals: ``(B, P, 4)`` ``xyxy`` proposals; proposal_valid: ``(B, P)`` bool.
      image_size: static ``(H, W)`` of the network input (boxes are clipped to it).
      score_threshold: keep scores strictly above it (0.05).
      nms_threshold: class-aware NMS IoU threshold (0.5).
      detections_per_image: ``D``, the static number of output slots.
      min_size: drop boxes with a side below this.
      weights: box-coder weights.

    Returns:
      ``boxes (B, D, 4)`` float32 in input pixels, ``scores (B, D)``, ``classes (B, D)``
      int32 in ``1..K`` and ``valid (B, D)`` bool; descending score order, padding zeroed.
    """
    if class_logits.ndim != 3 or box_deltas.shape != (*class_logits.shape, 4):
        raise ValueError(
            f"class_logits must be (B, P, K + 1) and box_deltas (B, P, K + 1, 4); got "
            f"{class_logits.shape} and {box_deltas.shape}"
        )
    if proposals.shape != (*class_logits.shape[:2], 4):
        raise ValueError(
            f"proposals must be (B, P, 4) = {(*class_logits.shape[:2], 4)}; got {proposals.shape}"
        )
    size = tuple(int(s) for s in image_size)
    num_fg = class_logits.shape[-1] - 1

    def one_image(logits, deltas, props, pvalid):
        scores = jax.nn.softmax(logits, axis=-1)[:, 1:]  # (P, K)
        boxes = clip_boxes(decode_boxes(deltas[:, 1:], props[:, None, :], weights), size)
        classes = jnp.broadcast_to(jnp.arange(1, num_fg + 1, dtype=jnp.int32), scores.shape)
        boxes, scores, classes = boxes.reshape(-1, 4), scores.reshape(-1), classes.reshape(-1)
        keep = jnp.repeat(pvalid, num_fg) & (scores > score_threshold)
        keep &= ~small_boxes_mask(boxes, min_size)
        idx, ok = batched_nms(
            boxes, scores, classes, nms_threshold, detections_per_image, valid=keep
        )
        return (
            jnp.where(ok[:, None], boxes[idx], 0.0),
            jnp.where(ok, scores[idx], 0.0),
            jnp.where(ok, classes[idx], 0),
            ok,
        )

    boxes, scores, classes, valid = jax.vmap(one_image)(
        class_logits.astype(jnp.float32), box_deltas.astype(jnp.float32), proposals, proposal_valid
    )
    return {"boxes": boxes, "scores": scores, "classes": classes, "valid": valid}


def _original_scale(batch: dict[str, Any], image_size: Sequence[int]):
    """``(B, 1, 4)`` factors from input pixels to ``original_size`` pixels, or None."""
    if ORIGINAL_SIZE not in batch:
        return None
    original = jnp.asarray(batch[ORIGINAL_SIZE], jnp.float32)  # (B, 2) = (H, W)
    sy = original[:, 0] / image_size[0]
    sx = original[:, 1] / image_size[1]
    return jnp.stack([sx, sy, sx, sy], axis=-1)[:, None, :]


#: predict_fn output key -> key of :func:`postprocess_detections`. The ``pred_`` prefix keeps
#: them apart from the ground truth ``boxes``/``classes``/``valid`` of the batch, which the
#: evaluation samples of the run report merge with the outputs.
DETECTION_KEYS = {
    "pred_boxes": "boxes",
    "pred_scores": "scores",
    "pred_classes": "classes",
    "pred_valid": "valid",
}


def detection_outputs(
    detections: dict[str, Array], batch: dict[str, Any], image_size: Sequence[int]
) -> dict[str, Array]:
    """A detector's ``predict_fn`` outputs from :func:`postprocess_detections`' result.

    Args:
      detections: ``boxes (B, D, 4)`` in input pixels, ``scores``, ``classes``, ``valid``
        ``(B, D)``.
      batch: the batch (its ``original_size (B, 2)``, when present, scales the boxes back).
      image_size: static ``(H, W)`` of the network input.

    Returns:
      ``pred_boxes (B, D, 4)`` in original-image pixels (input pixels without
      ``original_size``), ``pred_input_boxes (B, D, 4)`` in input pixels, ``pred_scores``,
      ``pred_classes``, ``pred_valid`` ``(B, D)``.
    """
    out = {name: detections[key] for name, key in DETECTION_KEYS.items()}
    out["pred_input_boxes"] = detections["boxes"]
    scale = _original_scale(batch, image_size)
    if scale is not None:
        out["pred_boxes"] = detections["boxes"] * scale
    return out


class FasterRCNNTask:
    """The ``Task`` protocol for :class:`jaxcv.models.faster_rcnn.FasterRCNN`.

    Args:
      model: a ``FasterRCNN`` module (``rpn`` and ``box_head`` methods, ``anchor_sizes``,
        ``aspect_ratios``, ``num_classes`` fields).
      settings: :class:`FasterRCNNSettings` (default: torchvision's values).
      **overrides: fields of :class:`FasterRCNNSettings` replacing those of ``settings``.
    """

    def __init__(self, model, settings: FasterRCNNSettings | None = None, **overrides: Any):
        valid = {f.name for f in dataclasses.fields(FasterRCNNSettings)}
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise ValueError(
                f"unknown Faster R-CNN setting(s) {unknown}; valid: {', '.join(sorted(valid))}"
            )
        self.model = model
        self.settings = dataclasses.replace(settings or FasterRCNNSettings(), **overrides)

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _images(batch: dict[str, Any]) -> Array:
        images = jnp.asarray(batch[types.IMAGE])
        if images.ndim != 4:
            raise ValueError(f"batch['image'] must be (B, H, W, C); got shape {images.shape}")
        return images

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
        mask head): ``(loss, metrics, new_model_state, aux)`` with ``aux``: ``features
        (B, h, w, C)``, ``sampled`` (:func:`~jaxcv.tasks.rcnn_targets.sample_rois`'s dict:
        ``rois``, ``labels``, ``targets``, ``valid``, ``matched``), ``gt_valid (B, M)`` (after
        sanitising) and ``variables`` (params plus the updated model state).
        """
        s = self.settings
        images = self._images(batch)
        image_size = images.shape[1:3]
        gt_boxes, gt_classes, gt_valid, dropped = batch_ground_truth(
            batch, image_size, self.model.num_classes, s.min_gt_size
        )
        variables = {"params": params, **(model_state or {})}
        (features, objectness, rpn_deltas), updates = self._rpn(variables, images, train)
        anchors = self.anchors(features.shape[1:3])
        rpn_key, roi_key = jax.random.split(rng)
        rpn_cls, rpn_box, num_pos = rpn_loss(
            rpn_key,
            objectness,
            rpn_deltas,
            anchors,
            gt_boxes,
            gt_valid,
            batch_size_per_image=s.rpn_batch_size_per_image,
            positive_fraction=s.rpn_positive_fraction,
            high_threshold=s.rpn_fg_iou,
            low_threshold=s.rpn_bg_iou,
            beta=s.rpn_box_beta,
        )
        proposals, _, proposal_valid = generate_proposals(
            objectness,
            rpn_deltas,
            anchors,
            image_size,
            pre_nms_top_n=s.rpn_pre_nms_top_n_train if train else s.rpn_pre_nms_top_n_test,
            post_nms_top_n=s.rpn_post_nms_top_n_train if train else s.rpn_post_nms_top_n_test,
            nms_threshold=s.rpn_nms_threshold,
            min_size=s.rpn_min_size,
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
        class_logits, box_deltas = self.model.apply(
            variables, features, sampled["rois"], method="box_head"
        )
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
          ``(outputs, features)``: ``outputs`` as :meth:`predict_fn`; ``features (B, h, w, C)``.
        """
        s = self.settings
        images = self._images(batch)
        image_size = images.shape[1:3]
        features, objectness, rpn_deltas = self.model.apply(
            variables, images, train=False, method="rpn"
        )
        anchors = self.anchors(features.shape[1:3])
        proposals, _, proposal_valid = generate_proposals(
            objectness,
            rpn_deltas,
            anchors,
            image_size,
            pre_nms_top_n=s.rpn_pre_nms_top_n_test,
            post_nms_top_n=s.rpn_post_nms_top_n_test,
            nms_threshold=s.rpn_nms_threshold,
            min_size=s.rpn_min_size,
        )
        class_logits, box_deltas = self.model.apply(
            variables, features, proposals, method="box_head"
        )
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


class DetectionEvaluator:
    """VOC07 mAP@0.5 and COCO AP of detections, over one evaluation pass.

    ``update`` takes the NumPy batch (``boxes``, ``classes``, ``valid``, optional
    ``example_valid``, ``original_size`` and ``ignore``) and the outputs of
    :meth:`FasterRCNNTask.predict_fn` (``pred_boxes``, ``pred_scores``, ``pred_classes``,
    ``pred_valid``: :func:`detection_outputs`); ground truth is scaled to ``original_size``
    like the detections. ``result()`` gives ``mAP50`` (VOC2007 11-point), ``AP``, ``AP50``, ``AP75``
    (COCO) and ``num_images``.
    """

    def __init__(self) -> None:
        self.accumulator = DetectionAccumulator()

    def update(self, batch: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
        """Add one batch (see the class docstring)."""
        self.accumulator.add(**self.accumulator_inputs(batch, outputs))

    def accumulator_inputs(
        self, batch: dict[str, np.ndarray], outputs: dict[str, np.ndarray]
    ) -> dict[str, Any]:
        """The keyword arguments of ``DetectionAccumulator.add`` for one batch (ground truth
        scaled to ``original_size``); subclasses add e.g. masks."""
        images = np.asarray(batch[types.IMAGE])
        gt_boxes = np.asarray(batch[types.BOXES], np.float64)
        if ORIGINAL_SIZE in batch:
            original = np.asarray(batch[ORIGINAL_SIZE], np.float64)
            sy, sx = original[:, 0] / images.shape[1], original[:, 1] / images.shape[2]
            gt_boxes = gt_boxes * np.stack([sx, sy, sx, sy], axis=-1)[:, None, :]
        return {
            "gt_boxes": gt_boxes,
            "gt_classes": batch[types.CLASSES],
            "gt_valid": batch.get(types.VALID),
            "gt_difficult": batch.get(IGNORE),
            "det_boxes": outputs["pred_boxes"],
            "det_scores": outputs["pred_scores"],
            "det_classes": outputs["pred_classes"],
            "det_valid": outputs["pred_valid"],
            "example_valid": batch.get(EXAMPLE_VALID),
        }

    def result(self) -> dict[str, float]:
        """``{"mAP50", "AP", "AP50", "AP75", "num_images"}`` (NaN without images)."""
        if not len(self.accumulator):
            nan = float("nan")
            return {"mAP50": nan, "AP": nan, "AP50": nan, "AP75": nan, "num_images": 0.0}
        coco = self.accumulator.coco()
        return {
            "mAP50": float(self.accumulator.voc()["mAP"]),
            "AP": float(coco["AP"]),
            "AP50": float(coco["AP50"]),
            "AP75": float(coco["AP75"]),
            "num_images": float(len(self.accumulator)),
        }


def task_from_config(config, model) -> FasterRCNNTask:
    """``FasterRCNNTask(model, **config.detection)`` (an absent ``config.detection`` section
    means the defaults); the constructor for the loop's ``TASKS["faster_rcnn"]``."""
    return FasterRCNNTask(model, **config_sections(config, "detection"))
