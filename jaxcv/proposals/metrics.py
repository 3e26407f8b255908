"""Proposal quality: recall at an IoU threshold and (mean) average best overlap.

As in Uijlings et al. 2013 (sec. 5.1): the *best overlap* of a ground-truth box is its highest
IoU with any proposal of its image; ABO averages it over boxes, MABO averages the per-class
ABOs over classes, and recall at ``t`` is the fraction of boxes whose best overlap is ``>= t``.

IoU is :func:`jaxcv.ops.boxes.box_iou`, jitted, with proposals and ground truth padded to
bucketed counts (zero boxes, which overlap nothing) so it compiles only a few times.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

from jaxcv.ops.boxes import box_iou

_PROPOSAL_BUCKET = 256
_GT_BUCKET = 8


@jax.jit
def _best_iou(gt: jax.Array, proposals: jax.Array) -> jax.Array:
    return box_iou(gt, proposals).max(axis=-1)


def _padded(boxes: np.ndarray, bucket: int) -> np.ndarray:
    n = max(bucket, -(-len(boxes) // bucket) * bucket)
    out = np.zeros((n, 4), np.float32)
    out[: len(boxes)] = boxes
    return out


def _as_boxes(boxes, what: str, index: int) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float32)
    if boxes.ndim == 1 and boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{what}[{index}] must be (N, 4) xyxy boxes, got shape {boxes.shape}")
    return boxes


def best_overlaps(
    proposals: Sequence[np.ndarray], gt_boxes: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """Best IoU of every ground-truth box with its image's proposals.

    Args:
      proposals: per image ``i``, ``(N_i, 4)`` xyxy pixel boxes.
      gt_boxes: per image ``i``, ``(M_i, 4)`` xyxy pixel boxes (only real objects: drop
        padding first).

    Returns:
      Per image, ``(M_i,)`` float32 best overlaps in ``[0, 1]`` (0 when ``N_i = 0``).
    """
    if len(proposals) != len(gt_boxes):
        raise ValueError(
            f"got proposals for {len(proposals)} images but ground truth for {len(gt_boxes)}"
        )
    out = []
    for i, (props, gt) in enumerate(zip(proposals, gt_boxes, strict=True)):
        props, gt = _as_boxes(props, "proposals", i), _as_boxes(gt, "gt_boxes", i)
        if len(gt) == 0:
            out.append(np.zeros(0, np.float32))
            continue
        best = _best_iou(_padded(gt, _GT_BUCKET), _padded(props, _PROPOSAL_BUCKET))
        out.append(np.asarray(best)[: len(gt)])
    return out


def proposal_recall(
    proposals: Sequence[np.ndarray],
    gt_boxes: Sequence[np.ndarray],
    iou_threshold: float = 0.5,
) -> float:
    """Fraction of ground-truth boxes covered by a proposal with IoU ``>= iou_threshold``.

    Args:
      proposals: per image, ``(N_i, 4)`` xyxy pixel boxes.
      gt_boxes: per image, ``(M_i, 4)`` xyxy pixel boxes.
      iou_threshold: in ``(0, 1]``.

    Raises:
      ValueError: mismatched lengths, bad shapes, a threshold outside ``(0, 1]`` or no
        ground-truth boxes at all.
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    overlaps = np.concatenate([np.zeros(0, np.float32), *best_overlaps(proposals, gt_boxes)])
    if overlaps.size == 0:
        raise ValueError("recall is undefined without ground-truth boxes")
    return float(np.mean(overlaps >= np.float32(iou_threshold)))


def mean_best_overlap(
    proposals: Sequence[np.ndarray],
    gt_boxes: Sequence[np.ndarray],
    gt_classes: Sequence[np.ndarray] | None = None,
) -> float:
    """MABO: the mean over classes of the average best overlap of that class's boxes.

    Args:
      proposals: per image, ``(N_i, 4)`` xyxy pixel boxes.
      gt_boxes: per image, ``(M_i, 4)`` xyxy pixel boxes.
      gt_classes: per image, ``(M_i,)`` class ids; None averages over all boxes (ABO).

    Raises:
      ValueError: mismatched lengths or shapes, or no ground-truth boxes at all.
    """
    overlaps = best_overlaps(proposals, gt_boxes)
    flat = np.concatenate([np.zeros(0, np.float32), *overlaps]).astype(np.float64)
    if flat.size == 0:
        raise ValueError("mean best overlap is undefined without ground-truth boxes")
    if gt_classes is None:
        return float(flat.mean())
    if len(gt_classes) != len(overlaps):
        raise ValueError(f"gt_classes has {len(gt_classes)} images, gt_boxes {len(overlaps)}")
    classes = []
    for i, (c, o) in enumerate(zip(gt_classes, overlaps, strict=True)):
        c = np.asarray(c).reshape(-1)
        if c.shape != o.shape:
            raise ValueError(f"gt_classes[{i}] must be ({len(o)},), got shape {c.shape}")
        classes.append(c)
    classes = np.concatenate(classes)
    return float(np.mean([flat[classes == c].mean() for c in np.unique(classes)]))
