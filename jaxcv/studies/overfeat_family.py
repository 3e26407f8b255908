"""Overfeat with the paper's pieces, from one pre-trained trunk to three merging rules.

``run_overfeat_family(config, workdir)`` (``jaxcv train overfeat_family``,
``experiments/overfeat_family.py`` has the config) runs these stages, each in its own folder of
``workdir`` (:mod:`jaxcv.studies.stages`: a finished stage is read, an unfinished training
resumes, a folder started with another config is refused):

1. ``pretrain``: ``config.pretrain``, the "ImageNet stage": a classifier with the localizer's
   trunk (``experiments/shapes_localizer_pretrain.py``);
2. ``localizer``: ``config.localizer`` (``shapes_localize``) with ``model.init_from`` the
   pre-trained run (:mod:`jaxcv.train.trunk` loads its conv and BatchNorm layers, the heads
   start fresh); its checkpoint is chosen on validation and its test split evaluated once:
   ``localizer/test/localization_accuracy``;
3. ``overfeat_localizer``: ``config.overfeat_localizer``, the localizer with a background
   class and class-specific boxes (one box per class, as the paper's regressor) trained on
   windows sampled from ``shapes/multi`` scenes, fine-tuned from the *trained localizer* (not
   from the trunk alone): the localizer's trunk and both hidden FC layers already classify a
   shape and regress its box in a 64x64 window, so only the two output layers start fresh
   (:mod:`jaxcv.train.init_from` takes the changed output sizes for new heads), which is the
   paper's order (the regressor is trained on the classifier's features) and leaves the
   detector's training budget to what is new: background windows, several objects, one box per
   class. Every ``train.checkpoint_every`` steps is kept; the training loop selects none
   (``train.best_metric`` None): its own evaluation resizes a whole scene into one window,
   which says little about detection, so
4. ``overfeat``: each kept checkpoint is made fully convolutional
   (:func:`jaxcv.models.overfeat.fully_convolutional`, offset max-pooling with
   ``overfeat.fine_stride``) and run at ``overfeat.scales`` on the validation scenes; each
   window's top class and its class-specific box are the candidates
   (:func:`jaxcv.tasks.sliding_window.window_candidates`), merged by each rule over a small
   grid of thresholds (:func:`threshold_grid`): the paper's pairwise merging
   (``paper_merge``: match threshold), greedy merging (``greedy``: IoU with the seed) and
   per-class NMS (``nms``: IoU), each with ``min_score``. VOC07 mAP@0.5 on validation chooses
   the checkpoint (the best over every rule and grid point) and, for that checkpoint, each
   rule's thresholds and the best rule (:func:`choose`). The test split is then evaluated
   once per rule with its chosen thresholds: ``overfeat/test/mAP50_paper_merge``,
   ``overfeat/test/mAP50_greedy``, ``overfeat/test/mAP50_nms`` and ``overfeat/test/mAP50``
   (the rule chosen on validation, ``overfeat/best_rule_index`` into :data:`RULES`);
5. ``timing``: naive sliding windows (every window cropped and run through the FC network,
   :func:`jaxcv.tasks.sliding_window.naive_multiscale`) against the fully convolutional net on
   the same windows (checked to agree) at one scale (``1.0``) and at ``overfeat.scales``, on
   ``timing.images`` test scenes at batch 1, warm jitted calls alternating, median of
   ``timing.repeats``: ``speedup_1scale``, ``speedup_3scales`` and the seconds per image. The
   network maps only: the candidates and their merging are the same work either way.

``results.json`` and ``report.md`` (:func:`jaxcv.studies.engine.write_study_outputs`) hold the
table; every validation grid point is in ``results.json`` as
``overfeat/validation/<rule>/min_score=<s>,threshold=<t>``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcv import data as jdata
from jaxcv.eval.detection import DetectionAccumulator
from jaxcv.models.overfeat import apply_multiscale, convert_params, fully_convolutional
from jaxcv.studies.engine import markdown_table, write_study_outputs
from jaxcv.studies.stages import claim, derived_stage, section_config, train_stage
from jaxcv.tasks.sliding_window import merge_candidates, naive_multiscale, window_candidates
from jaxcv.train.checkpoint import Checkpointer
from jaxcv.train.inference import restore_run
from jaxcv.train.runtime import run_metadata

__all__ = ["RULES", "choose", "run_overfeat_family", "stage_configs", "threshold_grid"]

#: The merging rules: result name -> (``detect`` method, what it is).
RULES = {
    "paper_merge": ("paper_merge", "the paper's pairwise merging (match score)"),
    "greedy": ("merge", "greedy merging (IoU with the highest-scoring box, centre distance)"),
    "nms": ("nms", "per-class NMS"),
}
CANDIDATE_KEYS = ("boxes", "scores", "classes", "valid")
GT_KEYS = ("boxes", "classes", "valid", "example_valid")
#: Tolerances of the naive vs fully convolutional agreement check (the benchmark saw 6e-8 in
#: probabilities and 6e-5 px in boxes).
AGREEMENT = {"probs": 1e-3, "boxes": 0.05}


def threshold_grid(ov: ml_collections.ConfigDict, rule: str) -> list[tuple[float, float]]:
    """``[(min_score, threshold), ...]`` of ``rule``: every ``overfeat.min_scores`` with every
    ``overfeat.paper_match_thresholds`` (``paper_merge``), ``greedy_ious`` or ``nms_ious``."""
    thresholds = {
        "paper_merge": ov.paper_match_thresholds,
        "greedy": ov.greedy_ious,
        "nms": ov.nms_ious,
    }[rule]
    return [(float(s), float(t)) for s in ov.min_scores for t in thresholds]


def choose(scores: dict[Any, float]) -> Any:
    """The key of the highest score, the first one in order among equals; NaN never wins
    unless everything is NaN (then the first key)."""
    if not scores:
        raise ValueError("nothing to choose from")
    best_key, best = next(iter(scores)), -np.inf
    for key, value in scores.items():
        if not np.isnan(value) and value > best:
            best_key, best = key, value
    return best_key


def _grid_key(rule: str, min_score: float, threshold: float) -> str:
    return f"overfeat/validation/{rule}/min_score={min_score:g},threshold={threshold:g}"


def _merge_kwargs(ov, rule: str, min_score: float, threshold: float) -> dict[str, Any]:
    method = RULES[rule][0]
    kwargs = {
        "method": method,
        "min_score": float(min_score),
        "max_output": int(ov.max_detections),
        "max_candidates": None if ov.max_candidates is None else int(ov.max_candidates),
    }
    if method == "paper_merge":
        kwargs["match_threshold"] = float(threshold)
    else:
        kwargs["iou_threshold"] = float(threshold)
        kwargs["center_threshold"] = float(ov.greedy_center)
    return kwargs


# --------------------------------------------------------------------------- the detector
def _fully_convolutional(task, variables: dict, fine_stride: bool):
    """``(fc_model, fc_variables, geometry, box_weights)`` of a trained localizer task."""
    window = tuple(int(s) for s in task.window)
    fc_model, geometry = fully_convolutional(task.model, window, fine_stride=fine_stride)
    fc_vars = jax.tree.map(jnp.asarray, convert_params(variables, task.model, window))
    return fc_model, fc_vars, geometry, tuple(float(w) for w in task.box_weights)


def _checkpoints(
    stage_config, folder: Path, steps: Sequence[int] | None = None
) -> Iterator[tuple[int, Any, dict]]:
    """``(step, task, variables)`` of each checkpoint of the training in ``folder`` (``steps``,
    or every saved one), read-only."""
    stage_config = copy.deepcopy(stage_config)  # restore_run fills in model.num_classes
    task, state, _, _ = restore_run(stage_config, folder, which="latest")
    checkpointer = Checkpointer(
        folder / "checkpoints",
        keep=stage_config.train.keep_checkpoints,
        metadata=run_metadata(stage_config),
        identity_keys=("name",),
        read_only=True,
    )
    try:
        for step in checkpointer.all_steps() if steps is None else steps:
            restored = checkpointer.restore(int(step), state)
            yield int(step), task, {"params": restored.params, **(restored.model_state or {})}
    finally:
        checkpointer.close()


def _scenes(config, split: str, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    ov = config.overfeat
    return jdata.make_pipeline(
        ov.dataset,
        split,
        int(batch_size),
        train=False,
        seed=int(config.seed),
        max_objects=int(ov.max_objects),
        data_dir=config.data.data_dir,
        keys=("image", "boxes", "classes", "valid"),
    ).as_numpy_iterator()


def _candidates(config, detector, split: str) -> list[tuple[dict, dict]]:
    """Every window's top class, score and box on ``split`` (no score threshold yet), with the
    ground truth: ``[(ground truth, candidates)]`` per batch, on the host."""
    fc_model, fc_vars, geometry, box_weights = detector
    ov = config.overfeat
    out = []
    for batch in _scenes(config, split, ov.batch_size):
        maps = apply_multiscale(fc_model, fc_vars, batch["image"], ov.scales, geometry, box_weights)
        cand = jax.device_get(window_candidates(maps, 0.0))
        out.append(({k: batch[k] for k in GT_KEYS}, {k: cand[k] for k in CANDIDATE_KEYS}))
    return out


def _map50(cached: list[tuple[dict, dict]], kwargs: dict[str, Any]) -> float:
    """VOC07 mAP@0.5 of the cached candidates merged with ``kwargs``."""
    acc = DetectionAccumulator()
    for gt, cand in cached:
        det = jax.device_get(merge_candidates(cand, **kwargs))
        acc.add(
            gt_boxes=gt["boxes"],
            gt_classes=gt["classes"],
            gt_valid=gt["valid"],
            det_boxes=det["boxes"],
            det_scores=det["scores"],
            det_classes=det["classes"] + 1,  # the dataset's classes count the background as 0
            det_valid=det["valid"],
            example_valid=gt["example_valid"],
        )
    return float(acc.voc(0.5)["mAP"])


def _validation_grid(ov, cached) -> dict[str, dict[tuple[float, float], float]]:
    """``{rule: {(min_score, threshold): validation mAP@0.5}}``."""
    return {
        rule: {
            (s, t): _map50(cached, _merge_kwargs(ov, rule, s, t))
            for s, t in threshold_grid(ov, rule)
        }
        for rule in RULES
    }


def _overfeat_stage(config, loc_config, loc_dir: Path) -> dict[str, float]:
    """Choose the checkpoint, thresholds and rule on validation; test each rule once."""
    ov = config.overfeat
    fine = bool(ov.fine_stride)
    results: dict[str, float] = {}
    best: tuple[float, int, dict, Any] | None = None
    for step, task, variables in _checkpoints(loc_config, loc_dir):
        t0 = time.perf_counter()
        detector = _fully_convolutional(task, variables, fine)
        grid = _validation_grid(ov, _candidates(config, detector, ov.validation_split))
        top = max(max(g.values()) for g in grid.values())
        results[f"overfeat_localizer/validation/mAP50_step{step}"] = top
        print(
            f"overfeat: checkpoint {step}: best validation mAP@0.5 {top:.4f} over "
            f"{sum(len(g) for g in grid.values())} merging settings "
            f"({time.perf_counter() - t0:.0f} s)"
        )
        if best is None or top > best[0]:
            best = (top, step, grid, detector)
    if best is None:
        raise ValueError(f"no checkpoint in {loc_dir / 'checkpoints'}")
    _, step, grid, detector = best
    results["overfeat_localizer/selected_step"] = float(step)
    chosen = {}
    for rule, scores in grid.items():
        for (s, t), value in scores.items():
            results[_grid_key(rule, s, t)] = value
        chosen[rule] = choose(scores)
        min_score, threshold = chosen[rule]
        results[f"overfeat/validation/mAP50_{rule}"] = scores[chosen[rule]]
        results[f"overfeat/{rule}/min_score"] = min_score
        results[f"overfeat/{rule}/threshold"] = threshold
    best_rule = choose({rule: grid[rule][chosen[rule]] for rule in RULES})
    results["overfeat/best_rule_index"] = float(list(RULES).index(best_rule))
    test = _candidates(config, detector, ov.test_split)
    for rule in RULES:
        results[f"overfeat/test/mAP50_{rule}"] = _map50(
            test, _merge_kwargs(ov, rule, *chosen[rule])
        )
    results["overfeat/test/mAP50"] = results[f"overfeat/test/mAP50_{best_rule}"]
    results["overfeat/test/num_images"] = float(
        sum(int(gt["example_valid"].sum()) for gt, _ in test)
    )
    return results


# --------------------------------------------------------------------------- timing
def _block(outputs) -> None:
    jax.block_until_ready([(o.probs, o.boxes) for o in outputs])


def _timed(fn) -> float:
    t0 = time.perf_counter()
    _block(fn())
    return time.perf_counter() - t0


def _max_diff(naive, fast) -> tuple[float, float]:
    """Max abs difference of probs and boxes at the naive windows (a prefix of the map)."""
    dp, db = 0.0, 0.0
    for a, b in zip(naive, fast, strict=True):
        h, w = a.probs.shape[1:3]
        if b.probs.shape[1] < h or b.probs.shape[2] < w:
            raise ValueError(f"the fully convolutional map {b.probs.shape} misses naive windows")
        dp = max(dp, float(np.abs(np.asarray(a.probs) - np.asarray(b.probs)[:, :h, :w]).max()))
        db = max(db, float(np.abs(np.asarray(a.boxes) - np.asarray(b.boxes)[:, :h, :w]).max()))
    return dp, db


def _timing_stage(config, loc_config, loc_dir: Path, step: int) -> dict[str, float]:
    """Naive vs fully convolutional seconds per image at 1 scale and at ``overfeat.scales``."""
    ov, tc = config.overfeat, config.timing
    ((_, task, variables),) = _checkpoints(loc_config, loc_dir, [step])
    fc_model, fc_vars, geometry, box_weights = _fully_convolutional(
        task, variables, bool(ov.fine_stride)
    )
    images = []  # batches of timing.batch_size test scenes, timing.images scenes in all
    per_call = int(tc.batch_size)
    for batch in _scenes(config, ov.test_split, per_call):
        if batch["example_valid"].all():
            images.append(jax.device_put(batch["image"]))
        if len(images) * per_call >= int(tc.images):
            break
    results: dict[str, float] = {}
    diffs = [0.0, 0.0]
    for tag, scales in (("1scale", (1.0,)), ("3scales", tuple(ov.scales))):

        def naive(image, scales=scales):
            return naive_multiscale(task.model, variables, image, scales, geometry, box_weights)

        def fast(image, scales=scales):
            return apply_multiscale(fc_model, fc_vars, image, scales, geometry, box_weights)

        compile_naive, compile_fast = (
            _timed(lambda: naive(images[0])),
            _timed(lambda: fast(images[0])),
        )
        t_naive, t_fast = [], []
        for image in images:
            dp, db = _max_diff(naive(image), fast(image))
            diffs = [max(diffs[0], dp), max(diffs[1], db)]
            for _ in range(int(tc.repeats)):
                t_naive.append(_timed(lambda image=image: naive(image)) / per_call)
                t_fast.append(_timed(lambda image=image: fast(image)) / per_call)
        windows = sum(int(np.prod(o.probs.shape[1:3])) for o in naive(images[0]))
        fc_windows = sum(int(np.prod(o.probs.shape[1:3])) for o in fast(images[0]))
        med_naive, med_fast = float(np.median(t_naive)), float(np.median(t_fast))
        results |= {
            f"naive_s_per_image_{tag}": med_naive,
            f"overfeat_s_per_image_{tag}": med_fast,
            f"speedup_{tag}": med_naive / med_fast,
            f"windows_{tag}": float(windows),
            f"overfeat_windows_{tag}": float(fc_windows),
            f"naive_compile_s_{tag}": compile_naive,
            f"overfeat_compile_s_{tag}": compile_fast,
        }
    if diffs[0] > AGREEMENT["probs"] or diffs[1] > AGREEMENT["boxes"]:
        raise ValueError(
            f"naive and fully convolutional windows disagree: max |dp| {diffs[0]:.2e}, max "
            f"|dbox| {diffs[1]:.2e} px (tolerances {AGREEMENT})"
        )
    results["timing/max_abs_diff_probs"], results["timing/max_abs_diff_boxes"] = diffs
    results["timing/images"] = float(len(images) * per_call)
    results["timing/batch_size"] = float(per_call)
    results["timing/step"] = float(step)
    return results


# --------------------------------------------------------------------------- the study
def stage_configs(config: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """The three training stages' whole configs, each ``model.init_from`` the one before."""
    workdir = Path(workdir)
    return {
        "pretrain": section_config(config, "pretrain", "pretrain", keep_name=True),
        "localizer": section_config(
            config,
            "localizer",
            "localizer",
            **{"model.init_from": str((workdir / "pretrain").resolve())},
        ),
        "overfeat_localizer": section_config(
            config,
            "overfeat_localizer",
            "overfeat_localizer",
            **{"model.init_from": str((workdir / "localizer").resolve())},
        ),
    }


def _report_sections(results: dict[str, float], config) -> list[tuple[str, str]]:
    ov = config.overfeat
    best_rule = list(RULES)[int(results["overfeat/best_rule_index"])]
    rows = [
        (
            f"{what}{' (chosen)' if rule == best_rule else ''}",
            results[f"overfeat/validation/mAP50_{rule}"],
            results[f"overfeat/test/mAP50_{rule}"],
            results[f"overfeat/{rule}/min_score"],
            results[f"overfeat/{rule}/threshold"],
        )
        for rule, (_, what) in RULES.items()
    ]
    merging = markdown_table(
        ("merging rule", "validation mAP@0.5", "test mAP@0.5", "min_score", "threshold"), rows
    )
    stages = markdown_table(
        ("stage", "figure", "value"),
        [
            ("pretrain", "test accuracy", results.get("pretrain/test/accuracy", "-")),
            (
                "localizer",
                "test localization accuracy",
                results["localizer/test/localization_accuracy"],
            ),
            (
                "overfeat",
                "test mAP@0.5 (rule chosen on validation)",
                results["overfeat/test/mAP50"],
            ),
        ],
    )
    timing = markdown_table(
        ("scales", "windows", "naive s/image", "Overfeat s/image", "speedup"),
        [
            (
                label,
                f"{results[f'windows_{tag}']:.0f}",
                results[f"naive_s_per_image_{tag}"],
                results[f"overfeat_s_per_image_{tag}"],
                f"{results[f'speedup_{tag}']:.1f}x",
            )
            for tag, label in (
                ("1scale", "1.0"),
                ("3scales", ", ".join(f"{s:g}" for s in ov.scales)),
            )
        ],
    )
    return [
        ("Stages", stages),
        ("Merging rules (thresholds chosen on validation, test once)", merging),
        ("Naive sliding windows vs fully convolutional (same windows)", timing),
    ]


def run_overfeat_family(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, float]:
    """Run (or resume) every stage in ``workdir`` and write the table; see the module
    docstring. Returns the flat results (also in ``workdir/results.json``)."""
    wall_start = time.perf_counter()
    workdir = Path(workdir)
    stages = stage_configs(config, workdir)
    # The derived stages' folders are claimed for the configs as written (a run fills in e.g.
    # model.num_classes), so that a rerun compares like with like.
    loc_config = copy.deepcopy(stages["overfeat_localizer"])
    results: dict[str, float] = {}
    for stage, stage_config in stages.items():
        stage_results = train_stage(stage_config, workdir / stage)
        split = stage_config.data.test_split
        for key, value in stage_results.items():
            if split and key.startswith(f"{split}/"):
                results[f"{stage}/test/{key.split('/', 1)[1]}"] = value
        for key in ("train/selected_step", "train/wall_s"):
            if key in stage_results:
                results[f"{stage}/{key.split('/', 1)[1]}"] = stage_results[key]

    loc_dir = workdir / "overfeat_localizer"
    overfeat_dir, timing_dir = workdir / "overfeat", workdir / "timing"
    claim(
        overfeat_dir,
        ml_collections.ConfigDict({"overfeat_localizer": loc_config, "overfeat": config.overfeat}),
    )
    results.update(
        derived_stage(overfeat_dir, lambda: _overfeat_stage(config, loc_config, loc_dir))
    )
    step = int(results["overfeat_localizer/selected_step"])
    claim(
        timing_dir,
        ml_collections.ConfigDict(
            {
                "overfeat_localizer": loc_config,
                "overfeat": config.overfeat,
                "timing": config.timing,
            }
        ),
    )
    results.update(
        derived_stage(timing_dir, lambda: _timing_stage(config, loc_config, loc_dir, step))
    )
    best_rule = list(RULES)[int(results["overfeat/best_rule_index"])]
    notes = [
        f"Stages in `{workdir}`: `pretrain` (a classifier with the localizer's trunk), "
        "`localizer` (from its trunk), `overfeat_localizer` (background class, class-specific "
        "boxes, from the localizer), then `overfeat` and `timing`; every checkpoint chosen on "
        "validation, every test split evaluated once.",
        f"Overfeat: {config.overfeat.dataset} at scales {tuple(config.overfeat.scales)}, "
        f"{'with' if config.overfeat.fine_stride else 'without'} offset max-pooling; "
        f"checkpoint {step} and each rule's thresholds chosen on "
        f"`{config.overfeat.validation_split}` (VOC07 mAP@0.5); best rule on validation: "
        f"{best_rule}.",
        f"Timing: {int(results['timing/images'])} test scenes at batch 1, median of "
        f"{int(config.timing.repeats)} warm calls each, network maps only.",
    ]
    write_study_outputs(
        workdir,
        config,
        results,
        _report_sections(results, config),
        notes=notes,
        wall_start=wall_start,
    )
    return results
