"""Drawn detections: images with predicted boxes (class name, score) and dashed ground truth.

:func:`detection_grid` serves every box-predicting task: detectors (``D`` boxes per image with
scores and a ``valid`` mask, classes ``1..K``) and classification + localization (one box per
image, ``(N, 4)``, with the predicted label ``0..K-1``: pass ``pred_class_offset=0``).
Boxes are ``xyxy`` in the pixels of the displayed image (the network input).
:func:`draw_detections` writes one photograph at its own resolution with a detector's boxes
(``jaxcv predict --weights ... --draw DIR``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import patches
from matplotlib.figure import Figure

from jaxcv.viz.images import to_display

#: Colour cycle of the classes (matplotlib's tab10), indexed by the 0-based class.
CLASS_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def _per_image(name: str, value: np.ndarray | None, n: int, ndim: int) -> np.ndarray | None:
    """``value`` as ``(N, D, ...)``: a single box/class per image gets ``D = 1``."""
    if value is None:
        return None
    value = np.asarray(value)
    if value.ndim == ndim - 1:
        value = value[:, None]
    if value.ndim != ndim or value.shape[0] != n:
        want = "(N, D, 4) or (N, 4)" if ndim == 3 else "(N, D) or (N,)"
        raise ValueError(f"{name} must be {want} with N = {n}; got shape {value.shape}")
    return value


def _name(class_names: Sequence[str], index: int) -> str:
    return class_names[index] if 0 <= index < len(class_names) else str(index)


def detection_grid(
    images: np.ndarray,
    pred_boxes: np.ndarray,
    pred_classes: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    *,
    pred_scores: np.ndarray | None = None,
    pred_valid: np.ndarray | None = None,
    gt_boxes: np.ndarray | None = None,
    gt_classes: np.ndarray | None = None,
    gt_valid: np.ndarray | None = None,
    pred_class_offset: int = 1,
    gt_class_offset: int = 1,
    score_threshold: float = 0.5,
    columns: int = 4,
    panel_size: float = 2.6,
) -> Path:
    """Draw ``N`` images with their predicted boxes (solid) and ground truth (dashed).

    Args:
      images: ``(N, H, W, C)`` normalised images (rescaled per image for display, as
        :func:`jaxcv.viz.images.to_display`).
      pred_boxes: ``(N, D, 4)`` (or ``(N, 4)``: one box per image) ``xyxy`` in image pixels.
      pred_classes: ``(N, D)`` (or ``(N,)``) int classes.
      class_names: ``K`` names; class ``c`` is ``class_names[c - offset]``.
      path: PNG file to write.
      pred_scores: ``(N, D)`` (or ``(N,)``) scores shown next to the names; detections scoring
        below ``score_threshold`` are not drawn.
      pred_valid: ``(N, D)`` (or ``(N,)``) bool; invalid slots are not drawn.
      gt_boxes: ``(N, M, 4)`` ground-truth ``xyxy`` boxes, drawn dashed; gt_classes:
        ``(N, M)``; gt_valid: ``(N, M)`` bool (padding).
      pred_class_offset: class id of ``class_names[0]`` in ``pred_classes`` (1 for detectors,
        whose class 0 is the background; 0 for a classifier's labels).
      gt_class_offset: the same for ``gt_classes`` (1: the batch's ``classes``).
      score_threshold: minimal score of a drawn detection.
      columns: grid width; panel_size: inches per panel.

    Returns:
      ``path``.
    """
    shown = to_display(images)
    n = shown.shape[0]
    boxes, classes, scores, keep = _predictions(
        n, pred_boxes, pred_classes, pred_scores, pred_valid, score_threshold
    )
    ground_truth = _ground_truth(n, gt_boxes, gt_classes, gt_valid)
    columns = max(1, min(columns, n))
    rows = max(1, -(-n // columns))
    fig = Figure(figsize=(panel_size * columns, panel_size * rows + 0.3), dpi=110)
    for i in range(rows * columns):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.axis("off")
        if i >= n:
            continue
        height, width = shown.shape[1:3]
        ax.imshow(shown[i], cmap="gray" if shown.ndim == 3 else None, interpolation="nearest")
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        num_gt = None
        if ground_truth is not None:  # drawn first: the predictions lie on top
            gboxes, gclasses, gvalid = (g[i] for g in ground_truth)
            num_gt = _draw_ground_truth(ax, gboxes[gvalid], gclasses[gvalid], gt_class_offset)
        drawn = _draw_detections(
            ax, boxes[i], classes[i], scores, i, keep[i], class_names, pred_class_offset
        )
        title = f"{drawn} det" + ("" if num_gt is None else f" / {num_gt} gt")
        ax.set_title(title, fontsize=7)
    fig.suptitle("predictions solid (name score), ground truth dashed", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _predictions(n, pred_boxes, pred_classes, pred_scores, pred_valid, score_threshold):
    """Checked ``(N, D, 4)`` boxes, ``(N, D)`` classes, scores (or None) and which to draw."""
    boxes = _per_image("pred_boxes", pred_boxes, n, 3)
    classes = _per_image("pred_classes", pred_classes, n, 2)
    if boxes.shape[-1] != 4 or classes.shape != boxes.shape[:2]:
        raise ValueError(
            f"pred_boxes must be (N, D, 4) and pred_classes (N, D); got {boxes.shape} and "
            f"{classes.shape}"
        )
    scores = _per_image("pred_scores", pred_scores, n, 2)
    valid = _per_image("pred_valid", pred_valid, n, 2)
    keep = np.ones(classes.shape, bool) if valid is None else valid.astype(bool)
    if scores is not None:
        keep &= scores >= score_threshold
    return boxes, classes, scores, keep


def _ground_truth(n, gt_boxes, gt_classes, gt_valid):
    """Checked ``(N, M, 4)`` boxes, ``(N, M)`` classes and valid mask, or None."""
    gboxes = _per_image("gt_boxes", gt_boxes, n, 3)
    if gboxes is None:
        return None
    gclasses = _per_image("gt_classes", gt_classes, n, 2)
    if gclasses is None or gclasses.shape != gboxes.shape[:2]:
        raise ValueError("gt_boxes (N, M, 4) needs gt_classes (N, M)")
    gvalid = _per_image("gt_valid", gt_valid, n, 2)
    gvalid = np.ones(gclasses.shape, bool) if gvalid is None else gvalid.astype(bool)
    return gboxes, gclasses, gvalid


def _draw_ground_truth(ax, boxes: np.ndarray, classes: np.ndarray, class_offset: int) -> int:
    """Dashed ``(M, 4)`` boxes in their class colours; returns how many were drawn."""
    for box, c in zip(boxes, classes, strict=True):
        color = CLASS_COLORS[(int(c) - class_offset) % len(CLASS_COLORS)]
        x1, y1, x2, y2 = (float(v) for v in box)
        rect = patches.Rectangle(
            (x1, y1), x2 - x1, y2 - y1, fill=False, ec=color, lw=1.0, ls=(0, (3, 2))
        )
        ax.add_patch(rect)
    return len(boxes)


def _draw_detections(ax, boxes, classes, scores, i, keep, class_names, class_offset) -> int:
    """Solid boxes of image ``i`` labelled with class name and score; returns how many."""
    # Draw the lowest-scoring detections first so the confident ones end up on top.
    order = np.flatnonzero(keep)
    if scores is not None:
        order = order[np.argsort(scores[i][order], kind="stable")]
    for d in order:
        c = int(classes[d]) - class_offset
        color = CLASS_COLORS[c % len(CLASS_COLORS)]
        x1, y1, x2, y2 = (float(v) for v in boxes[d])
        ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=color, lw=1.6))
        label = _name(class_names, c)
        if scores is not None:
            label += f" {float(scores[i, d]):.2f}"
        ax.text(
            x1,
            y1,
            label,
            fontsize=5.5,
            color="white",
            va="bottom",
            ha="left",
            bbox={"facecolor": color, "edgecolor": "none", "pad": 0.6, "alpha": 0.85},
            clip_on=True,
        )
    return order.size


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    path: str | Path,
    *,
    scores: np.ndarray | None = None,
) -> Path:
    """Write one photograph with its detections at its own resolution (``jaxcv predict
    --draw``).

    Args:
      image: ``(H, W, 3)`` uint8 RGB pixels.
      boxes: ``(n, 4)`` ``xyxy`` in the image's pixels.
      labels: ``(n,)`` int labels (they pick the colours).
      names: ``n`` names written on the boxes.
      path: the PNG to write.
      scores: ``(n,)`` shown after the names.

    Returns:
      ``path``.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8; got {image.shape} {image.dtype}")
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1)
    n = boxes.shape[0]
    if labels.shape != (n,) or len(names) != n or (scores is not None and len(scores) != n):
        raise ValueError(
            f"boxes (n, 4), labels (n,), names and scores must agree; got {n} boxes, "
            f"{labels.shape[0]} labels, {len(names)} names"
        )
    height, width = image.shape[:2]
    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    ax.imshow(image, interpolation="nearest")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    line = max(1.0, min(height, width) / 300)
    for d in range(n)[::-1]:  # the best-scoring (first) detections end up on top
        color = CLASS_COLORS[int(labels[d]) % len(CLASS_COLORS)]
        x1, y1, x2, y2 = boxes[d]
        ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=color, lw=line))
        text = names[d] if scores is None else f"{names[d]} {float(scores[d]):.2f}"
        ax.text(
            x1,
            y1,
            text,
            fontsize=4 + 3 * line,
            color="white",
            va="bottom",
            ha="left",
            bbox={"facecolor": color, "edgecolor": "none", "pad": 0.8, "alpha": 0.85},
            clip_on=True,
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
