"""Studies of several training stages, each a whole experiment config in its own folder.

A family study (``rcnn_family``, ``segmentation_family``, ``overfeat_family``) trains a chain of
runs: a pre-training, then models fine-tuned from it or from each other. Each stage runs in
``WORKDIR/<stage>`` from a complete config of its own (:func:`section_config`), so a rerun of the
study resumes: a stage whose folder holds a finished ``results.json`` is read, not run again
(:func:`train_stage`); an unfinished training resumes from its checkpoints. A stage folder started
with another config is refused (:func:`claim`, ``stage_config.json``), so a changed config never
mixes with older results. Stages that fit, convert or time rather than train are
:func:`derived_stage`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections

from jaxcv.train.logging import metric_history, read_metrics
from jaxcv.train.loop import train_and_evaluate
from jaxcv.train.outputs import RESULTS_FILE, write_results

__all__ = [
    "STAGE_CONFIG_FILE",
    "claim",
    "derived_stage",
    "finished_results",
    "section_config",
    "steps_to_reach",
    "train_stage",
]

STAGE_CONFIG_FILE = "stage_config.json"


def section_config(
    config: ml_collections.ConfigDict,
    stage: str,
    section: str,
    *,
    keep_name: bool = False,
    **changes: Any,
) -> ml_collections.ConfigDict:
    """``config.<section>`` for ``stage``: the study's ``data.data_dir``, the name
    ``<study>/<stage>`` (``keep_name``: its own, e.g. a pre-training whose run is reusable on its
    own) and ``changes`` (dotted keys, e.g. ``{"model.init_from": path}``)."""
    out = copy.deepcopy(config[section])
    out.data.data_dir = config.data.data_dir
    if not keep_name:
        out.name = f"{config.name}/{stage}"
    for key, value in changes.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        with node.unlocked():
            node[leaf] = value
    return out


def claim(folder: Path, config: ml_collections.ConfigDict) -> None:
    """Record the config a stage folder is for, or refuse a folder started with another."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / STAGE_CONFIG_FILE
    text = config.to_json(sort_keys=True, indent=1)
    if path.exists() and path.read_text() != text:
        old, new = json.loads(path.read_text()), json.loads(text)
        differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise ValueError(
            f"{folder} was started with another config (sections {', '.join(differ)} differ); "
            "use another --workdir, or delete that folder to redo the stage"
        )
    path.write_text(text)


def finished_results(folder: Path) -> dict[str, float] | None:
    """``folder/results.json`` of a finished (not interrupted) stage, else None."""
    path = folder / RESULTS_FILE
    if not path.exists():
        return None
    results = json.loads(path.read_text())
    return None if results.get("train/interrupted") else results


def train_stage(config: ml_collections.ConfigDict, folder: Path) -> dict[str, float]:
    """A training stage: its finished results, else (resumed) training in ``folder``.

    Raises:
      KeyboardInterrupt: the training was interrupted (its checkpoints stay; rerun to resume).
      ValueError: ``folder`` was started with another config.
    """
    claim(folder, config)
    done = finished_results(folder)
    if done is not None:
        print(f"{folder.name}: finished before, read {folder / RESULTS_FILE}")
        return done
    print(f"{folder.name}: training {config.name} in {folder}")
    # A copy: training fills in the config (num_classes from the dataset), and the study's later
    # claims must see the config as the rerun that reads this stage will.
    results = train_and_evaluate(copy.deepcopy(config), folder)
    if results.get("train/interrupted"):
        raise KeyboardInterrupt(f"{folder.name} interrupted; rerun to resume")
    return results


def derived_stage(folder: Path, compute: Callable[[], dict[str, float]]) -> dict[str, float]:
    """A stage that fits, converts or times rather than trains: its saved results, else
    ``compute()``'s (written to ``folder/results.json``)."""
    done = finished_results(folder)
    if done is not None:
        return done
    results = compute()
    folder.mkdir(parents=True, exist_ok=True)
    write_results(folder, results)
    return results


def steps_to_reach(run_dir: Path, reference_dir: Path, metric: str) -> tuple[float, float]:
    """``(step, reference steps)``: the first evaluated step at which ``run_dir``'s ``metric``
    reaches the final value of ``reference_dir``'s (NaN if never), and the reference's last
    evaluated step."""
    ref_steps, ref_values = metric_history(read_metrics(reference_dir), metric)
    steps, values = metric_history(read_metrics(run_dir), metric)
    if not len(ref_steps) or not len(steps):
        raise ValueError(f"no {metric!r} in {run_dir} or {reference_dir} (metrics.jsonl)")
    reached = steps[values >= ref_values[-1]]
    return (float(reached[0]) if len(reached) else float("nan")), float(ref_steps[-1])
