"""Fast R-CNN as a :class:`jaxcv.tasks.base.Task`; the RoI-head task shared with R-CNN.

Both detectors score *external* proposals (selective search, joined to the batches by
:mod:`jaxcv.proposals.pipeline`: ``proposals (B, P, 4)`` xyxy input pixels and
``proposal_valid (B, P)``). :class:`ProposalDetectionTask` holds what they share; the model is
any module with ``apply(variables, images, rois, train) -> {"class_logits": (B, R, K + 1),
"box_deltas": (B, R, K + 1, 4)}`` (:class:`jaxcv.models.fast_rcnn.FastRCNN`,
:class:`jaxcv.models.rcnn.RCNN`).

Training (one jitted step, static shapes): ground truth sanitised
(:func:`~jaxcv.tasks.rcnn_targets.batch_ground_truth`), ``roi_batch_size_per_image`` RoIs
sampled per image among the valid proposals plus the ground-truth boxes (IoU >= 0.5: the
object's class; below 0.5: background; at most 25% foreground), by sorting random priorities
(:func:`~jaxcv.tasks.rcnn_targets.sample_rois`); the model runs on the sampled RoIs only; the
multi-task loss (:func:`~jaxcv.tasks.rcnn_targets.roi_loss`): softmax cross-entropy plus
``box_weight`` (the paper's lambda = 1) times smooth-L1 on the ground-truth class's deltas of
the foreground RoIs (``box_beta`` = 1, the paper's smooth-L1). Images without objects give a
background-only loss.

Inference: the model scores every valid proposal, in chunks of ``test_chunk_size`` proposals
(a ``lax.map`` over chunks bounds memory; 0 = all at once), then
:func:`~jaxcv.tasks.detection.postprocess_detections`: softmax, class-specific decoding,
clipping, score threshold, class-aware NMS (``box_nms_threshold``, 0.3 in the papers), the
top ``detections_per_image`` with a ``valid`` mask; boxes are scaled to ``original_size``.
Evaluation: :class:`~jaxcv.tasks.detection.DetectionEvaluator` (``mAP50``, COCO AP).
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import jax
import jax.numpy as jnp

from jaxcv import types
from jaxcv.tasks.detection import DetectionEvaluator, detection_outputs, postprocess_detections
from jaxcv.tasks.inputs import batch_images
from jaxcv.tasks.rcnn_targets import batch_ground_truth, roi_loss, sample_rois
from jaxcv.tasks.settings import replace_settings, settings_from_config

Array = jax.Array
T = TypeVar("T", bound="ProposalDetectionTask")


@dataclasses.dataclass(frozen=True)
class ProposalDetectionSettings:
    """Training and inference hyperparameters of a detector on external proposals.

    RoI sampling: ``roi_batch_size_per_image`` RoIs per image (Fast R-CNN: 128 per minibatch of
    2 images = 64), at most ``roi_positive_fraction`` foreground (IoU >= ``roi_fg_iou``),
    background in ``[roi_bg_iou_low, roi_bg_iou)`` (Fast R-CNN: ``[0.1, 0.5)``, R-CNN and
    torchvision: ``[0, 0.5)``); ``add_gt_boxes`` adds the ground truth to the candidates.
    Loss: ``cls_weight`` x cross-entropy + ``box_weight`` x smooth-L1 (transition
    ``box_beta``). Inference: ``box_score_threshold``, ``box_nms_threshold``,
    ``detections_per_image``, ``box_min_size``; ``test_chunk_size`` proposals per model call
    (0: all). Ground truth narrower than ``min_gt_size`` pixels is dropped.
    """

    roi_batch_size_per_image: int = 64
    roi_positive_fraction: float = 0.25
    roi_fg_iou: float = 0.5
    roi_bg_iou: float = 0.5
    roi_bg_iou_low: float = 0.0
    add_gt_boxes: bool = True
    box_beta: float = 1.0
    cls_weight: float = 1.0
    box_weight: float = 1.0
    box_score_threshold: float = 0.05
    box_nms_threshold: float = 0.3
    detections_per_image: int = 100
    box_min_size: float = 1e-2
    test_chunk_size: int = 0
    min_gt_size: float = 1.0


class ProposalDetectionTask:
    """The ``Task`` protocol for a RoI classifier/regressor on external proposals.

    Args:
      model: the detector module (see the module docstring; ``num_classes`` field).
      settings: :class:`ProposalDetectionSettings` (default: the class defaults).
      **overrides: fields of :class:`ProposalDetectionSettings` replacing those of ``settings``.
    """

    default_settings = ProposalDetectionSettings()

    def __init__(self, model, settings: ProposalDetectionSettings | None = None, **overrides):
        self.model = model
        self.settings = replace_settings(settings or self.default_settings, overrides)
        if self.settings.test_chunk_size < 0:
            raise ValueError(f"test_chunk_size must be >= 0; got {self.settings.test_chunk_size}")

    @staticmethod
    def _inputs(batch: dict[str, Any]) -> tuple[Array, Array, Array]:
        images = batch_images(batch)
        if types.PROPOSALS not in batch:
            raise ValueError(
                "the batch has no 'proposals': add a config.proposals section so the pipeline "
                "joins the selective-search proposals (jaxcv.proposals.pipeline)"
            )
        proposals = jnp.asarray(batch[types.PROPOSALS], jnp.float32)
        valid = jnp.asarray(batch[types.PROPOSAL_VALID], bool)
        if proposals.shape != (images.shape[0], proposals.shape[1], 4):
            raise ValueError(f"batch['proposals'] must be (B, P, 4); got {proposals.shape}")
        if valid.shape != proposals.shape[:2]:
            raise ValueError(f"batch['proposal_valid'] must be (B, P); got {valid.shape}")
        return images, proposals, valid

    def _apply(self, variables, images, rois, train, rng=None):
        """Model outputs on ``rois (B, R, 4)`` and the updated model state (train mode)."""
        rngs = {"dropout": rng} if rng is not None else {}
        if train:
            mutable = [k for k in variables if k != "params"]
            out, updates = self.model.apply(
                variables, images, rois, train=True, rngs=rngs, mutable=mutable
            )
            return out["class_logits"], out["box_deltas"], dict(updates)
        out = self.model.apply(variables, images, rois, train=False)
        return out["class_logits"], out["box_deltas"], {}

    def init_variables(self, rng: Array, batch: dict[str, Any]) -> dict:
        """Initialise from ``batch['image'] (B, H, W, C)`` and one RoI per image."""
        images = jnp.asarray(batch[types.IMAGE])
        rois = jnp.tile(jnp.array([[[0.0, 0.0, 16.0, 16.0]]]), (images.shape[0], 1, 1))
        return dict(self.model.init({"params": rng, "dropout": rng}, images, rois, train=False))

    def loss_fn(self, params, model_state, batch, rng, *, train: bool = True):
        """The multi-task loss of one batch.

        Args:
          params: the ``params`` collection; model_state: e.g. ``{'batch_stats': ...}`` or ``{}``.
          batch: ``image (B, H, W, 3)``, ``proposals (B, P, 4)``, ``proposal_valid (B, P)``,
            ``boxes (B, M, 4)`` xyxy input pixels, ``classes (B, M)`` in ``1..K``,
            ``valid (B, M)``, optional ``example_valid (B,)``.
          rng: key for RoI sampling and dropout.
          train: training mode (dropout, BatchNorm batch statistics).

        Returns:
          ``(loss, (metrics, new_model_state))``; ``metrics``: ``loss``, ``roi_cls``,
          ``roi_box``, ``num_fg`` (foreground RoIs per image), ``num_rois`` (valid sampled
          RoIs per image), ``num_proposals`` (valid proposals per image), ``dropped_gt``.
        """
        s = self.settings
        images, proposals, proposal_valid = self._inputs(batch)
        gt_boxes, gt_classes, gt_valid, dropped = batch_ground_truth(
            batch, images.shape[1:3], self.model.num_classes, s.min_gt_size
        )
        if types.EXAMPLE_VALID in batch:
            proposal_valid &= jnp.asarray(batch[types.EXAMPLE_VALID], bool)[:, None]
        sample_key, dropout_key = jax.random.split(rng)
        sampled = sample_rois(
            sample_key,
            proposals,
            proposal_valid,
            gt_boxes,
            gt_classes,
            gt_valid,
            batch_size_per_image=s.roi_batch_size_per_image,
            positive_fraction=s.roi_positive_fraction,
            fg_threshold=s.roi_fg_iou,
            bg_threshold=s.roi_bg_iou,
            bg_low=s.roi_bg_iou_low,
            add_gt_boxes=s.add_gt_boxes,
        )
        variables = {"params": params, **(model_state or {})}
        logits, deltas, updates = self._apply(
            variables, images, sampled["rois"], train, dropout_key if train else None
        )
        cls_loss, box_loss = roi_loss(
            logits, deltas, sampled["labels"], sampled["targets"], sampled["valid"], s.box_beta
        )
        loss = s.cls_weight * cls_loss + s.box_weight * box_loss
        batch_size = images.shape[0]
        metrics = {
            "loss": loss,
            "roi_cls": cls_loss,
            "roi_box": box_loss,
            "num_fg": jnp.sum(sampled["labels"] > 0).astype(jnp.float32) / batch_size,
            "num_rois": jnp.sum(sampled["valid"]).astype(jnp.float32) / batch_size,
            "num_proposals": jnp.sum(proposal_valid).astype(jnp.float32) / batch_size,
            "dropped_gt": jnp.sum(dropped).astype(jnp.float32),
        }
        new_model_state = dict(model_state or {})
        new_model_state.update(updates)
        return loss, (metrics, new_model_state)

    def score_proposals(self, variables, images: Array, proposals: Array):
        """Model outputs on every proposal, ``test_chunk_size`` proposals per call.

        Args:
          images: ``(B, H, W, 3)``; proposals: ``(B, P, 4)``.

        Returns:
          ``class_logits (B, P, K + 1)`` and ``box_deltas (B, P, K + 1, 4)``.
        """
        return map_roi_chunks(
            lambda rois: self._apply(variables, images, rois, False)[:2],
            proposals,
            self.settings.test_chunk_size,
        )

    def predict_fn(self, variables: dict, batch: dict[str, Any]) -> dict[str, Array]:
        """Detections for ``batch['image'] (B, H, W, 3)`` and its ``proposals``.

        Returns:
          :func:`~jaxcv.tasks.detection.detection_outputs`: ``pred_boxes (B, D, 4)`` xyxy
          in original-image pixels (scaled by ``original_size`` when the batch has it),
          ``pred_input_boxes (B, D, 4)`` in input pixels, ``pred_scores (B, D)``,
          ``pred_classes (B, D)`` int32 in ``1..K``, ``pred_valid (B, D)`` bool,
          ``D = detections_per_image``.
        """
        images, proposals, _ = self._inputs(batch)
        logits, deltas = self.score_proposals(variables, images, proposals)
        return self.detections(batch, logits, deltas, self.settings.box_score_threshold)

    def detections(
        self, batch, scores: Array, deltas: Array, score_threshold: float, class_scores=False
    ) -> dict[str, Array]:
        """:func:`~jaxcv.tasks.detection.postprocess_detections` of ``batch``'s proposals with
        ``scores (B, P, K + 1)`` logits (or, with ``class_scores``, ``(B, P, K)`` scores taken
        as they are) and their deltas, then :func:`~jaxcv.tasks.detection.detection_outputs`."""
        s = self.settings
        images, proposals, proposal_valid = self._inputs(batch)
        out = postprocess_detections(
            scores,
            deltas,
            proposals,
            proposal_valid,
            images.shape[1:3],
            score_threshold=score_threshold,
            nms_threshold=s.box_nms_threshold,
            detections_per_image=s.detections_per_image,
            min_size=s.box_min_size,
            class_scores=class_scores,
        )
        return detection_outputs(out, batch, images.shape[1:3])

    def make_evaluator(self) -> DetectionEvaluator:
        """A fresh :class:`~jaxcv.tasks.detection.DetectionEvaluator`."""
        return DetectionEvaluator()


def map_roi_chunks(fn, rois: Array, chunk: int):
    """``fn(rois (B, C, 4)) -> pytree of (B, C, ...)`` over ``rois (B, R, 4)`` in chunks of
    ``chunk`` RoIs (0: all at once); a ``lax.map`` over the chunks bounds the memory."""
    num = rois.shape[1]
    if chunk == 0 or chunk >= num:
        return fn(rois)
    count = -(-num // chunk)
    padded = jnp.pad(rois, ((0, 0), (0, count * chunk - num), (0, 0)))
    out = jax.lax.map(fn, padded.reshape(rois.shape[0], count, chunk, 4).swapaxes(0, 1))

    def merge(x):  # (count, B, chunk, ...) -> (B, R, ...)
        x = jnp.moveaxis(x, 0, 1)
        return x.reshape(x.shape[0], count * chunk, *x.shape[3:])[:, :num]

    return jax.tree.map(merge, out)


class FastRCNNTask(ProposalDetectionTask):
    """Fast R-CNN: the paper's settings (64 RoIs per image, 25% foreground, NMS 0.3)."""


def proposal_task_from_config(task_class: type[T], config, model) -> T:
    """``task_class`` (a :class:`ProposalDetectionTask`) around ``model``, with its
    :class:`ProposalDetectionSettings` from ``config.detection`` over the class's
    ``default_settings``."""
    settings = settings_from_config(
        ProposalDetectionSettings, config, "detection", defaults=task_class.default_settings
    )
    return task_class(model, settings)


def task_from_config(config, model) -> FastRCNNTask:
    """The task of ``config.task == "fast_rcnn"`` around ``model``, with its
    :class:`ProposalDetectionSettings` from ``config.detection`` (absent: the defaults)."""
    return proposal_task_from_config(FastRCNNTask, config, model)
