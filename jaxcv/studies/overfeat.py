"""The Overfeat study: train a localizer on crops, then detect fully convolutionally.

:func:`run_overfeat` (config from ``experiments/shapes_overfeat.py``):

1. trains the :class:`~jaxcv.models.localizer.Localizer` with the engine
   (:func:`jaxcv.train.loop.train_and_evaluate`) on ``config.data`` (with
   ``localization.window``: object and background windows sampled from full scenes, see
   :mod:`jaxcv.tasks.window_sampling`) in ``overfeat.localizer_workdir`` (default
   ``WORKDIR/localizer``; resumes, and only evaluates when already trained), under the
   experiment name ``overfeat.localizer_name``, so an existing run can be reused;
2. converts its FC heads to convolutions (:mod:`jaxcv.models.overfeat`, nothing retrained);
3. on full-size ``shapes/single`` test scenes (128x128, ``overfeat.single_scales``): the top
   merged box gives ``test/accuracy``, ``test/localization_accuracy``, ``test/mean_iou``
   (and the single best window without merging, ``test/localization_accuracy_best_window``),
   with a figure of drawn sample predictions;
4. on ``shapes/multi`` test scenes (``overfeat.multi_scales``): VOC07 ``test/mAP50`` with
   greedy merging and ``test/mAP50_nms`` with per-class NMS instead;
5. writes ``results.json`` and ``report.md`` with the three panels of a few scenes.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcv import data as jdata
from jaxcv.eval.detection import DetectionAccumulator
from jaxcv.models.overfeat import apply_multiscale, convert_params, fully_convolutional
from jaxcv.tasks.localization import localization_metrics
from jaxcv.tasks.sliding_window import best_window, detect, window_candidates
from jaxcv.train import report as report_lib
from jaxcv.train.inference import restore_run
from jaxcv.train.loop import train_and_evaluate
from jaxcv.train.outputs import write_results
from jaxcv.viz.detections import detection_grid
from jaxcv.viz.windows import overfeat_panels

__all__ = ["localizer_config", "run_overfeat"]


def localizer_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The localizer's training config: ``config`` named ``overfeat.localizer_name``."""
    loc = copy.deepcopy(config)
    with loc.unlocked():
        loc.name = config.overfeat.localizer_name
    return loc


def _pipeline(config, dataset: str, max_objects: int, keys):
    ov = config.overfeat
    return jdata.make_pipeline(
        dataset,
        ov.eval_split,
        ov.batch_size,
        train=False,
        seed=config.seed,
        max_objects=max_objects,
        data_dir=config.data.data_dir,
        keys=keys,
    )


def _merge_kwargs(ov, method: str) -> dict:
    return {
        "method": method,
        "min_score": float(ov.min_score),
        "iou_threshold": float(ov.merge_iou if method == "merge" else ov.nms_iou),
        "center_threshold": float(ov.merge_center),
        "max_output": int(ov.max_detections),
    }


def _evaluate_single(config, fc_model, variables, geometry, box_weights, class_names, fig_dir):
    ov = config.overfeat
    keys = ("image", "label", "boxes", "classes", "valid")
    rows = {"merge": [], "nms": [], "best_window": []}
    seen, t_total = 0, 0.0
    drawn = {"image": [], "box": [], "label": [], "score": [], "gt": [], "gt_classes": []}
    for batch in _pipeline(config, ov.single_dataset, 1, keys).as_numpy_iterator():
        keep = batch["example_valid"].astype(bool)
        t0 = time.perf_counter()
        outs = apply_multiscale(
            fc_model, variables, batch["image"], ov.single_scales, geometry, box_weights
        )
        preds = {m: detect(outs, **_merge_kwargs(ov, m)) for m in ("merge", "nms")}
        jax.block_until_ready(preds)
        t_total += time.perf_counter() - t0
        per_scale = [best_window(o.probs, o.boxes) for o in outs]
        win = np.argmax(np.stack([np.asarray(p["score"]) for p in per_scale]), axis=0)
        n = len(keep)
        best = {
            "label": np.stack([np.asarray(p["label"]) for p in per_scale])[win, np.arange(n)],
            "box": np.stack([np.asarray(p["box"]) for p in per_scale])[win, np.arange(n)],
        }
        k = int(fc_model.num_classes)
        cands = {"best_window": (best["label"], best["box"])}
        for method in ("merge", "nms"):
            # The top detection; the best window when no candidate passed min_score.
            ok = np.asarray(preds[method]["valid"][:, 0])
            label = np.where(ok, np.asarray(preds[method]["classes"][:, 0]), best["label"])
            box = np.where(ok[:, None], np.asarray(preds[method]["boxes"][:, 0]), best["box"])
            cands[method] = (label, box)
        if len(drawn["image"]) < ov.num_figures * 4:
            take = np.flatnonzero(keep)[: ov.num_figures * 4 - len(drawn["image"])]
            ok = np.asarray(preds["merge"]["valid"][:, 0])
            score = np.where(ok, np.asarray(preds["merge"]["scores"][:, 0]), 0.0)
            for key, value in (
                ("image", batch["image"]),
                ("box", cands["merge"][1]),
                ("label", cands["merge"][0]),
                ("score", score),
                ("gt", batch["boxes"]),
                ("gt_classes", batch["classes"]),
            ):
                drawn[key].extend(np.asarray(value)[take])
        for name, (label, box) in cands.items():
            m = localization_metrics(
                np.eye(k)[label][keep],
                box[keep],
                batch["label"][keep],
                batch["boxes"][keep],
                batch["valid"][keep],
            )
            rows[name].append(m)
        seen += int(keep.sum())
    out = {}
    for name, parts in rows.items():
        cat = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        suffix = "" if name == "merge" else f"_{name}"
        out[f"test/accuracy{suffix}"] = float(cat["correct"].mean())
        out[f"test/localization_accuracy{suffix}"] = float(cat["localized"].mean())
        out[f"test/mean_iou{suffix}"] = float(cat["iou"][cat["has_box"]].mean())
    out["test/single_num_examples"] = float(seen)
    out["test/single_s_per_image"] = t_total / max(seen, 1)
    figures = []
    if drawn["image"]:
        fig_dir.mkdir(parents=True, exist_ok=True)
        path = detection_grid(
            np.stack(drawn["image"]),
            np.stack(drawn["box"]),
            np.stack(drawn["label"]),
            class_names,
            fig_dir / "single_localization.png",
            pred_scores=np.stack(drawn["score"]),
            gt_boxes=np.stack(drawn["gt"]),
            gt_classes=np.stack(drawn["gt_classes"]),
            pred_class_offset=0,
            score_threshold=0.0,
        )
        figures.append(
            (
                f"Localization on {ov.single_dataset} test scenes: top merged box and class "
                "(solid, accumulated score), ground truth dashed",
                path,
            )
        )
    return out, figures


def _evaluate_multi(config, fc_model, variables, geometry, box_weights, class_names, fig_dir):
    ov = config.overfeat
    keys = ("image", "boxes", "classes", "valid")
    accs = {"merge": DetectionAccumulator(), "nms": DetectionAccumulator()}
    figures = []
    for batch in _pipeline(config, ov.multi_dataset, ov.max_objects, keys).as_numpy_iterator():
        outs = apply_multiscale(
            fc_model, variables, batch["image"], ov.multi_scales, geometry, box_weights
        )
        for method, acc in accs.items():
            det = jax.device_get(detect(outs, **_merge_kwargs(ov, method)))
            acc.add(
                gt_boxes=batch["boxes"],
                gt_classes=batch["classes"],
                gt_valid=batch["valid"],
                det_boxes=det["boxes"],
                det_scores=det["scores"],
                det_classes=det["classes"] + 1,
                det_valid=det["valid"],
                example_valid=batch["example_valid"],
            )
            if method == "merge" and len(figures) < ov.num_figures:
                cand = jax.device_get(window_candidates(outs, float(ov.min_score)))
                for i in range(min(ov.num_figures - len(figures), len(batch["image"]))):
                    scales = [
                        {"scale": o.scale, "probs": np.asarray(o.probs[i]), "windows": o.windows}
                        for o in outs
                    ]
                    path = overfeat_panels(
                        batch["image"][i],
                        scales,
                        {k: v[i] for k, v in cand.items()},
                        {k: v[i] for k, v in det.items()},
                        class_names,
                        fig_dir / f"overfeat_panels_{len(figures)}.png",
                        gt_boxes=batch["boxes"][i],
                        gt_classes=batch["classes"][i],
                    )
                    figures.append(
                        (f"Overfeat panels, {ov.multi_dataset} test scene {len(figures)}", path)
                    )
    results = {
        "test/mAP50": float(accs["merge"].voc(0.5)["mAP"]),
        "test/mAP50_nms": float(accs["nms"].voc(0.5)["mAP"]),
        "test/multi_num_examples": float(len(accs["merge"])),
    }
    return results, figures


def run_overfeat(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, float]:
    """Train the localizer (or reuse it), then evaluate Overfeat; see the module docstring.

    Args:
      config: an Overfeat experiment config: the localizer's training fields (``data``,
        ``model``, ``optimizer``, ``train``, ``localization``) plus ``overfeat``:
        ``localizer_name``, ``localizer_workdir`` (None: ``WORKDIR/localizer``),
        ``single_dataset``, ``single_scales``, ``multi_dataset``, ``multi_scales``,
        ``fine_stride`` (optional, offset max-pooling: windows at half the trunk's stride),
        ``eval_split``, ``batch_size``, ``max_objects``, ``min_score``, ``merge_iou``,
        ``merge_center``, ``nms_iou``, ``max_detections``, ``num_figures``.
      workdir: the run directory (created if missing).

    Returns:
      Flat results, also in ``WORKDIR/results.json``: ``test/accuracy``,
      ``test/localization_accuracy``, ``test/mean_iou`` (top merged box on full-size single
      scenes, with ``_nms`` and ``_best_window`` variants), ``test/mAP50``,
      ``test/mAP50_nms``, and the localizer's own crop metrics as ``localizer/test/...``.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ov = config.overfeat
    loc_config = localizer_config(config)
    loc_dir = Path(ov.localizer_workdir) if ov.localizer_workdir else workdir / "localizer"
    loc_results = train_and_evaluate(loc_config, loc_dir)
    task, state, info, step = restore_run(loc_config, loc_dir)
    variables = {"params": state.params, **(state.model_state or {})}
    window = task.window or tuple(int(s) for s in config.data.image_size)
    fine = bool(ov.get("fine_stride", False))
    fc_model, geometry = fully_convolutional(task.model, window, fine_stride=fine)
    fc_vars = jax.tree.map(jnp.asarray, convert_params(variables, task.model, window))
    box_weights = tuple(task.box_weights)
    results = {f"localizer/{k}": v for k, v in loc_results.items() if k.startswith("test/")}
    results["localizer/step"] = float(step)
    fig_dir = workdir / report_lib.FIGURES_DIR
    names = list(info.class_names)
    single, single_figures = _evaluate_single(
        config, fc_model, fc_vars, geometry, box_weights, names, fig_dir
    )
    results.update(single)
    multi, figures = _evaluate_multi(
        config, fc_model, fc_vars, geometry, box_weights, names, fig_dir
    )
    results.update(multi)
    figures = single_figures + figures
    write_results(workdir, results)
    notes = [
        f"Localizer trained in `{loc_dir}` (step {step}) on {window[0]}x{window[1]} crops of "
        f"`{config.data.name}`; FC heads converted to convolutions (window {window}, stride "
        f"{geometry.stride}{', offset max-pooling' if fine else ''}), nothing retrained.",
        f"`{ov.single_dataset}` scales {tuple(ov.single_scales)}; `{ov.multi_dataset}` scales "
        f"{tuple(ov.multi_scales)}; merging IoU >= {ov.merge_iou}, centre distance <= "
        f"{ov.merge_center} x size; NMS IoU {ov.nms_iou}.",
    ]
    report_lib.write_report(
        workdir,
        title=config.name,
        results=results,
        records=[],
        figures=figures,
        config_text=str(config),
        notes=notes,
    )
    print(
        f"{config.name}: "
        + report_lib.summarize(
            results, ["test/accuracy", "test/localization_accuracy", "test/mAP50", "test/mAP50_nms"]
        )
    )
    return results
