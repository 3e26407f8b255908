"""Transfer learning, measured: pre-train a CNN on one built-in task, train a new head on another.

``run_transfer(config, workdir)``:

1. pre-trains ``config.model`` (a :class:`jaxcv.models.CNN`) on ``config.transfer.source_data``
   (e.g. ``shapes/single`` classification), ``config.train.num_steps`` steps of
   ``config.optimizer``, and measures its accuracy on the source test split;
2. on the target data ``config.data`` (e.g. ``digits`` upsampled to the pre-training input
   size, grey replicated to RGB), for each label fraction and seed, trains a classifier with a
   new head (``fc*`` and ``logits`` freshly initialised) three ways, same optimizer
   (``config.finetune_optimizer``), steps, batch and label subset:

   * ``scratch``: every layer from random initialisation;
   * ``finetune``: the pre-trained conv trunk (``backbone``: params and BatchNorm statistics)
     copied in, every layer trained;
   * ``frozen``: the same trunk kept fixed: ``freeze_backbone=True`` runs it in inference mode
     behind ``stop_gradient`` (no backward pass through it) and ``optimizer.freeze=
     ["^backbone/"]`` gives it no update and no optimizer state;

   plus a timing row, ``frozen_mask_only``: the optax mask alone (zero updates, but gradients
   still computed through the trunk), at the largest label fraction, first seed;
3. reports test accuracy per fraction and mode (mean ± std over seeds), wall time per train
   step (steady state, compilation excluded) and XLA's FLOP count of each mode's compiled train
   step (deterministic, so the saving of the frozen trunk shows whatever the machine load).

Config keys besides the common sections: ``transfer.source_data``, ``transfer.source_split``,
``transfer.source_eval_split``, ``transfer.label_fractions``, ``transfer.seeds``,
``transfer.finetune_steps``; ``finetune_optimizer`` (an optimizer section).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxcv import data as jdata
from jaxcv.models import build_model
from jaxcv.studies.autoencoders import _label_subset, _pm
from jaxcv.studies.engine import fit, load_arrays, markdown_table, predict, write_study_outputs
from jaxcv.tasks.classification import ClassificationTask
from jaxcv.train.optim import make_optimizer
from jaxcv.train.runtime import INIT_KEYS
from jaxcv.train.state import create_train_state
from jaxcv.train.step import make_train_step

__all__ = ["MODES", "run_transfer", "train_step_flops"]

MODES = ("scratch", "finetune", "frozen")
TIMING_ONLY = "frozen_mask_only"
TRUNK = "backbone"


def _rgb(images: np.ndarray) -> np.ndarray:
    """``(N, H, W, 1)`` grey -> ``(N, H, W, 3)``; RGB unchanged."""
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def _classifier(config, num_classes: int, freeze_backbone: bool = False):
    fields = {k: v for k, v in config.model.to_dict().items() if k not in ("name", *INIT_KEYS)}
    fields.update(num_classes=num_classes, freeze_backbone=freeze_backbone)
    return build_model(config.model.name, **fields)


def _accuracy(task, variables, arrays, batch_size) -> float:
    out = predict(task.predict_fn, variables, arrays["image"], batch_size)
    return float(np.mean(out["pred_label"] == arrays["label"]))


def train_step_flops(task, optimizer, arrays, batch_size: int) -> float:
    """XLA's FLOP estimate of one compiled single-device train step of ``task``."""
    batch = {k: v[:batch_size] for k, v in arrays.items()}
    # The schedule's length does not change the step's FLOPs; it only has to outlast warm-up.
    tx = make_optimizer(optimizer, int(optimizer.get("warmup_steps") or 0) + 10)
    state = create_train_state(task, jax.random.PRNGKey(0), batch, tx)
    compiled = jax.jit(make_train_step(task)).lower(state, batch).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost.get("flops", float("nan")))


def _pretrain(config) -> tuple[Any, dict, dict[str, float], Any, dict]:
    """Pre-train the classifier on ``transfer.source_data``.

    Returns ``(FitResult, source train arrays, results, source info, trunk variables)``;
    results hold ``source/test_accuracy``, the trunk ``{collection: variables}`` of ``TRUNK``.
    """
    tr, dc = config.transfer, config.data
    source_config = copy.deepcopy(config)
    with source_config.unlocked():
        source_config.data.name = tr.source_data
    source_info = jdata.get_info(tr.source_data, data_dir=dc.data_dir)
    source_train = load_arrays(source_config, tr.source_split)
    source_test = load_arrays(source_config, tr.source_eval_split)
    source_task = ClassificationTask(_classifier(config, int(source_info.num_classes)))
    pre = fit(
        source_task,
        source_train,
        config.optimizer,
        num_steps=int(config.train.num_steps),
        batch_size=int(dc.batch_size),
        seed=int(config.seed),
        parallel=config.train.parallel,
    )
    accuracy = _accuracy(source_task, pre.variables, source_test, int(dc.eval_batch_size))
    trunk = {col: tree[TRUNK] for col, tree in pre.variables.items() if TRUNK in tree}
    return pre, source_train, {"source/test_accuracy": accuracy}, source_info, trunk


def _setups(config, num_classes: int) -> dict[str, tuple[Any, Any, bool]]:
    """``mode -> (task, optimizer, start from the pre-trained trunk)``, timing row included."""
    frozen_opt = copy.deepcopy(config.finetune_optimizer)
    with frozen_opt.unlocked():
        frozen_opt.freeze = [f"^{TRUNK}/"]
    k, opt = num_classes, config.finetune_optimizer
    return {
        "scratch": (ClassificationTask(_classifier(config, k)), opt, False),
        "finetune": (ClassificationTask(_classifier(config, k)), opt, True),
        "frozen": (ClassificationTask(_classifier(config, k, True)), frozen_opt, True),
        TIMING_ONLY: (ClassificationTask(_classifier(config, k)), frozen_opt, True),
    }


def _train_modes(config, setups, trunk, train, test, num_classes):
    """Every mode on every label fraction and seed (the timing row once).

    Returns ``(accuracies {(mode, pct): [acc per seed]}, wall s/step {mode: [...]}, CPU s/step
    {mode: [...]}, labelled images {pct: n})``.
    """
    tr, batch = config.transfer, int(config.data.batch_size)

    def with_trunk(variables):
        """The pre-trained trunk in, the new head (fresh initialisation) kept."""
        return {
            col: {**tree, **({TRUNK: trunk[col]} if col in trunk else {})}
            for col, tree in variables.items()
        }

    accs: dict[tuple[str, int], list[float]] = {}
    times: dict[str, list[float]] = {m: [] for m in setups}
    cpu_times: dict[str, list[float]] = {m: [] for m in setups}
    sizes = {}
    largest = max(map(float, tr.label_fractions))
    for fraction in tr.label_fractions:
        pct = round(float(fraction) * 100)
        for seed in tr.seeds:
            idx = _label_subset(train["label"], float(fraction), num_classes, int(seed))
            sizes[pct] = len(idx)
            subset = {"image": train["image"][idx], "label": train["label"][idx]}
            timing = float(fraction) == largest and seed == tr.seeds[0]
            for mode in [*MODES, TIMING_ONLY] if timing else MODES:
                task, opt, pretrained = setups[mode]
                res = fit(
                    task,
                    subset,
                    opt,
                    num_steps=int(tr.finetune_steps),
                    batch_size=batch,
                    seed=int(seed),
                    parallel=config.train.parallel,
                    init_variables=with_trunk if pretrained else None,
                )
                acc = _accuracy(task, res.variables, test, int(config.data.eval_batch_size))
                accs.setdefault((mode, pct), []).append(acc)
                times[mode].append(res.step_seconds)
                cpu_times[mode].append(res.step_cpu_seconds)
    return accs, times, cpu_times, sizes


def _tables(results, accs, sizes, flops, modes) -> list[tuple[str, str]]:
    """The report's accuracy table (mean ± std per fraction and mode) and step-cost table."""
    rows = [(f"{pct}%", sizes[pct], *(_pm(accs[(m, pct)]) for m in MODES)) for pct in sorted(sizes)]
    accuracy_table = markdown_table(
        (
            "labels",
            "labelled images",
            "from scratch",
            "pre-trained, fine-tuned",
            "pre-trained, conv frozen",
        ),
        rows,
    )

    def ratio(key: str, mode: str) -> str:
        value = results[f"time/{mode}_{key}"]
        return f"{value:.1f} ({value / results[f'time/finetune_{key}']:.2f}x)"

    timing_rows = [
        (
            mode,
            ratio("ms_per_step", mode),
            ratio("cpu_ms_per_step", mode),
            f"{flops[mode] / 1e9:.3f} ({flops[mode] / flops['finetune']:.2f}x)",
        )
        for mode in modes
    ]
    timing_table = markdown_table(
        ("mode", "wall ms / step", "CPU ms / step", "GFLOPs / step (XLA)"), timing_rows
    )
    return [("Test accuracy vs labels", accuracy_table), ("Train step cost", timing_table)]


def _notes(config, pre, source_train, source_info, results, accs, test, k) -> list[str]:
    tr, dc = config.transfer, config.data
    batch = int(dc.batch_size)
    mask_only_acc = float(np.mean(next(v for (m, _), v in accs.items() if m == TIMING_ONLY)))
    return [
        f"Pre-training: `{config.model.name}` {tuple(config.model.channels)} on "
        f"{tr.source_data} {tr.source_split} ({len(source_train['label'])} images, "
        f"{source_info.num_classes} classes) at {dc.image_size}, {config.train.num_steps} steps "
        f"of batch {batch} ({pre.seconds:.0f} s); {tr.source_data} {tr.source_eval_split} "
        f"accuracy {results['source/test_accuracy']:.4f}.",
        f"Target: {dc.name} resized to {dc.image_size}, grey replicated to RGB; "
        f"{tr.finetune_steps} steps of batch {batch} per classifier on a class-stratified "
        f"label subset (one per seed); new head {tuple(config.model.hidden_units)} -> {k}.",
        f"Accuracy on the {len(test['label'])} {dc.eval_split} images: mean ± std over seeds "
        f"{tuple(tr.seeds)}. Time per step: mean over all runs of a mode of the steady-state "
        "wall and process CPU time per train step (first step, i.e. compilation, excluded; "
        "batch slicing from host arrays included), ratios to fine-tuning in brackets; on a "
        "machine shared with other jobs the CPU time is the steadier figure. "
        "frozen_mask_only is the optax mask alone (BatchNorm in training mode, gradients "
        "computed through the trunk and discarded), trained once at "
        f"the largest label fraction: test accuracy {mask_only_acc:.4f}.",
    ]


def run_transfer(config: ml_collections.ConfigDict, workdir) -> dict[str, float]:
    """Run the study (see the module docstring) in ``workdir``; returns the flat results.

    Results: ``source/test_accuracy``; ``test/accuracy_{mode}_{p}pct`` and ``..._std`` for each
    mode and label fraction ``p`` (percent); ``time/{mode}_ms_per_step``;
    ``flops/{mode}_gflops_per_step``.
    """
    wall = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    dc = config.data
    pre, source_train, results, source_info, trunk = _pretrain(config)
    k = int(jdata.get_info(dc.name, data_dir=dc.data_dir).num_classes)
    train = load_arrays(config, dc.train_split)
    test = load_arrays(config, dc.eval_split)
    train["image"], test["image"] = _rgb(train["image"]), _rgb(test["image"])
    setups = _setups(config, k)
    accs, times, cpu_times, sizes = _train_modes(config, setups, trunk, train, test, k)
    for (mode, pct), values in accs.items():
        if mode == TIMING_ONLY:
            results[f"test/accuracy_{mode}"] = float(np.mean(values))
            continue
        results[f"test/accuracy_{mode}_{pct}pct"] = float(np.mean(values))
        results[f"test/accuracy_{mode}_{pct}pct_std"] = float(np.std(values))
    batch = int(dc.batch_size)
    flops = {m: train_step_flops(t, o, train, batch) for m, (t, o, _) in setups.items()}
    for mode in setups:
        results[f"time/{mode}_ms_per_step"] = 1e3 * float(np.nanmean(times[mode]))
        results[f"time/{mode}_cpu_ms_per_step"] = 1e3 * float(np.nanmean(cpu_times[mode]))
        results[f"flops/{mode}_gflops_per_step"] = flops[mode] / 1e9
    sections = _tables(results, accs, sizes, flops, setups)
    notes = _notes(config, pre, source_train, source_info, results, accs, test, k)
    write_study_outputs(workdir, config, results, sections, notes=notes, wall_start=wall)
    return results
