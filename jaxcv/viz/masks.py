"""Instance masks drawn over images: each instance its own colour ("elephant 1, elephant 2").

:func:`instance_mask_grid` shows, per image, the ground-truth instances and the predicted ones
side by side, every instance blended in a distinct colour (so two objects of one class stay
apart) and labelled with its class name (and score for predictions). :func:`mask_figures` is
the run report's entry point for tasks whose outputs have ``pred_masks`` (Mask R-CNN).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from jaxcv.viz.images import to_display

_ALPHA = 0.55


def _instance_colors(n: int) -> np.ndarray:
    """``(n, 3)`` RGB colours: matplotlib's tab20, its saturated half first (neighbouring
    instances get clearly different colours)."""
    table = np.asarray(colormaps["tab20"].colors, np.float64)
    table = np.concatenate([table[0::2], table[1::2]])
    return table[np.arange(n) % len(table)]


def overlay_instances(image: np.ndarray, masks: np.ndarray, alpha: float = _ALPHA) -> np.ndarray:
    """Blend ``masks (N, H, W)`` bool into ``image (H, W, 3)`` in ``[0, 1]``, one colour each
    (later masks on top). Returns ``(H, W, 3)`` float in ``[0, 1]``."""
    out = np.array(image, np.float64)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=-1)
    masks = np.asarray(masks, bool)
    if masks.ndim != 3 or masks.shape[1:] != out.shape[:2]:
        raise ValueError(
            f"masks must be (N, H, W) with (H, W) = {out.shape[:2]}; got shape {masks.shape}"
        )
    for mask, color in zip(masks, _instance_colors(len(masks)), strict=True):
        out[mask] = (1 - alpha) * out[mask] + alpha * color
    return out


def _label_instances(ax, masks, names, colors) -> None:
    for mask, name, color in zip(masks, names, colors, strict=True):
        ys, xs = np.nonzero(mask)
        if not ys.size:
            continue
        ax.text(
            float(xs.min()),
            float(ys.min()),
            name,
            fontsize=5.5,
            color="white",
            va="bottom",
            ha="left",
            bbox={"facecolor": color, "edgecolor": "none", "pad": 0.6, "alpha": 0.85},
            clip_on=True,
        )


def _class_name(class_names: Sequence[str], c: int) -> str:
    return class_names[c - 1] if 1 <= c <= len(class_names) else str(c)


def instance_mask_grid(
    images: np.ndarray,
    pred_masks: np.ndarray,
    pred_classes: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    *,
    pred_scores: np.ndarray | None = None,
    pred_valid: np.ndarray | None = None,
    gt_masks: np.ndarray | None = None,
    gt_classes: np.ndarray | None = None,
    gt_valid: np.ndarray | None = None,
    score_threshold: float = 0.5,
    images_per_row: int = 2,
    panel_size: float = 2.4,
) -> Path:
    """Ground-truth and predicted instance masks of ``N`` images, side by side.

    Args:
      images: ``(N, H, W, C)`` normalised images (rescaled per image for display).
      pred_masks: ``(N, D, H, W)`` bool predicted masks; pred_classes: ``(N, D)`` in ``1..K``.
      class_names: ``K`` names (class ``c`` is ``class_names[c - 1]``).
      path: PNG file to write.
      pred_scores: ``(N, D)``; predictions scoring below ``score_threshold`` are not drawn.
      pred_valid: ``(N, D)`` bool; invalid slots are not drawn.
      gt_masks: ``(N, M, H, W)`` ground-truth masks; gt_classes: ``(N, M)``; gt_valid:
        ``(N, M)`` bool (default ``gt_classes > 0``). Without them only predictions are drawn.
      score_threshold: minimal score of a drawn prediction.
      images_per_row: images per grid row (two panels each with ground truth).
      panel_size: inches per panel.

    Returns:
      ``path``.
    """
    shown = to_display(images)
    n = shown.shape[0]
    pred_masks = np.asarray(pred_masks, bool)
    pred_classes = np.asarray(pred_classes)
    if pred_masks.ndim != 4 or pred_masks.shape[0] != n or pred_masks.shape[2:] != shown.shape[1:3]:
        raise ValueError(
            f"pred_masks must be (N, D, H, W) = ({n}, D, {shown.shape[1]}, {shown.shape[2]}); "
            f"got shape {pred_masks.shape}"
        )
    if pred_classes.shape != pred_masks.shape[:2]:
        raise ValueError(
            f"pred_classes must be (N, D) = {pred_masks.shape[:2]}; got {pred_classes.shape}"
        )
    keep = np.ones(pred_classes.shape, bool)
    if pred_valid is not None:
        keep &= np.asarray(pred_valid, bool)
    if pred_scores is not None:
        keep &= np.asarray(pred_scores) >= score_threshold
    with_gt = gt_masks is not None and gt_classes is not None
    panels = 2 if with_gt else 1
    columns = max(1, min(images_per_row, n)) * panels
    rows = max(1, -(-n * panels // columns))
    fig = Figure(figsize=(panel_size * columns, panel_size * rows + 0.3), dpi=110)
    for i in range(rows * columns // panels):
        axes = [fig.add_subplot(rows, columns, i * panels + p + 1) for p in range(panels)]
        for ax in axes:
            ax.axis("off")
        if i >= n:
            continue
        if with_gt:
            gv = np.asarray(gt_classes[i]) > 0 if gt_valid is None else np.asarray(gt_valid[i])
            gm = np.asarray(gt_masks[i], bool)[gv.astype(bool)]
            gc = np.asarray(gt_classes[i])[gv.astype(bool)]
            axes[0].imshow(overlay_instances(shown[i], gm), interpolation="nearest")
            names = [_class_name(class_names, int(c)) for c in gc]
            _label_instances(axes[0], gm, names, _instance_colors(len(gm)))
            axes[0].set_title(f"ground truth ({len(gm)})", fontsize=7)
        order = np.flatnonzero(keep[i])
        if pred_scores is not None:  # low scores first: the confident masks end up on top
            order = order[np.argsort(np.asarray(pred_scores[i])[order], kind="stable")]
        pm = pred_masks[i][order]
        axes[-1].imshow(overlay_instances(shown[i], pm), interpolation="nearest")
        names = [_class_name(class_names, int(c)) for c in pred_classes[i][order]]
        if pred_scores is not None:
            names = [
                f"{s} {float(v):.2f}" for s, v in zip(names, pred_scores[i][order], strict=True)
            ]
        _label_instances(axes[-1], pm, names, _instance_colors(len(pm)))
        axes[-1].set_title(f"predicted ({len(pm)})", fontsize=7)
    fig.suptitle(
        f"instance masks, one colour per instance (predictions with score >= {score_threshold:g})",
        fontsize=8,
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def mask_figures(
    fig_dir: Path,
    samples: dict[str, np.ndarray],
    class_names: Sequence[str],
    *,
    split: str = "test",
    max_images: int = 8,
    score_threshold: float = 0.5,
) -> list[tuple[str, Path]]:
    """The run report's instance-mask figure, as ``[(heading, png_path)]``.

    Args:
      fig_dir: where to write the PNG.
      samples: evaluation samples (the batch merged with the outputs): ``image``,
        ``pred_masks (N, D, H, W)``, ``pred_classes``, ``pred_scores``, ``pred_valid``
        ``(N, D)`` and, when present, the ground truth ``masks (N, M, H, W)``, ``classes``,
        ``valid``.
      class_names: ``K`` names.
      split: the evaluated split, for the heading.
      max_images: at most this many images are drawn.
      score_threshold: predictions scoring below it are not drawn.
    """
    n = min(max_images, len(samples["image"]))
    has_gt = "masks" in samples and "classes" in samples
    path = instance_mask_grid(
        samples["image"][:n],
        samples["pred_masks"][:n],
        samples["pred_classes"][:n],
        class_names,
        Path(fig_dir) / "sample_instance_masks.png",
        pred_scores=samples["pred_scores"][:n] if "pred_scores" in samples else None,
        pred_valid=samples["pred_valid"][:n] if "pred_valid" in samples else None,
        gt_masks=samples["masks"][:n] if has_gt else None,
        gt_classes=samples["classes"][:n] if has_gt else None,
        gt_valid=samples["valid"][:n] if has_gt and "valid" in samples else None,
        score_threshold=score_threshold,
    )
    return [(f"Sample instance masks ({split}; ground truth left, predicted right)", path)]
