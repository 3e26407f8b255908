"""Classification and single-object localization metrics (host-side NumPy)."""

from __future__ import annotations

import numpy as np


def _labels(labels, n: int | None = None) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or (n is not None and y.shape[0] != n):
        raise ValueError(f"labels must be (N,){f' with N={n}' if n else ''}, got {y.shape}")
    return y.astype(np.int64)


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of rows of ``scores (N, K)`` whose ``labels (N,)`` is among the top ``k``.

    Ties are resolved in favour of the label (a row counts if fewer than ``k`` classes score
    strictly higher than the label); NaN for N = 0.
    """
    s = np.asarray(scores)
    if s.ndim != 2:
        raise ValueError(f"scores must be (N, K), got {s.shape}")
    y = _labels(labels, s.shape[0])
    if not 1 <= k <= s.shape[1]:
        raise ValueError(f"k must be in [1, {s.shape[1]}], got {k}")
    if s.shape[0] == 0:
        return float("nan")
    if y.min() < 0 or y.max() >= s.shape[1]:
        raise ValueError(f"labels must be in [0, {s.shape[1]}), got [{y.min()}, {y.max()}]")
    own = s[np.arange(len(y)), y]
    higher = np.sum(s > own[:, None], axis=1)
    return float(np.mean(higher < k))


def confusion_matrix(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``(K, K)`` int64 counts, rows = true class, columns = predicted class, from ``(N,)``."""
    y = _labels(labels)
    p = _labels(pred, y.shape[0])
    for name, x in (("labels", y), ("pred", p)):
        if x.size and (x.min() < 0 or x.max() >= num_classes):
            raise ValueError(f"{name} must be in [0, {num_classes}), got [{x.min()}, {x.max()}]")
    counts = np.bincount(y * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def box_iou_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of ``(N, 4)`` and ``(N, 4)`` xyxy boxes -> ``(N,)`` (0 for empty unions)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.ndim != 2 or a.shape[1] != 4 or a.shape != b.shape:
        raise ValueError(f"boxes must both be (N, 4), got {a.shape} and {b.shape}")
    w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = w * h
    area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)
    union = area(a) + area(b) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def localization_accuracy(
    pred_classes: np.ndarray,
    pred_boxes: np.ndarray,
    labels: np.ndarray,
    boxes: np.ndarray,
    iou_threshold: float = 0.5,
) -> float:
    """ImageNet localization accuracy: class right and box IoU ``>= iou_threshold``.

    ``pred_classes (N,)``, ``pred_boxes (N, 4)``, ``labels (N,)``, ``boxes (N, 4)`` xyxy.
    """
    y = _labels(labels)
    p = _labels(pred_classes, y.shape[0])
    iou = box_iou_pairs(pred_boxes, boxes)
    if iou.shape[0] != y.shape[0]:
        raise ValueError(f"{iou.shape[0]} boxes for {y.shape[0]} labels")
    return float(np.mean((p == y) & (iou >= iou_threshold))) if len(y) else float("nan")
