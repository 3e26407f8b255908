"""Overfeat's three panels: window score maps per scale, regressed boxes, final merged boxes.

:func:`overfeat_panels` draws, for one image, a row per figure:

1. one panel per scale: the image with the score map of the final top class laid over the
   positions of the windows (each location's window centre coloured by its probability, one
   window outline drawn to show the size);
2. every window's regressed box (colour = predicted class, opacity = probability);
3. the merged detections with their accumulated scores, and the ground truth dashed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from jaxcv.viz.images import to_display

__all__ = ["overfeat_panels"]

_COLORS = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown")


def _rect(ax, box, color, *, alpha=1.0, lw=1.5, ls="-"):
    x1, y1, x2, y2 = (float(v) for v in box)
    ax.add_patch(
        Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=color, lw=lw, ls=ls, alpha=alpha)
    )


def overfeat_panels(
    image: np.ndarray,
    scales: Sequence[dict],
    candidates: dict,
    detections: dict,
    class_names: Sequence[str],
    path: str | Path,
    *,
    gt_boxes: np.ndarray | None = None,
    gt_classes: np.ndarray | None = None,
    max_detections: int = 8,
) -> Path:
    """Draw the three Overfeat panels for one image into ``path`` (PNG).

    Args:
      image: ``(H, W, 3)`` normalised image.
      scales: per scale ``{"scale": s, "probs": (h, w, K), "windows": (h, w, 4)}`` (windows
        xyxy in image pixels).
      candidates: ``boxes (N, 4)``, ``scores (N,)``, ``classes (N,)`` 0-based, ``valid (N,)``.
      detections: ``boxes (D, 4)``, ``scores (D,)``, ``classes (D,)`` 0-based, ``valid (D,)``.
      class_names: ``K`` names.
      path: output PNG.
      gt_boxes: optional ``(M, 4)`` ground truth; gt_classes: ``(M,)`` 1-based (0 = padding).
      max_detections: how many top detections to draw.
    """
    img = to_display(np.asarray(image)[None])[0]
    if img.ndim != 3:
        raise ValueError(f"image must be (H, W, 3); got shape {np.shape(image)}")
    h, w = img.shape[:2]
    n_scales = len(scales)
    cols = max(n_scales, 2)
    fig = Figure(figsize=(3.0 * cols, 6.3), dpi=100)
    det_valid = np.asarray(detections["valid"], bool)
    top_class = int(np.asarray(detections["classes"])[0]) if det_valid.any() else 0
    for i, s in enumerate(scales):
        ax = fig.add_subplot(2, cols, i + 1)
        ax.imshow(img, interpolation="nearest")
        probs = np.asarray(s["probs"])[..., top_class]
        windows = np.asarray(s["windows"])
        cx = 0.5 * (windows[..., 0] + windows[..., 2])
        cy = 0.5 * (windows[..., 1] + windows[..., 3])
        sc = ax.scatter(
            cx.ravel(),
            cy.ravel(),
            c=probs.ravel(),
            cmap="viridis",
            vmin=0,
            vmax=1,
            s=60,
            edgecolors="white",
            linewidths=0.5,
        )
        _rect(ax, windows[0, 0], "white", lw=1.0, ls=":")
        ax.set_title(
            f"scale {s['scale']:g}: {probs.shape[0]}x{probs.shape[1]} windows\n"
            f"P({class_names[top_class]})",
            fontsize=8,
        )
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.axis("off")
        if i == n_scales - 1:
            fig.colorbar(sc, ax=ax, fraction=0.046, pad=0.02)
    ax = fig.add_subplot(2, cols, cols + 1)
    ax.imshow(img, interpolation="nearest")
    valid = np.asarray(candidates["valid"], bool)
    for box, score, cls in zip(
        np.asarray(candidates["boxes"])[valid],
        np.asarray(candidates["scores"])[valid],
        np.asarray(candidates["classes"])[valid],
        strict=True,
    ):
        _rect(
            ax,
            box,
            _COLORS[int(cls) % len(_COLORS)],
            alpha=float(np.clip(score, 0.05, 1)) * 0.6,
            lw=0.8,
        )
    ax.set_title(f"regressed boxes ({int(valid.sum())} windows)", fontsize=8)
    ax.axis("off")
    ax = fig.add_subplot(2, cols, cols + 2)
    ax.imshow(img, interpolation="nearest")
    if gt_boxes is not None:
        gc = np.ones(len(gt_boxes), int) if gt_classes is None else np.asarray(gt_classes)
        for box, cls in zip(np.asarray(gt_boxes), gc, strict=True):
            if cls > 0:
                _rect(ax, box, "white", lw=1.0, ls="--")
    order = np.flatnonzero(det_valid)[:max_detections]
    for k in order:
        cls = int(detections["classes"][k])
        color = _COLORS[cls % len(_COLORS)]
        box = np.asarray(detections["boxes"][k])
        _rect(ax, box, color, lw=2.0)
        ax.text(
            float(box[0]),
            float(box[1]) - 1,
            f"{class_names[cls]} {float(detections['scores'][k]):.1f}",
            color=color,
            fontsize=6,
            va="bottom",
        )
    ax.set_title("merged boxes (accumulated score)", fontsize=8)
    ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
