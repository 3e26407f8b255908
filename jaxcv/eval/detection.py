"""Collect padded, batched detector outputs into the per-image form of the evaluators.

Detection tasks produce fixed-size arrays (:mod:`jaxcv.types`: ground truth padded to ``M``
objects with ``valid``, class 0 = background; a fixed number ``D`` of detections with a
``valid`` mask; eval batches padded with ``example_valid``). :class:`DetectionAccumulator`
drops the padding, keeps one dict per real image, and runs :func:`jaxcv.eval.coco.evaluate` or
:func:`jaxcv.eval.voc.evaluate` at the end::

    acc = DetectionAccumulator()
    for batch, out in ...:
        acc.add(gt_boxes=batch["boxes"], gt_classes=batch["classes"], gt_valid=batch["valid"],
                det_boxes=out["boxes"], det_scores=out["scores"], det_classes=out["classes"],
                det_valid=out["valid"], example_valid=batch.get("example_valid"))
    acc.voc()["mAP"], acc.coco()["AP"]
"""

from __future__ import annotations

import numpy as np

from jaxcv.eval import coco, voc


def _batched(x, name: str, rank: int, b: int | None = None) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != rank or (b is not None and a.shape[0] != b):
        want = f"rank {rank}" + (f" with batch size {b}" if b is not None else "")
        raise ValueError(f"'{name}' must have {want}, got shape {a.shape}")
    return a


class DetectionAccumulator:
    """Per-image ground truth and detections gathered from padded batches.

    Attributes:
      ground_truth, detections: lists of per-image dicts (see :func:`jaxcv.eval.coco.evaluate`).
    """

    def __init__(self) -> None:
        self.ground_truth: list[dict[str, np.ndarray]] = []
        self.detections: list[dict[str, np.ndarray]] = []

    def __len__(self) -> int:
        return len(self.ground_truth)

    def add(
        self,
        *,
        gt_boxes,
        gt_classes,
        det_boxes,
        det_scores,
        det_classes,
        gt_valid=None,
        det_valid=None,
        gt_masks=None,
        det_masks=None,
        gt_iscrowd=None,
        gt_difficult=None,
        example_valid=None,
    ) -> None:
        """Add one batch.

        Args:
          gt_boxes: ``(B, M, 4)`` xyxy pixels; gt_classes: ``(B, M)`` int, 0 = padding.
          det_boxes: ``(B, D, 4)``; det_scores: ``(B, D)``; det_classes: ``(B, D)``.
          gt_valid: ``(B, M)`` bool (default ``gt_classes > 0``); det_valid: ``(B, D)`` bool
            (default all).
          gt_masks: ``(B, M, H, W)``; det_masks: ``(B, D, H, W)`` (for mask AP).
          gt_iscrowd, gt_difficult: ``(B, M)`` bool.
          example_valid: ``(B,)`` bool, False for batch padding (those images are skipped).
        """
        gb = _batched(gt_boxes, "gt_boxes", 3)
        b = gb.shape[0]
        gc = _batched(gt_classes, "gt_classes", 2, b)
        gv = gc > 0 if gt_valid is None else _batched(gt_valid, "gt_valid", 2, b).astype(bool)
        db = _batched(det_boxes, "det_boxes", 3, b)
        ds = _batched(det_scores, "det_scores", 2, b)
        dc = _batched(det_classes, "det_classes", 2, b)
        dv = (
            np.ones(ds.shape, bool) if det_valid is None else _batched(det_valid, "det_valid", 2, b)
        )
        ev = (
            np.ones(b, bool)
            if example_valid is None
            else _batched(example_valid, "example_valid", 1, b)
        )
        gm = None if gt_masks is None else _batched(gt_masks, "gt_masks", 4, b)
        dm = None if det_masks is None else _batched(det_masks, "det_masks", 4, b)
        crowd = None if gt_iscrowd is None else _batched(gt_iscrowd, "gt_iscrowd", 2, b)
        diff = None if gt_difficult is None else _batched(gt_difficult, "gt_difficult", 2, b)
        for i in np.flatnonzero(np.asarray(ev, bool)):
            g, d = gv[i].astype(bool), np.asarray(dv[i], bool)
            gt = {"boxes": gb[i][g], "classes": gc[i][g]}
            if gm is not None:
                gt["masks"] = gm[i][g].astype(bool)
            if crowd is not None:
                gt["iscrowd"] = crowd[i][g].astype(bool)
            if diff is not None:
                gt["difficult"] = diff[i][g].astype(bool)
            det = {"boxes": db[i][d], "scores": ds[i][d], "classes": dc[i][d]}
            if dm is not None:
                det["masks"] = dm[i][d].astype(bool)
            self.ground_truth.append(gt)
            self.detections.append(det)

    def coco(self, iou_type: str = "bbox", **kwargs) -> dict[str, float]:
        """:func:`jaxcv.eval.coco.evaluate` over everything added."""
        return coco.evaluate(self.ground_truth, self.detections, iou_type, **kwargs)

    def voc(self, iou_threshold: float = 0.5, use_07_metric: bool = True, **kwargs) -> dict:
        """:func:`jaxcv.eval.voc.evaluate` over everything added."""
        return voc.evaluate(
            self.ground_truth, self.detections, iou_threshold, use_07_metric, **kwargs
        )

    def reset(self) -> None:
        """Forget everything added."""
        self.ground_truth.clear()
        self.detections.clear()
