"""The segmentation family from one pre-trained trunk: patch CNN, FCN-32s/16s/8s, DeconvNet.

``run_segmentation_family(config, workdir)`` (``jaxcv train segmentation_family``,
``experiments/segmentation_family.py`` has the config) runs these stages, each in its own folder
of ``workdir`` (:mod:`jaxcv.studies.stages`: a finished stage is read, an unfinished training
resumes, a folder started with another config is refused):

1. ``pretrain``: ``config.pretrain``, a VGG classifier whose trunk and ``fc6``/``fc7`` the
   segmenters share;
2. ``fcn32s``, ``deconvnet``, ``patch_cnn``: ``config.<stage>`` with ``model.init_from`` the
   pre-trained run (DeconvNet on object crops and test-time proposals,
   :mod:`jaxcv.tasks.proposal_segmentation`, when its config's task says so); ``fcn16s`` from
   the trained ``fcn32s`` and ``fcn8s`` from ``fcn16s``, as the FCN paper trains them: the
   coarser net's layers are kept, its last upsampling is left out (``model.init_drop``) and
   the new skip and upsampling layers start fresh (``model.init_fresh``: score layers zero,
   upsampling bilinear, so the finer net starts from the coarser net's scores). Each selects
   its checkpoint on ``data.eval_split`` and tests ``data.test_split`` once
   (:func:`jaxcv.train.loop.train_and_evaluate`);
3. ``deconvnet_fcn8s_ensemble``: the mean of DeconvNet's and FCN-8s' per-pixel softmax maps
   (the DeconvNet paper's ensemble), on FCN-8s' test split; and ``deconvnet_fcn8s_weighted``
   (in the same folder): ``w * DeconvNet + (1 - w) * FCN-8s`` with ``w`` the one of
   ``family.ensemble_weights`` best on FCN-8s' validation split
   (``deconvnet_fcn8s_weighted/deconvnet_weight``);
4. ``timing``: inference seconds per test image at batch 1 (median over ``family.timing_images``
   images after a warm-up call) of each model, external proposals given (not timed), and
   ``patch_cnn_over_fcn8s`` (the ratio).

``results.json`` keys: ``<model>/test/mIoU``, ``/pixel_accuracy``, ``/mean_accuracy``,
``/fwIoU``, ``/class_iou/<k>``, ``<model>/test_split`` (a string in the report only),
``<model>/selected_step``, ``<model>/train_wall_s``; ``<model>/s_per_image`` and
``patch_cnn_over_fcn8s``.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcv import data as jdata
from jaxcv.studies.engine import markdown_table, write_study_outputs
from jaxcv.studies.stages import claim, derived_stage, section_config, train_stage
from jaxcv.tasks.segmentation import METRIC_KEYS, PRED_KEY
from jaxcv.train.inference import restore_run
from jaxcv.train.runtime import make_eval_pipeline
from jaxcv.types import EXAMPLE_VALID, IMAGE, PROPOSAL_VALID, PROPOSALS

__all__ = ["ENSEMBLE", "MODELS", "WEIGHTED", "run_segmentation_family"]

#: The rows of the table: stage -> what it is.
MODELS = {
    "patch_cnn": "Patch CNN (every pixel's multi-scale patch classified)",
    "fcn32s": "FCN-32s",
    "fcn16s": "FCN-16s (from FCN-32s)",
    "fcn8s": "FCN-8s (from FCN-16s)",
    "deconvnet": "DeconvNet",
}
ENSEMBLE = "deconvnet_fcn8s_ensemble"
#: The weighted ensemble, its DeconvNet weight chosen on validation.
WEIGHTED = "deconvnet_fcn8s_weighted"
#: FCN stage -> (the stage it starts from, modules left out of it, its new modules).
FCN_CHAIN = {
    "fcn16s": ("fcn32s", ["upscore32"], ["upscore2", "score_pool4", "upscore16"]),
    "fcn8s": ("fcn16s", ["upscore16"], ["upscore_pool4", "score_pool3", "upscore8"]),
}


def _row(stage: str, results: dict[str, float], split: str) -> dict[str, float]:
    """``<stage>/test/<metric>`` (and per-class IoU) from a stage's results on ``split``."""
    out = {
        f"{stage}/test/{key[len(split) + 1 :]}": float(value)
        for key, value in results.items()
        if key.startswith(f"{split}/") and not key.endswith("/loss")
    }
    for key, name in (("train/selected_step", "selected_step"), ("train/wall_s", "train_wall_s")):
        if key in results:
            out[f"{stage}/{name}"] = float(results[key])
    return out


def _inputs(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The keys of ``batch`` a segmenter's logits read: the image and, for the proposal
    DeconvNet (``tasks/proposal_segmentation.py``), its proposals."""
    return {k: v for k, v in batch.items() if k in (IMAGE, PROPOSALS, PROPOSAL_VALID)}


def _probabilities(task):
    """``(variables, batch) -> (B, H, W, K)`` softmax of ``task``'s logits."""
    return lambda variables, batch: jax.nn.softmax(task.batch_logits(variables, batch), axis=-1)


def _ensemble_sweep(config, members, split: str, weights) -> list[dict[str, float]]:
    """One pass of ``config``'s eval pipeline over ``split``: for each DeconvNet weight ``w`` in
    ``weights``, the metrics ``{"<split>/<metric>": value}`` of ``w * p_deconvnet + (1 - w) *
    p_fcn8s`` (``members``: the two restored runs, DeconvNet first)."""
    probs = [_probabilities(task) for task, *_ in members]
    variables = [state.variables for _, state, *_ in members]
    w = jnp.asarray(weights, jnp.float32)[:, None, None, None, None]

    def predict(variables, batch):
        p_deconv, p_fcn = (p(v, batch) for p, v in zip(probs, variables, strict=True))
        return jnp.argmax(w * p_deconv + (1 - w) * p_fcn, axis=-1).astype(jnp.int32)

    fn = jax.jit(predict)
    evaluators = [members[1][0].make_evaluator() for _ in weights]
    for batch in make_eval_pipeline(config, split).as_numpy_iterator():
        preds = np.asarray(fn(variables, _inputs(batch)))  # (W, B, H, W)
        for evaluator, pred in zip(evaluators, preds, strict=True):
            evaluator.update(batch, {PRED_KEY: pred})
    return [{f"{split}/{k}": float(v) for k, v in e.result().items()} for e in evaluators]


def _ensemble(stages, workdir: Path, weights) -> dict[str, float]:
    """The DeconvNet paper's ensemble, the mean of DeconvNet's and FCN-8s' softmax maps, and a
    weighted mean whose DeconvNet weight is chosen among ``weights`` on FCN-8s' validation
    split; both on FCN-8s' test split (read through DeconvNet's pipeline, which adds its
    proposals). Keys: ``<test split>/<metric>`` (the mean), ``weighted/<test split>/<metric>``,
    ``deconvnet_weight`` and ``validation_mIoU/<w>``."""
    deconvnet, fcn8s = stages["deconvnet"], stages["fcn8s"]
    if tuple(deconvnet.data.image_size or ()) != tuple(fcn8s.data.image_size or ()):
        raise ValueError("the ensemble needs deconvnet and fcn8s at the same data.image_size")
    weights = [float(w) for w in weights]
    if not weights or not all(0.0 < w < 1.0 for w in weights):
        raise ValueError(f"family.ensemble_weights must be in (0, 1); got {weights}")
    members = [restore_run(stages[s], workdir / s, which="best") for s in ("deconvnet", "fcn8s")]
    val_split, test_split = fcn8s.data.eval_split, fcn8s.data.test_split
    validation = _ensemble_sweep(deconvnet, members, val_split, weights)
    scores = [m[f"{val_split}/mIoU"] for m in validation]
    best = weights[int(np.argmax(scores))]
    mean, weighted = _ensemble_sweep(deconvnet, members, test_split, [0.5, best])
    out = {**mean, **{f"weighted/{k}": v for k, v in weighted.items()}, "deconvnet_weight": best}
    out.update({f"validation_mIoU/{w:g}": m for w, m in zip(weights, scores, strict=True)})
    return out


def _seconds_per_image(config, task, variables, num_images: int) -> float:
    """Median wall seconds of one test image (batch 1, jitted argmax map, after a warm-up;
    external proposals are inputs: their selective search is not timed)."""
    examples = []
    for batch in make_eval_pipeline(config, config.data.test_split).as_numpy_iterator():
        inputs = _inputs(batch)
        rows = np.flatnonzero(np.asarray(batch[EXAMPLE_VALID], bool))
        examples += [{k: v[i : i + 1] for k, v in inputs.items()} for i in rows]
        if len(examples) > num_images:
            break
    predict = _probabilities(task)
    fn = jax.jit(lambda v, x: jnp.argmax(predict(v, x), axis=-1))
    jax.block_until_ready(fn(variables, examples[0]))
    times = []
    for example in examples[1 : num_images + 1]:
        t0 = time.perf_counter()
        jax.block_until_ready(fn(variables, example))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _timing(stages, workdir: Path, num_images: int) -> dict[str, float]:
    out = {}
    for stage in MODELS:
        task, state, _, _ = restore_run(stages[stage], workdir / stage, which="best")
        out[f"{stage}/s_per_image"] = _seconds_per_image(
            stages[stage], task, state.variables, num_images
        )
    out["patch_cnn_over_fcn8s"] = out["patch_cnn/s_per_image"] / out["fcn8s/s_per_image"]
    out["timing_images"] = float(num_images)
    return out


def _report_sections(results: dict[str, float], splits: dict[str, str]):
    rows = []
    ensembles = {
        ENSEMBLE: "DeconvNet + FCN-8s ensemble (mean)",
        WEIGHTED: "DeconvNet + FCN-8s, DeconvNet weight "
        f"{results.get(f'{WEIGHTED}/deconvnet_weight', float('nan')):g} (chosen on validation)",
    }
    for stage, what in {**MODELS, **ensembles}.items():
        rows.append(
            (
                what,
                splits[stage],
                *(results.get(f"{stage}/test/{k}", "-") for k in METRIC_KEYS),
                results.get(f"{stage}/s_per_image", "-"),
            )
        )
    table = markdown_table(
        ("model", "test split", "pixel acc.", "mean acc.", "mIoU", "fwIoU", "s/image"), rows
    )
    num_classes = max(
        (int(k.rsplit("/", 1)[1]) + 1 for k in results if "/test/class_iou/" in k), default=0
    )
    per_class = markdown_table(
        ("model", *(f"class {k}" for k in range(num_classes))),
        [
            (stage, *(results.get(f"{stage}/test/class_iou/{k}", "-") for k in range(num_classes)))
            for stage in (*MODELS, ENSEMBLE, WEIGHTED)
        ],
    )
    return [("The segmentation family", table), ("IoU per class (0 = background)", per_class)]


def run_segmentation_family(
    config: ml_collections.ConfigDict, workdir: str | Path
) -> dict[str, float]:
    """Run (or resume) every stage in ``workdir`` and write the table; see the module
    docstring. Returns the flat results (also in ``workdir/results.json``)."""
    wall_start = time.perf_counter()
    workdir = Path(workdir)
    pretrain_dir = workdir / "pretrain"
    train_stage(section_config(config, "pretrain", "pretrain", keep_name=True), pretrain_dir)
    init = {"model.init_from": str(pretrain_dir.resolve())}
    stages = {
        "fcn32s": section_config(config, "fcn32s", "fcn32s", **init),
        "deconvnet": section_config(config, "deconvnet", "deconvnet", **init),
        "patch_cnn": section_config(config, "patch_cnn", "patch_cnn", **init),
    }
    for stage, (source, drop, fresh) in FCN_CHAIN.items():
        stages[stage] = section_config(
            config,
            stage,
            stage,
            **{
                "model.init_from": str((workdir / source).resolve()),
                "model.init_drop": drop,
                "model.init_fresh": fresh,
            },
        )
    results: dict[str, float] = {}
    splits: dict[str, str] = {}
    for stage in ("fcn32s", "fcn16s", "fcn8s", "deconvnet", "patch_cnn"):
        split = stages[stage].data.test_split
        results.update(_row(stage, train_stage(stages[stage], workdir / stage), split))
        splits[stage] = split

    ensemble_dir = workdir / ENSEMBLE
    weights = tuple(config.family.ensemble_weights)
    claim(
        ensemble_dir,
        ml_collections.ConfigDict(
            {"weights": weights, **{s: stages[s] for s in ("deconvnet", "fcn8s")}}
        ),
    )
    split = stages["fcn8s"].data.test_split
    ensemble = derived_stage(ensemble_dir, lambda: _ensemble(stages, workdir, weights))
    results.update(_row(ENSEMBLE, ensemble, split))
    weighted = {k.split("/", 1)[1]: v for k, v in ensemble.items() if k.startswith("weighted/")}
    results.update(_row(WEIGHTED, weighted, split))
    results[f"{WEIGHTED}/deconvnet_weight"] = float(ensemble["deconvnet_weight"])
    splits[ENSEMBLE] = splits[WEIGHTED] = split

    timing_dir = workdir / "timing"
    num_images = int(config.family.timing_images)
    claim(timing_dir, ml_collections.ConfigDict({"models": dict(stages), "images": num_images}))
    results.update(derived_stage(timing_dir, lambda: _timing(stages, workdir, num_images)))

    info = jdata.get_info(config.data.name, data_dir=config.data.data_dir)
    notes = [
        f"{config.data.name} ({len(info.class_names)} object classes + background): every "
        f"model fine-tuned from `{pretrain_dir}` (FCN-16s from FCN-32s, FCN-8s from FCN-16s); "
        "checkpoints chosen on validation mIoU, each test split evaluated once.",
        "Inference time per 128x128 test image at batch 1 on this machine (median), the patch "
        f"CNN {results['patch_cnn_over_fcn8s']:.0f}x FCN-8s'.",
    ]
    write_study_outputs(
        workdir,
        config,
        results,
        _report_sections(results, splits),
        notes=notes,
        wall_start=wall_start,
    )
    return results
