"""The report figures of each kind of task, drawn from an evaluation's samples.

Every ``*_figures(fig_dir, evaluation, class_names)`` here is a
:data:`jaxcv.tasks.base.FigureFn`: it reads ``evaluation.samples`` (the batch keys and outputs
of a few evaluated examples), ``evaluation.evaluator`` and ``evaluation.split`` and returns
``[(heading, png_path)]``. The recipes in :mod:`jaxcv.recipes` say which ones a task draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxcv.viz.detections import detection_grid
from jaxcv.viz.generative import reconstruction_figure
from jaxcv.viz.images import prediction_grid
from jaxcv.viz.masks import mask_figures
from jaxcv.viz.plots import plot_confusion_matrix

__all__ = [
    "classification_figures",
    "confusion_and_samples",
    "detection_figures",
    "drawn_detections",
    "instance_masks",
    "reconstructions",
]


def confusion_and_samples(fig_dir: Path, evaluation, class_names: Sequence[str]):
    """The confusion matrix (the evaluator's ``confusion_matrix``, when it has one) and a grid
    of sample predictions (samples with ``label`` and ``pred_label``)."""
    samples = evaluation.samples
    if not {"label", "pred_label"} <= set(samples):
        return []
    return classification_figures(
        fig_dir,
        getattr(evaluation.evaluator, "confusion_matrix", None),
        samples,
        class_names,
        split=evaluation.split,
    )


def drawn_detections(fig_dir: Path, evaluation, class_names: Sequence[str]):
    """The sample images with predicted boxes (``pred_boxes``) and ground truth drawn."""
    if "pred_boxes" not in evaluation.samples:
        return []
    return detection_figures(fig_dir, evaluation.samples, class_names, split=evaluation.split)


def instance_masks(fig_dir: Path, evaluation, class_names: Sequence[str]):
    """Coloured predicted and ground-truth instance masks (``pred_masks (N, D, H, W)``)."""
    if "pred_masks" not in evaluation.samples:
        return []
    return mask_figures(fig_dir, evaluation.samples, class_names, split=evaluation.split)


def reconstructions(fig_dir: Path, evaluation, class_names: Sequence[str]):
    """A strip of inputs and their ``reconstruction`` (autoencoders, VAEs)."""
    if "reconstruction" not in evaluation.samples:
        return []
    path = reconstruction_figure(evaluation.samples, Path(fig_dir) / "reconstructions.png")
    return [(f"Reconstructions ({evaluation.split})", path)]


def classification_figures(
    fig_dir: Path,
    confusion_matrix: np.ndarray | None,
    samples: dict[str, np.ndarray] | None,
    class_names: Sequence[str],
    *,
    split: str = "test",
) -> list[tuple[str, Path]]:
    """The confusion matrix and a sample-predictions grid, as ``[(heading, png_path)]``.

    Args:
      fig_dir: where to write the PNGs.
      confusion_matrix: ``(K, K)`` counts (rows true) or ``None``.
      samples: ``image (N, H, W, C)``, ``label (N,)``, ``pred_label (N,)`` and optionally
        ``probs (N, K)``; or ``None``.
      class_names: ``K`` names.
      split: the evaluated split, for the headings.
    """
    figures = []
    fig_dir.mkdir(parents=True, exist_ok=True)
    if confusion_matrix is not None:
        path = plot_confusion_matrix(
            confusion_matrix,
            class_names,
            fig_dir / "confusion_matrix.png",
            title=f"confusion matrix ({split})",
        )
        figures.append((f"Confusion matrix ({split})", path))
    if samples is not None and len(samples["label"]):
        scores = None
        if "probs" in samples:
            probs = np.asarray(samples["probs"])
            scores = probs[np.arange(len(probs)), np.asarray(samples["pred_label"])]
        path = prediction_grid(
            samples["image"],
            samples["label"],
            samples["pred_label"],
            class_names,
            fig_dir / "sample_predictions.png",
            scores=scores,
        )
        figures.append((f"Sample predictions ({split}; true -> predicted, score)", path))
    return figures


def detection_figures(
    fig_dir: Path,
    samples: dict[str, np.ndarray],
    class_names: Sequence[str],
    *,
    split: str = "test",
    max_images: int = 12,
    score_threshold: float = 0.5,
) -> list[tuple[str, Path]]:
    """The sample images with drawn boxes, as ``[(heading, png_path)]``.

    Args:
      fig_dir: where to write the PNG.
      samples: evaluation samples (the batch merged with the task's outputs). Detectors:
        ``pred_input_boxes (N, D, 4)`` (or ``pred_boxes``, both in input pixels when the batch
        had no ``original_size``), ``pred_scores``, ``pred_classes`` (``1..K``) and
        ``pred_valid`` ``(N, D)``. Localization: ``pred_boxes (N, 4)`` and ``pred_label (N,)``
        (``0..K-1``, the score taken from ``probs (N, K)`` when present). Ground truth, drawn
        dashed, from the batch's ``boxes (N, M, 4)``, ``classes``, ``valid``.
      class_names: ``K`` names.
      split: the evaluated split, for the heading.
      max_images: at most this many images are drawn.
      score_threshold: detections scoring below it are not drawn.
    """
    n = min(max_images, len(samples["image"]))
    boxes = samples.get("pred_input_boxes", samples["pred_boxes"])[:n]
    if "pred_classes" in samples:
        classes, offset = samples["pred_classes"][:n], 1
        scores, valid = samples.get("pred_scores"), samples.get("pred_valid")
    else:
        classes, offset = samples["pred_label"][:n], 0
        valid, scores = None, None
        if "probs" in samples:
            probs = np.asarray(samples["probs"])
            scores = probs[np.arange(len(probs)), np.asarray(samples["pred_label"])]
            score_threshold = 0.0  # the one box of each image is always drawn
    has_gt = "boxes" in samples and "classes" in samples
    fig_dir.mkdir(parents=True, exist_ok=True)
    path = detection_grid(
        samples["image"][:n],
        boxes,
        classes,
        class_names,
        fig_dir / "sample_detections.png",
        pred_scores=None if scores is None else scores[:n],
        pred_valid=None if valid is None else valid[:n],
        gt_boxes=samples["boxes"][:n] if has_gt else None,
        gt_classes=samples["classes"][:n] if has_gt else None,
        gt_valid=samples["valid"][:n] if has_gt and "valid" in samples else None,
        pred_class_offset=offset,
        score_threshold=score_threshold,
    )
    heading = f"Sample detections ({split}; predictions solid with scores >= {score_threshold:g}"
    return [(heading + ", ground truth dashed)", path)]
