"""Colour overlays of semantic segmentation: labels as colours, image / ground truth / prediction.

:func:`colorize` maps label maps (0 = background, 255 = ignore) to RGB; :func:`segmentation_figures`
draws the run report's overlays from the evaluation samples of a
:class:`jaxcv.tasks.segmentation.SegmentationTask`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxcv import types

__all__ = ["colorize", "segmentation_figures"]


def colorize(labels: np.ndarray, num_classes: int, ignore_label: int = 255) -> np.ndarray:
    """``(..., H, W)`` int labels -> ``(..., H, W, 3)`` float RGB in ``[0, 1]``.

    Background (0) is black, classes get distinct colours of the ``tab10``/``tab20`` palette,
    ``ignore_label`` is white.
    """
    from matplotlib import colormaps

    labels = np.asarray(labels)
    cmap = colormaps["tab10" if num_classes <= 11 else "tab20"]
    palette = np.zeros((max(num_classes, 1) + 1, 3))
    palette[1:num_classes] = [cmap(i % cmap.N)[:3] for i in range(num_classes - 1)]
    palette[-1] = 1.0
    index = np.where(labels == ignore_label, num_classes, np.clip(labels, 0, num_classes - 1))
    return palette[index]


def segmentation_figures(
    fig_dir: str | Path,
    samples: dict[str, np.ndarray] | None,
    class_names: Sequence[str],
    *,
    split: str = "test",
    max_rows: int = 6,
    alpha: float = 0.55,
) -> list[tuple[str, Path]]:
    """Colour overlays of ground truth and predictions for the run report.

    Args:
      fig_dir: where to write the PNG.
      samples: ``image (N, H, W, C)``, ``segmentation (N, H, W)`` and ``pred_segmentation
        (N, H, W)`` (the loop's evaluation samples), or None.
      class_names: the object class names (background is added as class 0).
      split: evaluated split, for the heading.
      max_rows: images drawn.
      alpha: overlay opacity.

    Returns:
      ``[(heading, png_path)]`` (empty without samples).
    """
    from matplotlib.figure import Figure

    from jaxcv.viz.images import to_display

    predictions = (samples or {}).get(types.PRED_SEGMENTATION)
    if predictions is None or len(predictions) == 0:
        return []
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    names = ["background", *class_names]
    k = len(names)
    n = min(max_rows, len(predictions))
    images = to_display(np.asarray(samples[types.IMAGE])[:n])
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    fig = Figure(figsize=(7.5, 2.5 * n + 0.6), layout="constrained")
    axes = fig.subplots(n, 3, squeeze=False)
    for row in range(n):
        panels = [
            ("image", images[row]),
            ("ground truth", samples[types.SEGMENTATION][row]),
            ("prediction", predictions[row]),
        ]
        for col, (title, value) in enumerate(panels):
            ax = axes[row, col]
            if col == 0:
                ax.imshow(value)
            else:
                overlay = (1 - alpha) * images[row] + alpha * colorize(value, k)
                ax.imshow(np.clip(overlay, 0.0, 1.0))
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    legend = [f"{i}: {name}" for i, name in enumerate(names)]
    fig.suptitle("  ".join(legend), fontsize=8)
    path = fig_dir / "segmentation_overlays.png"
    fig.savefig(path, dpi=80, bbox_inches="tight")
    return [(f"Segmentation overlays ({split}: image, ground truth, prediction)", path)]
