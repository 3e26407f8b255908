"""The run report: ``WORKDIR/report.md`` with PNG figures under ``WORKDIR/figures/``.

The report has the final results table, training/evaluation curves from ``metrics.jsonl``, the
task's figures (its :class:`jaxcv.tasks.base.Recipe` lists them: :func:`task_figures`) and the
config that produced the run.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxcv.tasks.base import FigureFn
from jaxcv.train.logging import metric_history
from jaxcv.viz.plots import plot_curves

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


def task_figures(
    fig_dir: Path, evaluation, class_names: Sequence[str], figures: Sequence[FigureFn]
) -> list[tuple[str, Path]]:
    """The task's report ``figures`` (its recipe's) drawn from ``evaluation``, as
    ``[(heading, png_path)]``; none without evaluation samples."""
    if evaluation is None or evaluation.samples is None:
        return []
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    return [drawn for figure in figures for drawn in figure(fig_dir, evaluation, class_names)]
