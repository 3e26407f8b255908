"""The R-CNN family at equal training: pre-train once, fine-tune R-CNN, Fast and Faster R-CNN.

``run_rcnn_family(config, workdir)`` (``jaxcv train rcnn_family``, ``experiments/rcnn_family.py``
has the config) runs these stages, each in its own folder of ``workdir``:

1. ``pretrain``: ``config.pretrain`` (a classifier whose trunk the detectors share);
2. ``rcnn``, ``fast_rcnn``, ``faster_rcnn``: ``config.<stage>`` with ``model.init_from`` the
   pre-trained run; ``faster_rcnn_scratch``: the ``faster_rcnn`` config from scratch; the pair
   ``faster_rcnn_10pct`` / ``faster_rcnn_scratch_10pct`` on ``family.small_train_split`` (None:
   no pair).
   Each selects its checkpoint on ``data.eval_split`` and evaluates ``data.test_split`` once
   (:func:`jaxcv.train.loop.train_and_evaluate`);
3. ``rcnn_svm``: per-class SVMs and ridge box regressors fitted on the fine-tuned R-CNN's
   features (:mod:`jaxcv.tasks.rcnn_svm`), tested on R-CNN's test split;
4. ``fast_rcnn_svd``: Fast R-CNN's fc6/fc7 replaced by their truncated SVD
   (``family.svd_ranks``), tested on its test split;
5. ``timing``: test seconds per image with proposals, batch 1
   (:mod:`jaxcv.studies.detector_timing`), and the speedups over R-CNN.

A stage whose folder holds a finished ``results.json`` is read, not run again; an unfinished
training resumes from its checkpoints, so rerunning the command continues where it stopped. A
stage folder started with another config is refused (its ``stage_config.json`` is compared),
so a changed config never mixes with older results.

``results.json`` keys: ``<stage>/test/mAP50`` (and ``/AP``, COCO AP), ``<stage>/selected_step``,
``<stage>/train_wall_s``; ``rcnn_s_per_image``, ``fast_rcnn_s_per_image``,
``faster_rcnn_s_per_image`` (and ``_svm``/``_svd`` rows), ``fast_rcnn_speedup``,
``faster_rcnn_speedup``; ``faster_rcnn/steps_to_scratch_final``: the first evaluated step at
which the pre-trained Faster R-CNN's validation mAP@0.5 reaches the scratch run's final one
(NaN when it never does), with ``faster_rcnn/steps_fraction_to_scratch_final``.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from jaxcv import data as jdata
from jaxcv.models.svd import truncate_fc_layers
from jaxcv.studies.detector_timing import SearchCache, test_images, time_detector
from jaxcv.studies.engine import markdown_table, write_study_outputs
from jaxcv.studies.stages import (
    STAGE_CONFIG_FILE,
    claim,
    derived_stage,
    section_config,
    steps_to_reach,
    train_stage,
)
from jaxcv.tasks.rcnn_svm import SVM_COLLECTION, RCNNSVMTask, fit_svms, svm_settings_from_config
from jaxcv.train.evaluation import evaluate
from jaxcv.train.inference import restore_run
from jaxcv.train.parallel import Parallel
from jaxcv.train.runtime import build_task, make_eval_pipeline, make_model
from jaxcv.train.step import make_eval_step

__all__ = ["DETECTORS", "STAGE_CONFIG_FILE", "run_rcnn_family", "steps_to_reach"]

#: The rows of the table: stage -> what it is.
DETECTORS = {
    "rcnn": "R-CNN (softmax), pre-trained trunk",
    "rcnn_svm": "R-CNN (SVMs + ridge box regression), pre-trained trunk",
    "fast_rcnn": "Fast R-CNN, pre-trained trunk",
    "fast_rcnn_svd": "Fast R-CNN, truncated SVD of fc6/fc7 at test",
    "faster_rcnn": "Faster R-CNN, pre-trained trunk",
    "faster_rcnn_scratch": "Faster R-CNN, from scratch",
    "faster_rcnn_10pct": "Faster R-CNN, pre-trained, 10% of train",
    "faster_rcnn_scratch_10pct": "Faster R-CNN, scratch, 10% of train",
}
METRIC = "mAP50"


def _evaluate(stage_config, task, state, split: str) -> dict[str, float]:
    """``task`` with ``state``'s variables on ``split``: ``{"<split>/<metric>": value}``."""
    parallel = Parallel(mode=stage_config.train.parallel)
    evaluation = evaluate(
        task,
        parallel.compile_eval_step(make_eval_step(task)),
        parallel,
        parallel.put_state(state),
        make_eval_pipeline(stage_config, split),
        split=split,
    )
    return {f"{split}/{k}": float(v) for k, v in evaluation.metrics.items()}


def _svm_model(rcnn_config, config, folder: Path):
    """The fine-tuned R-CNN (selected checkpoint) with its SVMs and ridge regressors, fitted on
    ``svm.num_images`` training images, or read from ``folder/svm.npz`` once fitted.

    Returns ``(task, state, step, stats)``: the state carries the ``svm`` collection."""
    task, state, _, step = restore_run(rcnn_config, folder.parent / "rcnn", which="best")
    settings = svm_settings_from_config(config)
    saved = folder / "svm.npz"
    stats: dict[str, Any] = {}
    if saved.exists():
        tree = dict(np.load(saved))
    else:
        batches = make_eval_pipeline(rcnn_config, rcnn_config.data.train_split)
        tree, stats = fit_svms(task, state.variables, batches.as_numpy_iterator(), settings)
        np.savez(saved, **{k: np.asarray(v) for k, v in tree.items()})
    state = state.replace(model_state={**state.model_state, SVM_COLLECTION: tree})
    return RCNNSVMTask(task.model, task.settings, settings), state, step, stats


def _svm_figures(stats: dict[str, Any]) -> dict[str, float]:
    """The fit's figures for results.json: images, windows, seconds and, per class, the
    positives, the negatives kept after mining and the mining rounds."""
    out = {f"svm/{k}": float(stats[k]) for k in ("num_images", "num_windows") if k in stats}
    out |= {f"svm/{k}_s": float(v) for k, v in stats.get("seconds", {}).items()}
    for row in stats.get("classes", []):
        for key in ("positives", "negatives", "rounds", "regression_examples"):
            out[f"svm/class{row['class']}_{key}"] = float(row[key])
    return out


def _svd_model(fast_config, ranks, folder: Path):
    """Fast R-CNN's selected checkpoint with fc6/fc7 replaced by their truncated SVD.

    Returns ``(config, task, state, step, errors)``: the config with ``model.svd_ranks``,
    and the relative Frobenius error of each truncated kernel."""
    _, state, info, step = restore_run(fast_config, folder.parent / "fast_rcnn", which="best")
    svd_config = copy.deepcopy(fast_config)
    with svd_config.unlocked():
        svd_config.model.svd_ranks = tuple(int(r) for r in ranks)
    params, errors = truncate_fc_layers(state.params, svd_config.model.svd_ranks)
    task = build_task(svd_config, make_model(svd_config, info))
    return svd_config, task, state.replace(params=params), step, errors


def _row(stage: str, stage_results: dict[str, float], split: str) -> dict[str, float]:
    out = {f"{stage}/test/{METRIC}": stage_results[f"{split}/{METRIC}"]}
    if f"{split}/AP" in stage_results:
        out[f"{stage}/test/AP"] = stage_results[f"{split}/AP"]
    for key, name in (("train/selected_step", "selected_step"), ("train/wall_s", "train_wall_s")):
        if key in stage_results:
            out[f"{stage}/{name}"] = stage_results[key]
    if "selected_step" in stage_results:
        out[f"{stage}/selected_step"] = stage_results["selected_step"]
    return out


def _timing(timed, num_images: int) -> dict[str, float]:
    """Seconds per test image of each ``(stage, config, task, variables)`` and the speedups over
    R-CNN; selective search runs once per image for the detectors that share its mode."""
    searches: SearchCache = {}
    results: dict[str, float] = {}
    for stage, stage_config, task, variables in timed:
        batches, raw = test_images(stage_config, stage_config.data.test_split, num_images)
        timing = time_detector(stage_config, task, variables, batches, raw, searches)
        results.update({f"{stage}_{k}": v for k, v in timing.items() if k != "s_per_image"})
        results[f"{stage}_s_per_image"] = timing["s_per_image"]
    base = results["rcnn_s_per_image"]
    for stage, *_ in timed:
        if stage != "rcnn":
            results[f"{stage}_speedup"] = base / results[f"{stage}_s_per_image"]
    results["timing_images"] = float(num_images)
    return results


def _report_sections(results: dict[str, float]) -> list[tuple[str, str]]:
    rows = []
    for stage, what in DETECTORS.items():
        rows.append(
            (
                what,
                results.get(f"{stage}/test/{METRIC}", "-"),
                results.get(f"{stage}/test/AP", "-"),
                results.get(f"{stage}_s_per_image", "-"),
                results.get(f"{stage}_speedup", "-"),
            )
        )
    table = markdown_table(
        ("detector", "test mAP@0.5", "test COCO AP", "test s/image", "speedup"), rows
    )
    steps = results["faster_rcnn/steps_to_scratch_final"]
    fraction = results["faster_rcnn/steps_fraction_to_scratch_final"]
    pretraining = (
        f"Faster R-CNN from the pre-trained trunk reaches the scratch run's final validation "
        f"mAP@0.5 at step {steps:.0f} ({fraction:.2f} of the scratch run's steps)."
    )
    if "faster_rcnn_10pct/test/mAP50" in results:
        pretraining += (
            f" On 10% of the training images: {results['faster_rcnn_10pct/test/mAP50']:.3f} "
            f"pre-trained vs {results['faster_rcnn_scratch_10pct/test/mAP50']:.3f} from scratch."
        )
    return [("The R-CNN family", table), ("Pre-training pays", pretraining)]


def run_rcnn_family(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, float]:
    """Run (or resume) every stage in ``workdir`` and write the table; see the module
    docstring. Returns the flat results (also in ``workdir/results.json``)."""
    wall_start = time.perf_counter()
    workdir = Path(workdir)
    fam = config.family
    pretrain_dir = workdir / "pretrain"
    train_stage(section_config(config, "pretrain", "pretrain", keep_name=True), pretrain_dir)
    init = {"model.init_from": str(pretrain_dir.resolve())}
    stages = {
        "faster_rcnn": section_config(config, "faster_rcnn", "faster_rcnn", **init),
        "fast_rcnn": section_config(config, "fast_rcnn", "fast_rcnn", **init),
        "rcnn": section_config(config, "rcnn", "rcnn", **init),
        "faster_rcnn_scratch": section_config(config, "faster_rcnn_scratch", "faster_rcnn"),
    }
    if fam.small_train_split:
        small = {"data.train_split": fam.small_train_split}
        stages["faster_rcnn_10pct"] = section_config(
            config, "faster_rcnn_10pct", "faster_rcnn", **init, **small
        )
        stages["faster_rcnn_scratch_10pct"] = section_config(
            config, "faster_rcnn_scratch_10pct", "faster_rcnn", **small
        )
    results: dict[str, float] = {}
    for stage, stage_config in stages.items():
        stage_results = train_stage(stage_config, workdir / stage)
        results.update(_row(stage, stage_results, stage_config.data.test_split))

    rcnn_config, fast_config = stages["rcnn"], stages["fast_rcnn"]
    svm_dir, svd_dir = workdir / "rcnn_svm", workdir / "fast_rcnn_svd"
    claim(svm_dir, ml_collections.ConfigDict({"rcnn": rcnn_config, "svm": config.svm}))
    claim(svd_dir, ml_collections.ConfigDict({"fast_rcnn": fast_config, "ranks": fam.svd_ranks}))

    def svm_stage():
        task, state, step, stats = _svm_model(rcnn_config, config, svm_dir)
        out = _evaluate(rcnn_config, task, state, rcnn_config.data.test_split)
        out["selected_step"] = float(step)
        return out | _svm_figures(stats)

    def svd_stage():
        svd_config, task, state, step, errors = _svd_model(fast_config, fam.svd_ranks, svd_dir)
        out = _evaluate(svd_config, task, state, svd_config.data.test_split)
        out["selected_step"] = float(step)
        return out | {f"svd/{k}_relative_error": float(v) for k, v in errors.items()}

    for stage, compute, split in (
        ("rcnn_svm", svm_stage, rcnn_config.data.test_split),
        ("fast_rcnn_svd", svd_stage, fast_config.data.test_split),
    ):
        results.update(_row(stage, derived_stage(workdir / stage, compute), split))

    steps, total = steps_to_reach(
        workdir / "faster_rcnn",
        workdir / "faster_rcnn_scratch",
        f"{stages['faster_rcnn'].data.eval_split}/{METRIC}",
    )
    results["faster_rcnn/steps_to_scratch_final"] = steps
    results["faster_rcnn/steps_fraction_to_scratch_final"] = steps / total

    def timing():
        timed = []
        for stage in ("rcnn", "fast_rcnn", "faster_rcnn"):
            task, state, _, _ = restore_run(stages[stage], workdir / stage, which="best")
            timed.append((stage, stages[stage], task, state.variables))
        task, state, _, _ = _svm_model(rcnn_config, config, svm_dir)
        timed.append(("rcnn_svm", rcnn_config, task, state.variables))
        svd_config, task, state, _, _ = _svd_model(fast_config, fam.svd_ranks, svd_dir)
        timed.append(("fast_rcnn_svd", svd_config, task, state.variables))
        return _timing(timed, int(fam.timing_images))

    timed_stages = {s: stages[s] for s in ("rcnn", "fast_rcnn", "faster_rcnn")}
    claim(
        workdir / "timing",
        ml_collections.ConfigDict(
            {
                **timed_stages,
                "svm": config.svm,
                "svd_ranks": fam.svd_ranks,
                "images": fam.timing_images,
            }
        ),
    )
    results.update(derived_stage(workdir / "timing", timing))
    info = jdata.get_info(config.data.name, data_dir=config.data.data_dir)
    notes = [
        f"{config.data.name} ({len(info.class_names)} classes): every detector fine-tuned from "
        f"`{pretrain_dir}` except the scratch rows; checkpoints chosen on validation, test "
        "evaluated once per row.",
        "Test time per image at batch 1 on this machine, selective search included for R-CNN "
        "and Fast R-CNN (median over the timed images).",
    ]
    write_study_outputs(
        workdir, config, results, _report_sections(results), notes=notes, wall_start=wall_start
    )
    return results
