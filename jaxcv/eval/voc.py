"""PASCAL VOC detection AP (the devkit's definition, as in py-faster-rcnn's ``voc_eval``).

For each class, detections of all images are ranked by score; each is assigned to the ground
truth box of its image and class with the largest IoU (first on ties, difficult boxes included).
It is a true positive if that IoU is ``> iou_threshold`` (strictly), the box is not difficult
and not yet claimed by a higher-ranked detection; a false positive if the IoU is too low or the
box was already claimed (duplicates); and neither if the box is ``difficult``. Recall counts
non-difficult ground truth only.

* ``use_07_metric=True``: VOC2007's 11-point AP, the mean over ``t in {0, 0.1, ..., 1}`` of the
  best precision at recall ``>= t``;
* ``use_07_metric=False``: VOC2010+ AP, the exact area under the interpolated (monotone)
  precision-recall curve.

Box convention. jaxcv boxes are continuous ``xyxy`` pixel edges: a box ``[x1, x2)`` is
``x2 - x1`` wide (``pixel_inclusive=False``, the default). The devkit stores inclusive pixel
indices and adds 1 to widths and heights; ``pixel_inclusive=True`` reproduces it on boxes in the
devkit's own coordinates. Both agree exactly when the devkit box ``[xmin, xmax]`` is read as the
continuous box ``[xmin - 1, xmax]`` (what :func:`jaxcv.eval.formats.load_voc_annotation` returns).

Tie-breaking. The devkit's score sort (MATLAB ``sort``, NumPy quicksort in py-faster-rcnn) leaves
the order of equal scores unspecified; here equal scores keep image order, then detection order
within the image (a stable sort), so results are deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from jaxcv.eval._inputs import check_detections, check_ground_truth


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = True) -> float:
    """AP from a ranked list's cumulative ``recall (N,)`` and ``precision (N,)``.

    11-point interpolated AP when ``use_07_metric`` (VOC2007), else the area under the
    monotone precision envelope (VOC2010+), exactly as the devkit computes them.
    """
    recall = np.asarray(recall, np.float64)
    precision = np.asarray(precision, np.float64)
    if recall.ndim != 1 or recall.shape != precision.shape:
        raise ValueError(
            f"recall and precision must be (N,) of equal length, got {recall.shape} and "
            f"{precision.shape}"
        )
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            above = recall >= t
            p = np.max(precision[above]) if np.any(above) else 0.0
            ap = ap + p / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _iou(dt: np.ndarray, gt: np.ndarray, offset: float) -> np.ndarray:
    """``(D, 4)``, ``(G, 4)`` xyxy -> ``(D, G)`` IoU, widths ``x2 - x1 + offset`` (0 or 1)."""
    iw = np.minimum(dt[:, None, 2], gt[None, :, 2]) - np.maximum(dt[:, None, 0], gt[None, :, 0])
    ih = np.minimum(dt[:, None, 3], gt[None, :, 3]) - np.maximum(dt[:, None, 1], gt[None, :, 1])
    inter = np.maximum(iw + offset, 0.0) * np.maximum(ih + offset, 0.0)
    da = (dt[:, 2] - dt[:, 0] + offset) * (dt[:, 3] - dt[:, 1] + offset)
    ga = (gt[:, 2] - gt[:, 0] + offset) * (gt[:, 3] - gt[:, 1] + offset)
    union = da[:, None] + ga[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def evaluate(
    ground_truth: Sequence[Mapping[str, np.ndarray]],
    detections: Sequence[Mapping[str, np.ndarray]],
    iou_threshold: float = 0.5,
    use_07_metric: bool = True,
    *,
    pixel_inclusive: bool = False,
    classes: Sequence[int] | None = None,
) -> dict:
    """VOC mAP of ``detections`` against ``ground_truth``.

    Args:
      ground_truth: one dict per image: ``boxes (G, 4)`` xyxy pixels, ``classes (G,)`` int,
        optional ``difficult (G,)`` bool and ``valid (G,)`` bool (padding rows dropped).
      detections: one dict per image, same order: ``boxes (D, 4)``, ``scores (D,)``,
        ``classes (D,)``, optional ``valid (D,)``.
      iou_threshold: a detection matches when IoU ``>`` this (the devkit's strict test).
      use_07_metric: 11-point AP (VOC2007) if True, else area under the curve (VOC2010+).
      pixel_inclusive: add 1 to widths/heights (the devkit's inclusive pixel boxes).
      classes: classes to evaluate (default: every class with ground truth, difficult or not);
        detections of other classes are ignored.

    Returns:
      ``{"mAP": float, "AP": {class: float}}``. A class whose ground truth is all difficult
      (or absent) has AP NaN and is left out of the mean; ``mAP`` is NaN if no class counts.
    """
    if len(ground_truth) != len(detections):
        raise ValueError(
            f"ground_truth has {len(ground_truth)} images but detections has {len(detections)}"
        )
    if not 0.0 <= iou_threshold < 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1), got {iou_threshold}")
    gts = [check_ground_truth(g, i) for i, g in enumerate(ground_truth)]
    dts = [check_detections(d, i) for i, d in enumerate(detections)]
    offset = 1.0 if pixel_inclusive else 0.0
    if classes is None:
        classes = np.unique(np.concatenate([g.classes for g in gts] + [np.zeros(0, np.int64)]))
    classes = [int(c) for c in classes]

    # Per detection: its image, class, score, best-IoU ground truth (global index) and IoU.
    parts, gt_offset = [], 0
    for i, (g, d) in enumerate(zip(gts, dts, strict=True)):
        n = len(d.scores)
        best = np.full(n, -1, np.int64)
        best_iou = np.full(n, -np.inf)
        if n and len(g.classes):
            iou = _iou(d.boxes, g.boxes, offset)
            same = d.classes[:, None] == g.classes[None, :]
            iou = np.where(same, iou, -np.inf)
            j = np.argmax(iou, axis=1)
            best_iou = iou[np.arange(n), j]
            best = np.where(np.isfinite(best_iou), j + gt_offset, -1)
        parts.append((np.full(n, i), d.classes, d.scores, best, best_iou))
        gt_offset += len(g.classes)
    img, det_cls, score, best, best_iou = (
        np.concatenate([p[k] for p in parts]) if parts else np.zeros(0) for k in range(5)
    )
    gt_cls = np.concatenate([g.classes for g in gts] + [np.zeros(0, np.int64)])
    gt_difficult = np.concatenate([g.difficult for g in gts] + [np.zeros(0, bool)])
    best = best.astype(np.int64)

    ap = {}
    for c in classes:
        npos = int(np.count_nonzero((gt_cls == c) & ~gt_difficult))
        sel = np.flatnonzero(det_cls == c)
        sel = sel[np.lexsort((sel, img[sel], -score[sel]))]  # by score, then image/detection
        hit = best_iou[sel] > iou_threshold
        gt_j = best[sel]
        difficult = hit & np.r_[gt_difficult, False][gt_j]  # gt_j = -1: no ground truth
        claim = hit & ~difficult
        first = np.zeros(len(sel), bool)  # the first claim of each ground-truth box wins
        _, idx = np.unique(gt_j[claim], return_index=True)
        first[np.flatnonzero(claim)[idx]] = True
        tp = np.cumsum(first).astype(np.float64)
        fp = np.cumsum(~hit | (claim & ~first)).astype(np.float64)
        if npos == 0:
            ap[c] = float("nan")
            continue
        rec = tp / float(npos)
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        ap[c] = voc_ap(rec, prec, use_07_metric)
    values = [v for v in ap.values() if not np.isnan(v)]
    return {"mAP": float(np.mean(values)) if values else float("nan"), "AP": ap}
