"""Semantic segmentation metrics: the four of the FCN paper, from a streaming confusion matrix.

With ``n_ij`` the number of pixels of class ``i`` predicted as ``j``, ``t_i = sum_j n_ij`` the
pixels of class ``i`` and ``k`` the number of classes (Long, Shelhamer & Darrell, 2015):

* pixel accuracy ``sum_i n_ii / sum_i t_i``;
* mean accuracy ``(1/k) sum_i n_ii / t_i``;
* mean IoU ``(1/k) sum_i n_ii / (t_i + sum_j n_ji - n_ii)``;
* frequency-weighted IoU ``(sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)``.

Pixels whose target is ``ignore_label`` (255) are skipped. Classes with an undefined ratio
(absent from the target for accuracy; absent from both target and prediction for IoU) are left
out of the means, as ``np.nanmean`` does.
"""

from __future__ import annotations

import numpy as np

from jaxcv.types import IGNORE_LABEL


def confusion_matrix(
    pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_label: int = IGNORE_LABEL
) -> np.ndarray:
    """``(num_classes, num_classes)`` int64 counts, rows = target class, columns = prediction.

    Args:
      pred: ``(...)`` integer predicted labels (e.g. ``(B, H, W)``).
      target: ``(...)`` integer labels, same shape; ``ignore_label`` pixels are skipped.
      num_classes: K; labels must be in ``[0, K)`` (predictions outside raise ``ValueError``).
    """
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {pred.shape} vs {target.shape}")
    if not (np.issubdtype(pred.dtype, np.integer) and np.issubdtype(target.dtype, np.integer)):
        raise ValueError(
            f"pred and target must be integer label maps, got {pred.dtype} and {target.dtype} "
            "(take argmax over class scores first)"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    keep = target != ignore_label
    t = target[keep].astype(np.int64)
    p = pred[keep].astype(np.int64)
    for name, x in (("target", t), ("pred", p)):
        if x.size and (x.min() < 0 or x.max() >= num_classes):
            raise ValueError(
                f"{name} labels must be in [0, {num_classes}) (or {ignore_label} in target), "
                f"got values in [{x.min()}, {x.max()}]"
            )
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def metrics_from_confusion(confusion: np.ndarray) -> dict[str, float]:
    """``(K, K)`` confusion matrix -> ``pixel_accuracy``, ``mean_accuracy``, ``mIoU``, ``fwIoU``.

    Also returns per-class ``iou`` and ``accuracy`` arrays (NaN for undefined classes) under the
    keys ``"per_class_iou"`` and ``"per_class_accuracy"``.
    """
    cm = np.asarray(confusion, np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion must be (K, K), got {cm.shape}")
    diag = np.diag(cm)
    t = cm.sum(1)  # pixels per target class
    p = cm.sum(0)  # pixels per predicted class
    total = t.sum()
    union = t + p - diag
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(t > 0, diag / t, np.nan)
        iou = np.where(union > 0, diag / union, np.nan)
        freq = t / total if total > 0 else np.zeros_like(t)

    def nanmean(x: np.ndarray) -> float:
        return float(np.mean(x[~np.isnan(x)])) if np.any(~np.isnan(x)) else float("nan")

    fw = float(np.sum(freq[union > 0] * iou[union > 0])) if total > 0 else float("nan")
    return {
        "pixel_accuracy": float(diag.sum() / total) if total > 0 else float("nan"),
        "mean_accuracy": nanmean(acc),
        "mIoU": nanmean(iou),
        "fwIoU": fw,
        "per_class_accuracy": acc,
        "per_class_iou": iou,
    }


class SegmentationMetrics:
    """Streaming accumulation of a confusion matrix over batches.

    >>> m = SegmentationMetrics(num_classes=3)
    >>> m.update(pred_batch, target_batch)       # (B, H, W) int label maps, any number of times
    >>> m.result()   # {"pixel_accuracy", "mean_accuracy", "mIoU", "fwIoU"}
    """

    def __init__(self, num_classes: int, ignore_label: int = IGNORE_LABEL):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.confusion = np.zeros((num_classes, num_classes), np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add ``pred (B, ...)`` vs ``target (B, ...)``; ``valid (B,)`` drops padded examples."""
        pred = np.asarray(pred)
        target = np.asarray(target)
        if valid is not None:
            valid = np.asarray(valid, bool)
            if valid.ndim != 1 or pred.ndim < 1 or valid.shape[0] != pred.shape[0]:
                raise ValueError(
                    f"valid must be (B,) matching pred's batch axis, got {valid.shape} for "
                    f"pred {pred.shape}"
                )
            pred, target = pred[valid], target[valid]
        self.confusion += confusion_matrix(pred, target, self.num_classes, self.ignore_label)

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.confusion[:] = 0

    def result(self) -> dict[str, float]:
        """The four FCN metrics (floats) over everything accumulated."""
        out = metrics_from_confusion(self.confusion)
        return {k: out[k] for k in ("pixel_accuracy", "mean_accuracy", "mIoU", "fwIoU")}
