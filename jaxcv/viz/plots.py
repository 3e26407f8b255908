"""Line plots and matrices: training curves and confusion matrices.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot global state), so
they work headless and from any thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def plot_curves(
    series: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    *,
    title: str = "",
    ylabel: str = "",
    logy: bool = False,
) -> Path:
    """Plot named curves ``{label: (steps (N,), values (N,))}`` against the step; save a PNG.

    Empty series are skipped; a series with one point is drawn as a marker.
    """
    fig = Figure(figsize=(6, 3.6), dpi=110)
    ax = fig.add_subplot()
    for label, (steps, values) in series.items():
        steps, values = np.asarray(steps), np.asarray(values, np.float64)
        if steps.ndim != 1 or steps.shape != values.shape:
            raise ValueError(
                f"series {label!r}: steps and values must be (N,); got {steps.shape} and "
                f"{values.shape}"
            )
        if steps.size:
            ax.plot(steps, values, marker="o" if steps.size < 20 else None, ms=3, label=label)
    if logy and any(np.all(np.asarray(v) > 0) and len(v) for _, v in series.values()):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if any(len(s) for s, _ in series.values()):
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def plot_confusion_matrix(
    matrix: np.ndarray, class_names: Sequence[str], path: str | Path, *, title: str = ""
) -> Path:
    """Draw a ``(K, K)`` confusion matrix (rows true, columns predicted), row-normalised
    colours with the raw counts written in the cells; save a PNG."""
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"confusion matrix must be (K, K); got shape {matrix.shape}")
    k = matrix.shape[0]
    if len(class_names) != k:
        raise ValueError(f"expected {k} class names; got {len(class_names)}")
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    size = min(2.0 + 0.45 * k, 14.0)
    fig = Figure(figsize=(size + 1, size), dpi=110)
    ax = fig.add_subplot()
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_xticks(range(k), labels=list(class_names), rotation=45, ha="right")
    ax.set_yticks(range(k), labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    colour = "white" if normalised[i, j] > 0.5 else "black"
                    ax.text(
                        j,
                        i,
                        str(int(matrix[i, j])),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color=colour,
                    )
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
