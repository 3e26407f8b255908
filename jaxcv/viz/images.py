"""Image grids: sample predictions with their true and predicted labels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def to_display(images: np.ndarray) -> np.ndarray:
    """Rescale normalised images ``(N, H, W, C)`` to ``[0, 1]`` per image for display.

    ``C`` is 1 or 3; single-channel images come back as ``(N, H, W)``.
    """
    images = np.asarray(images, np.float64)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be (N, H, W, 1|3); got shape {images.shape}")
    lo = images.min(axis=(1, 2, 3), keepdims=True)
    hi = images.max(axis=(1, 2, 3), keepdims=True)
    out = (images - lo) / np.where(hi > lo, hi - lo, 1.0)
    return out[..., 0] if images.shape[-1] == 1 else out


def prediction_grid(
    images: np.ndarray,
    true_labels: np.ndarray,
    pred_labels: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    *,
    scores: np.ndarray | None = None,
    columns: int = 8,
) -> Path:
    """Draw images ``(N, H, W, C)`` in a grid titled ``true -> pred`` (green right, red wrong).

    Args:
      images: normalised images (rescaled per image for display).
      true_labels: ``(N,)`` int classes.
      pred_labels: ``(N,)`` int classes.
      class_names: ``K`` names.
      path: PNG file to write.
      scores: optional ``(N,)`` probabilities of the predicted class, shown in the title.
      columns: grid width.
    """
    shown = to_display(images)
    n = shown.shape[0]
    true_labels, pred_labels = np.asarray(true_labels), np.asarray(pred_labels)
    if true_labels.shape != (n,) or pred_labels.shape != (n,):
        raise ValueError(f"labels must be ({n},); got {true_labels.shape} and {pred_labels.shape}")
    columns = max(1, min(columns, n))
    rows = max(1, -(-n // columns))
    fig = Figure(figsize=(1.6 * columns, 1.8 * rows), dpi=110)
    for i in range(rows * columns):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(shown[i], cmap="gray" if shown.ndim == 3 else None, interpolation="nearest")
        t, p = int(true_labels[i]), int(pred_labels[i])
        title = f"{class_names[t]} -> {class_names[p]}"
        if scores is not None:
            title += f"\n{float(scores[i]):.2f}"
        ax.set_title(title, fontsize=7, color="green" if t == p else "red")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
