"""A run's final files: ``results.json`` (flat final figures) and ``report.md`` with figures.

:func:`write_results` writes the JSON for every run (:func:`jaxcv.train.loop.train_and_evaluate`
and the studies in ``jaxcv/studies/``); :func:`write_outputs` adds the training run's report
(:mod:`jaxcv.train.report`: curves from ``metrics.jsonl``, task figures, final table, config).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import ml_collections

from jaxcv.recipes import recipe_for
from jaxcv.train import report as report_lib
from jaxcv.train.logging import read_metrics

__all__ = ["RESULTS_FILE", "write_outputs", "write_results"]

RESULTS_FILE = "results.json"


def write_results(workdir: Path, results: dict[str, Any], results_file: str = RESULTS_FILE) -> Path:
    """Write flat ``results`` as sorted, indented JSON to ``workdir/results_file``, whole or
    not at all (a full disk leaves no truncated file behind)."""
    path = Path(workdir) / results_file
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_outputs(
    workdir: Path,
    config: ml_collections.ConfigDict,
    results: dict[str, float],
    evaluation: Any,
    class_names: list[str],
    *,
    notes: list[str] = (),
    results_file: str = RESULTS_FILE,
) -> Path:
    """Write ``results.json`` and ``report.md`` (with figures) into ``workdir``.

    Args:
      workdir: the run directory.
      config: the run's config (shown in the report).
      results: flat final metrics.
      evaluation: the :class:`jaxcv.train.runtime.Evaluation` of the final evaluation (its
        evaluator's ``confusion_matrix`` and its samples feed the task figures), or None.
      class_names: ``K`` class names.
      notes: lines shown under the report heading.
      results_file: name of the JSON file to write.

    Returns:
      The report path.
    """
    write_results(workdir, results, results_file)
    figures = []
    if evaluation is not None:
        figures = report_lib.task_figures(
            workdir / report_lib.FIGURES_DIR,
            evaluation,
            class_names,
            recipe_for(config.task).figures,
        )
    return report_lib.write_report(
        workdir,
        title=f"{config.name}",
        results=results,
        records=read_metrics(workdir),
        figures=figures,
        config_text=str(config),
        notes=notes,
    )
