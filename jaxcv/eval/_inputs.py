"""Validation of the per-image ground-truth / detection dicts taken by the detection evaluators.

Shared by :mod:`jaxcv.eval.coco` and :mod:`jaxcv.eval.voc`; arrays become float64/int64 NumPy
arrays with padding rows (``valid == False``) removed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GroundTruth:
    """One image's ground truth: ``boxes (G, 4)`` f64 xyxy, ``classes (G,)`` i64, ``iscrowd (G,)``
    bool, ``difficult (G,)`` bool, ``area (G,)`` f64, ``masks (G, H, W)`` bool or None."""

    boxes: np.ndarray
    classes: np.ndarray
    iscrowd: np.ndarray
    difficult: np.ndarray
    area: np.ndarray
    masks: np.ndarray | None


@dataclass(frozen=True)
class Detections:
    """One image's detections: ``boxes (D, 4)`` f64 xyxy, ``scores (D,)`` f64, ``classes (D,)``
    i64, ``box_area (D,)`` f64, ``masks (D, H, W)`` bool or None, ``mask_area (D,)`` f64."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    box_area: np.ndarray
    masks: np.ndarray | None
    mask_area: np.ndarray | None


def _vector(x, n: int, name: str, where: str, dtype) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{where}: '{name}' must have shape ({n},), got {a.shape}")
    return a.astype(dtype)


def _boxes(x, where: str) -> np.ndarray:
    b = np.asarray(x, np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{where}: 'boxes' must have shape (N, 4) (xyxy pixels), got {b.shape}")
    if not np.all(np.isfinite(b)):
        raise ValueError(f"{where}: 'boxes' contains NaN or inf")
    return b


def _masks(x, n: int, where: str) -> np.ndarray:
    m = np.asarray(x)
    if m.ndim != 3 or m.shape[0] != n:
        raise ValueError(f"{where}: 'masks' must have shape ({n}, H, W), got {m.shape}")
    return m.astype(bool, copy=False)


def _select(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    return x if keep.all() else x[keep]


def mask_area(masks: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` bool -> ``(N,)`` float64 pixel counts."""
    flat = masks.reshape(masks.shape[0], masks.shape[1] * masks.shape[2])
    return np.count_nonzero(flat, axis=1).astype(np.float64)


def _count(d: Mapping, keys: tuple[str, ...], where: str) -> int:
    for k in keys:
        if k in d:
            shape = np.shape(d[k])
            if len(shape) < 1:
                raise ValueError(f"{where}: '{k}' must have a leading object axis, got {shape}")
            return shape[0]
    raise ValueError(f"{where}: needs one of the keys {keys}, got {sorted(d)}")


def _keep(d: Mapping, n: int, where: str) -> np.ndarray:
    if "valid" not in d:
        return np.ones(n, bool)
    return _vector(d["valid"], n, "valid", where, bool)


def box_area(boxes: np.ndarray) -> np.ndarray:
    """``(N, 4)`` xyxy -> ``(N,)`` float64 ``(x2 - x1) * (y2 - y1)`` (the COCO ``w * h``)."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def check_ground_truth(d: Mapping, index: int, *, need_masks: bool = False) -> GroundTruth:
    """Validate image ``index``'s ground-truth dict (see :func:`jaxcv.eval.coco.evaluate`)."""
    where = f"ground_truth[{index}]"
    if not isinstance(d, Mapping):
        raise ValueError(f"{where}: expected a dict of arrays, got {type(d).__name__}")
    n = _count(d, ("classes",), where)
    keep = _keep(d, n, where)
    classes = _vector(d["classes"], n, "classes", where, np.int64)[keep]
    if "boxes" in d:
        boxes = _boxes(d["boxes"], where)
        if boxes.shape[0] != n:
            raise ValueError(f"{where}: 'boxes' has {boxes.shape[0]} rows, 'classes' has {n}")
        boxes = boxes[keep]
    elif need_masks:
        boxes = np.zeros((len(classes), 4))
    else:
        raise ValueError(f"{where}: 'boxes' (G, 4) is required, got keys {sorted(d)}")
    crowd = _vector(d.get("iscrowd", np.zeros(n)), n, "iscrowd", where, bool)[keep]
    difficult = _vector(d.get("difficult", np.zeros(n)), n, "difficult", where, bool)[keep]
    masks = None
    if "masks" in d:
        masks = _select(_masks(d["masks"], n, where), keep)
    elif need_masks:
        raise ValueError(f"{where}: 'masks' (G, H, W) is required for iou_type='segm'")
    if "area" in d:
        area = _vector(d["area"], n, "area", where, np.float64)[keep]
    elif masks is not None:
        area = mask_area(masks)
    else:
        area = box_area(boxes)
    return GroundTruth(boxes, classes, crowd, difficult, area, masks)


def check_detections(d: Mapping, index: int, *, need_masks: bool = False) -> Detections:
    """Validate image ``index``'s detection dict (see :func:`jaxcv.eval.coco.evaluate`)."""
    where = f"detections[{index}]"
    if not isinstance(d, Mapping):
        raise ValueError(f"{where}: expected a dict of arrays, got {type(d).__name__}")
    n = _count(d, ("scores",), where)
    keep = _keep(d, n, where)
    scores = _vector(d["scores"], n, "scores", where, np.float64)[keep]
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{where}: 'scores' contains NaN or inf")
    if "classes" not in d:
        raise ValueError(f"{where}: 'classes' (D,) is required, got keys {sorted(d)}")
    classes = _vector(d["classes"], n, "classes", where, np.int64)[keep]
    if "boxes" in d:
        boxes = _boxes(d["boxes"], where)
        if boxes.shape[0] != n:
            raise ValueError(f"{where}: 'boxes' has {boxes.shape[0]} rows, 'scores' has {n}")
        boxes = boxes[keep]
    elif need_masks:
        boxes = np.zeros((len(scores), 4))
    else:
        raise ValueError(f"{where}: 'boxes' (D, 4) is required, got keys {sorted(d)}")
    masks = areas = None
    if "masks" in d:
        masks = _select(_masks(d["masks"], n, where), keep)
        areas = mask_area(masks)
    elif need_masks:
        raise ValueError(f"{where}: 'masks' (D, H, W) is required for iou_type='segm'")
    return Detections(boxes, scores, classes, box_area(boxes), masks, areas)
