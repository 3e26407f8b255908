"""The training loop: ``train_and_evaluate(config, workdir)``, the one function a run calls.

It joins the parts: the tf.data pipelines (:mod:`jaxcv.data`), the model (:mod:`jaxcv.models`),
the task (:mod:`jaxcv.tasks`), the optimizer, state, step, data-parallel wrapper and
checkpointer (:mod:`jaxcv.train`), and writes the run outputs (README: "Using it") into ``workdir``:

    checkpoints/        orbax checkpoints (last K, best by ``train.best_metric``), resumable
    metrics.jsonl       ``train/*`` every ``log_every`` steps, ``<eval split>/*`` every eval
    tensorboard/        the same scalars as TensorBoard events
    report.md           curves, task figures, final table, config (PNGs under figures/)
    results.json        the final evaluation, flat names (``test/accuracy``, ...), plus
                        ``train/steps``, ``train/images_per_s``, ``peak_rss_mb``
    profile/            with ``profile=True``: a jax profiler trace of a few steps after
                        warm-up (:mod:`jaxcv.train.profiling`), for TensorBoard

The jitted step is compiled once and runs asynchronously: metrics stay on device and are
fetched every ``log_every`` steps (and before every evaluation or checkpoint), where non-finite
losses are detected. A non-finite loss stops the run with :class:`NonFiniteLossError` naming
the step, without saving the bad state (``train.on_nonfinite="skip"`` skips such updates
instead). SIGTERM or Ctrl-C saves a checkpoint and returns cleanly; rerunning resumes.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxcv import data as jdata
from jaxcv.data.pipeline import numpy_batches
from jaxcv.proposals.pipeline import proposal_table
from jaxcv.recipes import recipe_for
from jaxcv.train import report as report_lib
from jaxcv.train.checkpoint import Checkpointer
from jaxcv.train.init_from import init_state_from
from jaxcv.train.logging import MetricsWriter, ProgressBar, peak_rss_mb, read_metrics
from jaxcv.train.optim import make_optimizer
from jaxcv.train.parallel import Parallel
from jaxcv.train.profiling import StepProfiler
from jaxcv.train.runtime import (
    Interruption,
    NonFiniteLossError,
    batch_keys,
    build_task,
    enable_compilation_cache,
    evaluate,
    headline_keys,
    make_eval_pipeline,
    make_model,
    run_metadata,
    sample_batch_from_spec,
)
from jaxcv.train.state import create_train_state
from jaxcv.train.step import make_eval_step, make_train_step

__all__ = ["NonFiniteLossError", "train_and_evaluate", "write_outputs"]

RESULTS_FILE = "results.json"
CHECKPOINT_DIR = "checkpoints"


def _check_train_config(config: ml_collections.ConfigDict, multiple: int) -> None:
    t = config.train
    for key in ("num_steps", "log_every", "eval_every", "checkpoint_every"):
        if int(t[key]) < 1:
            raise ValueError(f"config.train.{key} must be >= 1; got {t[key]}")
    split = config.data.eval_split
    if t.best_metric and not str(t.best_metric).startswith(f"{split}/"):
        raise ValueError(
            f"config.train.best_metric={t.best_metric!r} is not a metric of the evaluated split "
            f"{split!r}; use e.g. '{split}/accuracy' (or set data.eval_split)"
        )
    for key in ("batch_size", "eval_batch_size"):
        size = int(config.data[key])
        if size < 1 or size % multiple:
            raise ValueError(
                f"config.data.{key}={size} must be a positive multiple of {multiple} (the "
                f"number of devices in train.parallel={t.parallel!r} across processes)"
            )


def _mean_metrics(fetched: list[dict[str, np.ndarray]]) -> dict[str, float]:
    keys = fetched[0].keys()
    return {k: float(np.mean([np.asarray(m[k], np.float64) for m in fetched])) for k in keys}


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
    (workdir / results_file).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, float]:
    """Train ``config`` in ``workdir`` (resuming from its latest checkpoint) and evaluate.

    Args:
      config: an experiment config (see ``experiments/``): ``name``, ``seed``, ``task``,
        ``data``, ``model``, ``optimizer``, ``train``.
      workdir: the run directory (created if missing).

    Returns:
      The final flat results, also written to ``results.json``: ``<eval split>/<metric>``
      (e.g. ``test/accuracy``, ``test/loss``), ``train/steps``, ``train/images_per_s``,
      ``train/loss``, ``train/wall_s``, ``train/compile_s``, ``peak_rss_mb``; after an
      interruption (SIGTERM/Ctrl-C) ``train/interrupted = 1`` and no final evaluation.

    Raises:
      NonFiniteLossError: the loss became NaN/inf (``train.on_nonfinite="stop"``).
      jaxcv.train.CheckpointMismatchError: ``workdir`` holds another experiment's checkpoints.
    """
    wall_start = time.perf_counter()
    config = copy.deepcopy(config)  # num_classes gets filled in; the caller's config is kept
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # Process 0 writes the run outputs; the other processes of a multi-process run write
    # theirs under process_<i>/ (the checkpoints are shared).
    index = jax.process_index()
    out_dir = workdir if index == 0 else workdir / f"process_{index}"
    enable_compilation_cache()
    tc, dc = config.train, config.data

    info = jdata.get_info(dc.name, data_dir=dc.data_dir)
    model = make_model(config, info)
    task = build_task(config, model)
    parallel = Parallel(mode=tc.parallel)
    process_count = jax.process_count()
    _check_train_config(config, parallel.global_batch_size_multiple)
    train_ds = jdata.make_pipeline(
        dc.name,
        dc.train_split,
        dc.batch_size // process_count,
        train=True,
        seed=config.seed,
        image_size=dc.image_size,
        augment=dc.augment,
        max_objects=dc.max_objects,
        data_dir=dc.data_dir,
        process_index=jax.process_index(),
        process_count=process_count,
        keys=batch_keys(config),
        proposals=proposal_table(config, dc.train_split, train=True),
    )
    eval_ds = make_eval_pipeline(config)

    tx = make_optimizer(config.optimizer, tc.num_steps)
    sample = sample_batch_from_spec(train_ds.element_spec, dc.batch_size // process_count)
    state = create_train_state(task, jax.random.PRNGKey(config.seed), sample, tx)
    checkpointer = Checkpointer(
        workdir / CHECKPOINT_DIR,
        keep=tc.keep_checkpoints,
        best_metric=tc.best_metric,
        best_mode=tc.best_mode,
        metadata=run_metadata(config),
    )
    restored = checkpointer.restore_latest(state)
    start_step = 0
    if restored is not None:
        state = restored
        start_step = int(jax.device_get(state.step))
        print(f"Resuming {config.name} from step {start_step} ({workdir / CHECKPOINT_DIR})")
    elif config.model.get("init_from"):
        try:
            state = init_state_from(
                state,
                config.model.init_from,
                num_classes=config.model.get("num_classes"),
                fresh=tuple(config.model.get("init_fresh") or ()),
            )
        except Exception:
            checkpointer.close()
            raise
    # The data stream resumes where the interrupted run stopped (same seed, same order).
    train_iter = numpy_batches(
        train_ds.skip(start_step) if start_step else train_ds,
        f"dataset {dc.name!r}, split {dc.train_split!r}",
    )

    p_train = parallel.compile_train_step(
        make_train_step(task, axis_name=parallel.axis_name, on_nonfinite=tc.on_nonfinite)
    )
    p_eval = parallel.compile_eval_step(make_eval_step(task))
    state = parallel.put_state(state)
    writer = MetricsWriter(out_dir)
    if start_step == 0:
        writer.write_text(0, "config", f"```\n{config}\n```")

    num_steps, batch = int(tc.num_steps), int(dc.batch_size)
    progress = ProgressBar(num_steps, start_step)
    profiler = StepProfiler.for_run(config, workdir, start_step, num_steps)
    pending: list[dict[str, Any]] = []
    window_start_step, window_t0 = start_step, time.perf_counter()
    train_time, trained_steps, compile_s, last_train = 0.0, 0, 0.0, {}
    nonfinite_skipped = 0
    evaluation = None
    step = start_step

    def flush_metrics(current: int, *, timed: bool = True) -> None:
        """Fetch pending step metrics (one host sync), check them, log their means.

        ``timed=False`` leaves the window out of the throughput (the compiling first step).
        """
        nonlocal pending, window_start_step, window_t0, train_time, trained_steps
        nonlocal last_train, nonfinite_skipped
        if not pending:
            return
        fetched = [parallel.get_metrics(m) for m in pending]
        elapsed = time.perf_counter() - window_t0
        losses = np.array([float(m["loss"]) for m in fetched])
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size and tc.on_nonfinite == "stop":
            bad_step = window_start_step + int(bad[0]) + 1
            latest = checkpointer.latest_step()
            kept = (
                f"the last good checkpoint is step {latest} in {workdir / CHECKPOINT_DIR}"
                if latest is not None
                else "no checkpoint was saved before it"
            )
            raise NonFiniteLossError(
                f"non-finite loss ({losses[bad[0]]}) at step {bad_step} (training batch "
                f"#{bad_step - 1} of the seed-{config.seed} stream); stopped without saving: "
                f"{kept}. Lower optimizer.learning_rate, set optimizer.grad_clip_norm, or "
                f"set train.on_nonfinite='skip'; if it happens at once, check the data (a "
                f"class label outside 0..K-1 gives a NaN loss).",
                step=bad_step,
            )
        n = len(fetched)
        means = _mean_metrics(fetched)
        nonfinite_skipped += round(means.get("nonfinite", 0.0) * n)
        if timed:
            train_time += elapsed
            trained_steps += n
            means["images_per_s"] = n * batch / max(elapsed, 1e-9)
        last_train = means
        writer.write(current, {f"train/{k}": v for k, v in means.items()})
        progress.set_metrics(means["loss"], means.get("images_per_s", 0.0))
        pending, window_start_step = [], current
        window_t0 = time.perf_counter()

    def run_eval(current: int):
        nonlocal evaluation, window_t0
        evaluation = evaluate(task, p_eval, parallel, state, eval_ds, split=dc.eval_split)
        prefixed = {f"{dc.eval_split}/{k}": v for k, v in evaluation.metrics.items()}
        writer.write(current, prefixed)
        progress.write(f"step {current}: " + report_lib.summarize(prefixed, headline_keys(config)))
        window_t0 = time.perf_counter()
        return prefixed

    def save(current: int, metrics: dict[str, float] | None, force: bool = False) -> None:
        nonlocal window_t0
        checkpointer.save(current, parallel.get_state(state), metrics=metrics, force=force)
        window_t0 = time.perf_counter()

    interrupted = False
    eval_metrics: dict[str, float] | None = None
    try:
        with Interruption() as interruption:
            for step in range(start_step + 1, num_steps + 1):
                profiler.before(step, state)
                state, metrics = p_train(state, parallel.put_batch(next(train_iter)))
                profiler.after(step, (state, metrics))
                pending.append(metrics)
                if step == start_step + 1:
                    # One sync after the first step: its time is mostly compilation.
                    first_t0 = window_t0
                    flush_metrics(step, timed=False)
                    compile_s = time.perf_counter() - first_t0
                progress.update()
                do_eval = step % tc.eval_every == 0 or step == num_steps
                do_save = step % tc.checkpoint_every == 0 or step == num_steps
                if do_eval or do_save or step % tc.log_every == 0 or interruption.requested:
                    flush_metrics(step)
                eval_metrics = run_eval(step) if do_eval else None
                if do_save:
                    save(step, eval_metrics, force=step == num_steps)
                if interruption.requested and step < num_steps:
                    if not do_save:
                        save(step, None, force=True)
                    interrupted = True
                    progress.write(
                        f"Interrupted ({interruption.signal_name}) at step {step}: checkpoint "
                        f"saved in {workdir / CHECKPOINT_DIR}; run the same command to resume."
                    )
                    break
        if start_step >= num_steps:
            # Already trained: evaluate the restored state for the results.
            eval_metrics = run_eval(num_steps)
            step = num_steps
    finally:
        profiler.close()
        progress.close()
        checkpointer.wait()
        checkpointer.close()
        writer.close()

    results: dict[str, float] = {}
    if not interrupted and eval_metrics is not None:
        results.update(eval_metrics)
    results.update(
        {
            "train/steps": float(step),
            "train/images_per_s": trained_steps * batch / train_time if train_time > 0 else 0.0,
            "train/compile_s": compile_s,
            "train/wall_s": time.perf_counter() - wall_start,
            "peak_rss_mb": peak_rss_mb(),
        }
    )
    if "loss" in last_train:
        results["train/loss"] = last_train["loss"]
    if tc.on_nonfinite == "skip":
        results["train/nonfinite_skipped"] = float(nonfinite_skipped)
    if interrupted:
        results["train/interrupted"] = 1.0
    notes = [
        f"Trained {step} of {num_steps} steps"
        + (f" (resumed from step {start_step})" if start_step else "")
        + f"; wall time this session {results['train/wall_s']:.1f} s.",
    ]
    if interrupted:
        notes.append("Interrupted before the end: no final evaluation; rerun to resume.")
    if profiler.written is not None:
        notes.append(
            f"Profiler trace of steps {profiler.first}-{profiler.last} in `{profiler.written}` "
            f"(`tensorboard --logdir {profiler.written}`)."
        )
    best = checkpointer.best_step() if hasattr(checkpointer, "best_step") else None
    if best is not None and tc.best_metric:
        notes.append(f"Best checkpoint by `{tc.best_metric}`: step {best}.")
    report = write_outputs(
        out_dir,
        config,
        results,
        None if interrupted else evaluation,
        list(info.class_names),
        notes=notes,
    )
    summary = report_lib.summarize(results, headline_keys(config))
    print(f"{config.name}: {summary}".rstrip())
    print(f"Report: {report.resolve()}")
    return {k: float(v) for k, v in results.items() if not isinstance(v, str)}
