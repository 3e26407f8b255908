"""The run report: ``WORKDIR/report.md`` with PNG figures under ``WORKDIR/figures/``.

The report has the final results table, training/evaluation curves from ``metrics.jsonl``, the
task's figures (for classification: the confusion matrix and a grid of sample predictions with
their true and predicted labels; for detection and localization: the images with their drawn
predicted and ground-truth boxes) and the config that produced the run.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxcv.tasks.segmentation import segmentation_figures
from jaxcv.train.logging import metric_history
from jaxcv.viz.detections import detection_grid
from jaxcv.viz.generative import reconstruction_figure
from jaxcv.viz.images import prediction_grid
from jaxcv.viz.masks import mask_figures
from jaxcv.viz.plots import plot_confusion_matrix, plot_curves

REPORT_FILE = "report.md"
FIGURES_DIR = "figures"


def _format_value(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) >= 2:  # counts such as steps, examples
        return f"{int(value)}"
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"


def results_table(results: dict[str, float]) -> str:
    """A two-column markdown table of flat ``results`` (``test/accuracy`` ...), sorted."""
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| `{k}` | {_format_value(float(results[k]))} |" for k in sorted(results)]
    return "\n".join(lines)


def curve_figures(records: list[dict[str, float]], fig_dir: Path) -> list[tuple[str, Path]]:
    """Loss and accuracy-style curves from ``metrics.jsonl`` records.

    One figure per metric name found under several splits (e.g. ``train/loss`` and
    ``test/loss``) for ``loss`` and every name containing ``accuracy``; returns
    ``[(heading, png_path)]``.
    """
    names: dict[str, list[str]] = {}
    for rec in records:
        for key in rec:
            if "/" in key:
                split, metric = key.split("/", 1)
                if metric == "loss" or "accuracy" in metric:
                    names.setdefault(metric, [])
                    if split not in names[metric]:
                        names[metric].append(split)
    figures = []
    for metric in sorted(names, key=lambda m: (m != "loss", m)):
        series = {f"{s}/{metric}": metric_history(records, f"{s}/{metric}") for s in names[metric]}
        safe = metric.replace("/", "_")
        path = plot_curves(
            series,
            fig_dir / f"curve_{safe}.png",
            title=metric,
            ylabel=metric,
            logy=metric == "loss",
        )
        figures.append((metric.replace("_", " "), path))
    return figures


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


def write_report(
    workdir: str | Path,
    *,
    title: str,
    results: dict[str, float],
    records: list[dict[str, float]],
    figures: Sequence[tuple[str, Path]] = (),
    config_text: str = "",
    notes: Sequence[str] = (),
) -> Path:
    """Write ``WORKDIR/report.md`` and the curve PNGs; returns the report path.

    Args:
      workdir: the run directory.
      title: the report heading (the experiment name).
      results: the final flat metrics (as in ``results.json``).
      records: ``metrics.jsonl`` records for the curves.
      figures: task figures ``[(heading, png_path)]`` (paths inside ``workdir``).
      config_text: the config, shown verbatim.
      notes: extra lines shown under the heading (e.g. how the run ended).
    """
    workdir = Path(workdir)
    fig_dir = workdir / FIGURES_DIR
    fig_dir.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [f"# {title}", "", f"Run directory `{workdir.resolve()}`, written {now}.", ""]
    out += [f"{line}  " for line in notes]
    out += ["", "## Results", "", results_table(results), ""]
    curves = curve_figures(records, fig_dir)
    if curves:
        out += ["## Curves", ""]
        for heading, path in curves:
            out += [f"### {heading}", "", f"![{heading}]({path.relative_to(workdir)})", ""]
    for heading, path in figures:
        rel = Path(path).resolve().relative_to(workdir.resolve())
        out += [f"## {heading}", "", f"![{heading}]({rel})", ""]
    if config_text:
        out += ["## Config", "", "```yaml", config_text.rstrip(), "```", ""]
    path = workdir / REPORT_FILE
    path.write_text("\n".join(out), encoding="utf-8")
    return path


def summarize(results: dict[str, Any], keys: Sequence[str]) -> str:
    """One line ``key=value`` for the given result keys that exist (for terminal output)."""
    parts = [f"{k}={_format_value(float(results[k]))}" for k in keys if k in results]
    return " ".join(parts)


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


def task_figures(fig_dir: Path, evaluation, class_names: Sequence[str]) -> list[tuple[str, Path]]:
    """The figures that fit what the task predicted, as ``[(heading, png_path)]``.

    Classifiers (samples with ``pred_label``) get a confusion matrix and a prediction grid;
    detectors (``pred_boxes (N, D, 4)``) drawn detections, plus coloured instance masks when
    they predict ``pred_masks (N, D, H, W)``; classification + localization
    (``pred_label`` and ``pred_boxes (N, 4)``) both; autoencoders and VAEs (samples with
    ``reconstruction``) a reconstruction strip; segmentation models (``pred_segmentation``)
    colour overlays.
    """
    samples = evaluation.samples
    if samples is not None and "pred_segmentation" in samples:
        return segmentation_figures(fig_dir, samples, class_names, split=evaluation.split)
    if samples is not None and "reconstruction" in samples:
        fig_dir.mkdir(parents=True, exist_ok=True)
        path = reconstruction_figure(samples, fig_dir / "reconstructions.png")
        return [(f"Reconstructions ({evaluation.split})", path)]
    figures = []
    if samples is not None and "pred_boxes" in samples:
        figures += detection_figures(fig_dir, samples, class_names, split=evaluation.split)
    if samples is not None and "pred_masks" in samples:  # instance segmentation (Mask R-CNN)
        figures += mask_figures(fig_dir, samples, class_names, split=evaluation.split)
    if samples is not None and not {"label", "pred_label"} <= set(samples):
        return figures
    return figures + classification_figures(
        fig_dir,
        getattr(evaluation.evaluator, "confusion_matrix", None),
        samples,
        class_names,
        split=evaluation.split,
    )
