"""What every detector shares: final detections, the ``predict_fn`` outputs and the evaluator.

R-CNN, Fast R-CNN, Faster R-CNN and Mask R-CNN all end in a box head scoring ``P`` proposals
per image; :func:`postprocess_detections` turns its outputs into ``D`` detections per image
(torchvision's ``postprocess_detections``: softmax scores (or given per-class scores:
``class_scores``, R-CNN's SVMs), class-specific decoding with weights
``(10, 10, 5, 5)``, clipping, the background column removed, scores ``<= score_threshold`` and
tiny boxes masked out, class-aware NMS, the top ``detections_per_image`` with a ``valid`` mask).
:func:`detection_outputs` names them for ``predict_fn`` and scales them back to
``original_size``; :class:`DetectionEvaluator` scores them (VOC07 mAP@0.5, COCO AP).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcv import types
from jaxcv.eval.detection import DetectionAccumulator
from jaxcv.ops.boxes import clip_boxes, decode_boxes, small_boxes_mask
from jaxcv.ops.nms import batched_nms
from jaxcv.tasks.rcnn_targets import ROI_BOX_WEIGHTS

__all__ = ["DETECTION_KEYS", "DetectionEvaluator", "detection_outputs", "postprocess_detections"]

Array = jax.Array


def postprocess_detections(
    class_logits: Array,
    box_deltas: Array,
    proposals: Array,
    proposal_valid: Array,
    image_size: Sequence[int] | Array,
    *,
    score_threshold: float = 0.05,
    nms_threshold: float = 0.5,
    detections_per_image: int = 100,
    min_size: float = 1e-2,
    weights: Sequence[float] = ROI_BOX_WEIGHTS,
    class_scores: bool = False,
) -> dict[str, Array]:
    """Final detections from the box head's outputs on the test proposals.

    Args:
      class_logits: ``(B, P, K + 1)`` logits (column 0 = background); with ``class_scores``
        ``(B, P, K)`` per-class scores taken as they are (no background column).
      box_deltas: ``(B, P, K + 1, 4)`` class-specific deltas (``(B, P, K, 4)`` with
        ``class_scores``).
      proposals: ``(B, P, 4)`` ``xyxy`` proposals; proposal_valid: ``(B, P)`` bool.
      image_size: static ``(H, W)`` of the network input, or a ``(B, 2)`` array of each
        image's own ``(H, W)`` before padding (torchvision's ``image_sizes``; may be traced):
        the boxes are clipped to it.
      score_threshold: keep scores strictly above it (0.05).
      nms_threshold: class-aware NMS IoU threshold (0.5).
      detections_per_image: ``D``, the static number of output slots.
      min_size: drop boxes with a side below this.
      weights: box-coder weights.
      class_scores: the scores are not softmax logits but final per-class scores (R-CNN's
        SVM scores, :mod:`jaxcv.tasks.rcnn_svm`): no softmax, no background column to drop.

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
    batch = class_logits.shape[0]
    sizes = jnp.asarray(image_size)
    if sizes.shape not in ((2,), (batch, 2)):
        raise ValueError(
            f"image_size must be (H, W) or (B, 2) = ({batch}, 2); got shape {sizes.shape}"
        )
    sizes = jnp.broadcast_to(sizes, (batch, 2))
    first = 0 if class_scores else 1  # the first foreground column
    num_fg = class_logits.shape[-1] - first

    def one_image(logits, deltas, props, pvalid, size):
        scores = logits if class_scores else jax.nn.softmax(logits, axis=-1)[:, 1:]  # (P, K)
        boxes = clip_boxes(decode_boxes(deltas[:, first:], props[:, None, :], weights), size)
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
        class_logits.astype(jnp.float32),
        box_deltas.astype(jnp.float32),
        proposals,
        proposal_valid,
        sizes,
    )
    return {"boxes": boxes, "scores": scores, "classes": classes, "valid": valid}


def _original_scale(batch: dict[str, Any], image_size: Sequence[int]):
    """``(B, 1, 4)`` factors from input pixels to ``original_size`` pixels, or None."""
    if types.ORIGINAL_SIZE not in batch:
        return None
    original = jnp.asarray(batch[types.ORIGINAL_SIZE], jnp.float32)  # (B, 2) = (H, W)
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


class DetectionEvaluator:
    """VOC07 mAP@0.5 and COCO AP of detections, over one evaluation pass.

    ``update`` takes the NumPy batch (``boxes``, ``classes``, ``valid``, optional
    ``example_valid``, ``original_size`` and ``ignore``) and the outputs of
    a detector's ``predict_fn`` (``pred_boxes``, ``pred_scores``, ``pred_classes``,
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
        if types.ORIGINAL_SIZE in batch:
            original = np.asarray(batch[types.ORIGINAL_SIZE], np.float64)
            sy, sx = original[:, 0] / images.shape[1], original[:, 1] / images.shape[2]
            gt_boxes = gt_boxes * np.stack([sx, sy, sx, sy], axis=-1)[:, None, :]
        return {
            "gt_boxes": gt_boxes,
            "gt_classes": batch[types.CLASSES],
            "gt_valid": batch.get(types.VALID),
            "gt_difficult": batch.get(types.IGNORE),
            "det_boxes": outputs["pred_boxes"],
            "det_scores": outputs["pred_scores"],
            "det_classes": outputs["pred_classes"],
            "det_valid": outputs["pred_valid"],
            "example_valid": batch.get(types.EXAMPLE_VALID),
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
