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
    config_changes.jsonl  config changes accepted on resume (:mod:`jaxcv.train.config_drift`)
    .jaxcv.lock         held while the run writes, so a second run is refused at once
                        (:mod:`jaxcv.workdir_lock`)

The jitted step is compiled once and runs asynchronously: metrics stay on device and are
fetched every ``log_every`` steps (and before every evaluation or checkpoint), where non-finite
losses are detected (:mod:`jaxcv.train.step_loop`). A non-finite loss stops the run with
:class:`NonFiniteLossError` naming the step, without saving the bad state
(``train.on_nonfinite="skip"`` skips such updates instead, leaves their losses out of the
logged means and counts them in the progress line, the final line and the report). SIGTERM or
Ctrl-C saves a checkpoint and returns cleanly; rerunning resumes, with the same config (or
changes that are safe on resume). A checkpoint or metric that cannot be written (a full disk)
stops the run with one :class:`jaxcv.errors.WriteError` line; the steps saved before are
intact and the finished metrics go to ``results.json`` when the disk still takes it.

The parts, in order: :func:`build_run` (data, model, task, state, restore or ``init_from``),
:class:`StepLoop` (steps, evaluation, checkpoints, interruption), :func:`final_results` and
:func:`run_notes` (``results.json`` and the report's notes).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections

from jaxcv import data as jdata
from jaxcv.data.pipeline import numpy_batches
from jaxcv.errors import CheckpointWriteError, WriteError
from jaxcv.proposals.pipeline import proposal_table
from jaxcv.train import config_drift
from jaxcv.train import report as report_lib
from jaxcv.train.checkpoint import Checkpointer
from jaxcv.train.init_from import init_state_from
from jaxcv.train.logging import MetricsWriter, ProgressBar, peak_rss_mb
from jaxcv.train.optim import make_optimizer
from jaxcv.train.outputs import RESULTS_FILE, write_outputs, write_results
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
    reported_split,
    run_metadata,
    sample_batch_from_spec,
    workdir_lock,
)
from jaxcv.train.state import create_train_state
from jaxcv.train.step import make_eval_step, make_train_step
from jaxcv.train.step_loop import MetricsWindow, StepRunner, nonfinite_location

__all__ = [
    "CHECKPOINT_DIR",
    "RESULTS_FILE",
    "NonFiniteLossError",
    "Run",
    "StepLoop",
    "build_run",
    "final_results",
    "run_notes",
    "train_and_evaluate",
    "write_outputs",
]

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
    test_split = config.data.get("test_split")
    if test_split and (test_split == split or str(t.best_metric).startswith(f"{test_split}/")):
        raise ValueError(
            f"config.data.test_split={test_split!r} is evaluated once, with the checkpoint "
            f"selected on data.eval_split={split!r}: it must differ from the split that "
            "selects (eval_split, train.best_metric)"
        )
    for key in ("batch_size", "eval_batch_size"):
        size = int(config.data[key])
        if size < 1 or size % multiple:
            raise ValueError(
                f"config.data.{key}={size} must be a positive multiple of {multiple} (the "
                f"number of devices in train.parallel={t.parallel!r} across processes)"
            )


def _check_best_metric(config: ml_collections.ConfigDict, task) -> None:
    """``train.best_metric`` must be a metric the task's evaluator reports: a typo would
    otherwise train without ever keeping a best checkpoint. A fresh evaluator's ``result()``
    names every metric it reports (NaN before any update: ``jaxcv.tasks.base.Evaluator``)."""
    metric = config.train.get("best_metric")
    if not metric:
        return
    split = config.data.eval_split
    produced = sorted(f"{split}/{name}" for name in task.make_evaluator().result())
    if metric not in produced:
        raise ValueError(
            f"config.train.best_metric={metric!r} is not a metric the {config.task} evaluator "
            f"reports on data.eval_split={split!r}; it reports: {', '.join(produced)}"
        )


@dataclasses.dataclass
class Run:
    """What a run trains and evaluates with, built by :func:`build_run`.

    ``state`` is the host train state (restored, or initialised and optionally ``init_from``
    a checkpoint); ``start_step`` its step (0 for a fresh run); ``train_iter`` yields the
    host training batches from step ``start_step + 1`` on; ``config_changes`` the config keys
    that differ from the resumed checkpoint's (:mod:`jaxcv.train.config_drift`).
    """

    config: ml_collections.ConfigDict
    workdir: Path
    out_dir: Path
    info: Any
    task: Any
    parallel: Parallel
    train_iter: Any
    eval_ds: Any
    state: Any
    start_step: int
    checkpointer: Checkpointer
    config_changes: list = dataclasses.field(default_factory=list)


def _train_pipeline(config: ml_collections.ConfigDict):
    dc, process_count = config.data, jax.process_count()
    return jdata.make_pipeline(
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


def _checkpointer(config: ml_collections.ConfigDict, workdir: Path) -> Checkpointer:
    """The run's checkpointer; its identity is the experiment name only, since the configs are
    compared key by key (:func:`_check_config_drift`)."""
    tc = config.train
    return Checkpointer(
        workdir / CHECKPOINT_DIR,
        keep=tc.keep_checkpoints,
        best_metric=tc.best_metric,
        best_mode=tc.best_mode,
        metadata=run_metadata(config),
        identity_keys=("name",),
    )


def _check_config_drift(config, checkpointer: Checkpointer, allow: bool) -> list:
    """The config changes since the newest checkpoint (see :mod:`jaxcv.train.config_drift`);
    raises for changes that are not safe on resume unless ``allow``."""
    return config_drift.check_resume(
        checkpointer.newest_metadata(),
        checkpointer.metadata,
        checkpointer.directory,
        allow=allow,
    )


def _restore_or_init_from(config, workdir: Path, state, checkpointer) -> tuple[Any, int]:
    """The latest checkpoint of ``workdir`` with its step, else ``state`` (``init_from``
    applied when the config names one) at step 0."""
    restored = checkpointer.restore_latest(state)
    if restored is not None:
        start_step = int(jax.device_get(restored.step))
        print(f"Resuming {config.name} from step {start_step} ({workdir / CHECKPOINT_DIR})")
        return restored, start_step
    if config.model.get("init_from"):
        state = init_state_from(
            state,
            config.model.init_from,
            num_classes=config.model.get("num_classes"),
            fresh=tuple(config.model.get("init_fresh") or ()),
            drop=tuple(config.model.get("init_drop") or ()),
        )
    return state, 0


def _report_config_changes(run: Run) -> None:
    """Print the config changes a resumed run accepted, and record them in the workdir."""
    if not (run.start_step and run.config_changes):
        return
    print(
        f"Config changes since step {run.start_step}: "
        + config_drift.describe_changes(run.config_changes)
    )
    if jax.process_index() == 0:
        config_drift.record_changes(run.out_dir, run.start_step, run.config_changes)


def build_run(
    config: ml_collections.ConfigDict, workdir: Path, *, allow_config_change: bool = False
) -> Run:
    """Data, model, task and train state of ``config`` in ``workdir``, resumed if it can be.

    What can be checked without data is checked first: the config, the metric that selects
    the best checkpoint, the workdir's checkpoints (another experiment's, or a changed config:
    :mod:`jaxcv.train.config_drift`, ``allow_config_change`` accepts the change). ``config`` is
    completed in place (``model.num_classes`` from the dataset); pass a copy.
    """
    # Process 0 writes the run outputs; the other processes of a multi-process run write
    # theirs under process_<i>/ (the checkpoints are shared).
    index = jax.process_index()
    out_dir = workdir if index == 0 else workdir / f"process_{index}"
    dc = config.data
    info = jdata.get_info(dc.name, data_dir=dc.data_dir)
    model = make_model(config, info)
    task = build_task(config, model)
    parallel = Parallel(mode=config.train.parallel)
    _check_train_config(config, parallel.global_batch_size_multiple)
    _check_best_metric(config, task)
    checkpointer = _checkpointer(config, workdir)
    try:
        changes = _check_config_drift(config, checkpointer, allow_config_change)
        train_ds = _train_pipeline(config)
        eval_ds = make_eval_pipeline(config)
        tx = make_optimizer(config.optimizer, config.train.num_steps)
        sample = sample_batch_from_spec(train_ds.element_spec, dc.batch_size // jax.process_count())
        state = create_train_state(task, jax.random.PRNGKey(config.seed), sample, tx)
        state, start_step = _restore_or_init_from(config, workdir, state, checkpointer)
    except BaseException:
        checkpointer.close()
        raise
    # The data stream resumes where the interrupted run stopped (same seed, same order).
    train_iter = numpy_batches(
        train_ds.skip(start_step) if start_step else train_ds,
        f"dataset {dc.name!r}, split {dc.train_split!r}",
    )
    run = Run(
        config=config,
        workdir=workdir,
        out_dir=out_dir,
        info=info,
        task=task,
        parallel=parallel,
        train_iter=train_iter,
        eval_ds=eval_ds,
        state=state,
        start_step=start_step,
        checkpointer=checkpointer,
        config_changes=changes,
    )
    _report_config_changes(run)
    return run


class StepLoop:
    """Trains a :class:`Run` from its ``start_step`` to ``train.num_steps``: logs the step
    metrics every ``log_every`` steps, evaluates every ``eval_every`` steps, saves every
    ``checkpoint_every`` steps, and on SIGTERM/Ctrl-C saves and stops.

    After :meth:`train`: ``step`` (the last step run), ``eval_metrics`` (``{split/name: value}``
    of the last evaluation, when it was at that step), ``evaluation`` (its
    :class:`jaxcv.train.runtime.Evaluation`), ``interrupted``; ``window`` holds the step
    timing and ``runner.compile_s`` the first step's time.
    """

    def __init__(self, run: Run, writer: MetricsWriter, progress: ProgressBar, profiler):
        config, tc = run.config, run.config.train
        self.run, self.writer, self.progress, self.profiler = run, writer, progress, profiler
        parallel = run.parallel
        self.p_eval = parallel.compile_eval_step(make_eval_step(run.task))
        p_train = parallel.compile_train_step(
            make_train_step(run.task, axis_name=parallel.axis_name, on_nonfinite=tc.on_nonfinite)
        )
        self.state = parallel.put_state(run.state)
        self.window = MetricsWindow(
            parallel.get_metrics,
            int(config.data.batch_size),
            run.start_step,
            describe_nonfinite=self._nonfinite_message,
            stop_on_nonfinite=tc.on_nonfinite == "stop",
            log=self._log_train,
        )
        self.runner = StepRunner(
            p_train,
            parallel,
            run.train_iter,
            self.window,
            first_step=run.start_step + 1,
            profiler=profiler,
        )
        self.step, self.interrupted = run.start_step, False
        self.evaluation, self.eval_metrics = None, None
        self.test_metrics, self.tested_step = None, None

    def _nonfinite_message(self, loss: float, step: int) -> str:
        latest = self.run.checkpointer.latest_step()
        kept = (
            f"the last good checkpoint is step {latest} in {self.run.workdir / CHECKPOINT_DIR}"
            if latest is not None
            else "no checkpoint was saved before it"
        )
        return (
            f"{nonfinite_location(loss, step, self.run.config.seed)}; stopped without saving: "
            f"{kept}. Lower optimizer.learning_rate, set optimizer.grad_clip_norm, or "
            f"set train.on_nonfinite='skip'; if it happens at once, check the data (a "
            f"class label outside 0..K-1 gives a NaN loss)."
        )

    def _log_train(self, step: int, means: dict[str, float]) -> None:
        self.writer.write(step, {f"train/{k}": v for k, v in means.items()})
        self.progress.set_metrics(
            means["loss"], means.get("images_per_s", 0.0), self.window.nonfinite_skipped
        )

    def evaluate(self, step: int) -> dict[str, float]:
        """Evaluate the current state on ``data.eval_split``; log and return the metrics."""
        prefixed = self._evaluate(
            self.state, self.run.eval_ds, self.run.config.data.eval_split, step, f"step {step}"
        )
        self.window.restart_clock()
        return prefixed

    def _evaluate(self, state, dataset, split: str, step: int, label: str) -> dict[str, float]:
        """One pass of ``state`` over ``dataset``: ``{split/metric}``, logged at ``step`` and
        printed after ``label``; ``self.evaluation`` keeps the pass (for the report)."""
        run = self.run
        self.evaluation = evaluate(run.task, self.p_eval, run.parallel, state, dataset, split=split)
        prefixed = {f"{split}/{k}": v for k, v in self.evaluation.metrics.items()}
        self.writer.write(step, prefixed)
        summary = report_lib.summarize(prefixed, headline_keys(run.config, split))
        self.progress.write(f"{label}: {summary}")
        return prefixed

    def save(self, step: int, metrics: dict[str, float] | None, force: bool = False) -> None:
        """Checkpoint the current state at ``step`` (``metrics`` rank it for the best one)."""
        state = self.run.parallel.get_state(self.state)
        self.run.checkpointer.save(step, state, metrics=metrics, force=force)
        self.window.restart_clock()

    def train(self) -> None:
        """Run the remaining steps (or, when there are none, evaluate the restored state)."""
        tc = self.run.config.train
        num_steps = int(tc.num_steps)
        with Interruption() as interruption:
            for step in range(self.run.start_step + 1, num_steps + 1):
                self.state = self.runner.run(self.state, step)
                self.step = step
                self.progress.update()
                do_eval = step % tc.eval_every == 0 or step == num_steps
                do_save = step % tc.checkpoint_every == 0 or step == num_steps
                if do_eval or do_save or step % tc.log_every == 0 or interruption.requested:
                    self.window.flush(step)
                self.eval_metrics = self.evaluate(step) if do_eval else None
                if do_save:
                    self.save(step, self.eval_metrics, force=step == num_steps)
                if interruption.requested and step < num_steps:
                    self._stop(step, interruption.signal_name, saved=do_save)
                    break
        if self.run.start_step >= num_steps:
            # Already trained: evaluate the restored state for the results.
            self.eval_metrics = self.evaluate(num_steps)
            self.step = num_steps

    def test(self) -> None:
        """Evaluate ``data.test_split`` once, with the checkpoint selected on the validation
        split: the best by ``train.best_metric`` when it is tracked, else the final state.
        Nothing after an interruption, or without a ``test_split``."""
        run = self.run
        split = run.config.data.get("test_split")
        if not split or self.interrupted:
            return
        state, best = self.state, None
        if run.config.train.best_metric:
            run.checkpointer.wait()
            best = run.checkpointer.best_step()
        if best is not None and best != self.step:
            host = run.checkpointer.restore(best, run.parallel.get_state(self.state))
            state = run.parallel.put_state(host)
        self.tested_step = self.step if best is None else best
        self.test_metrics = self._evaluate(
            state,
            make_eval_pipeline(run.config, split),
            split,
            self.step,
            f"{split} (checkpoint of step {self.tested_step})",
        )

    def _stop(self, step: int, signal_name: str, *, saved: bool) -> None:
        if not saved:
            self.save(step, None, force=True)
        self.interrupted = True
        self.progress.write(
            f"Interrupted ({signal_name}) at step {step}: checkpoint saved in "
            f"{self.run.workdir / CHECKPOINT_DIR}; run the same command to resume."
        )


def final_results(loop: StepLoop, wall_start: float) -> dict[str, float]:
    """The run's flat results: the final evaluation (none after an interruption), then
    ``train/steps``, ``train/images_per_s``, ``train/compile_s``, ``train/wall_s``,
    ``peak_rss_mb``, ``train/loss``, and ``train/nonfinite_skipped`` / ``train/interrupted``
    when they apply."""
    results: dict[str, float] = {}
    if not loop.interrupted and loop.eval_metrics is not None:
        results.update(loop.eval_metrics)
    if loop.test_metrics is not None:
        results.update(loop.test_metrics)
        results["train/selected_step"] = float(loop.tested_step)
    results.update(
        {
            "train/steps": float(loop.step),
            "train/images_per_s": loop.window.images_per_s,
            "train/compile_s": loop.runner.compile_s,
            "train/wall_s": time.perf_counter() - wall_start,
            "peak_rss_mb": peak_rss_mb(),
        }
    )
    if "loss" in loop.window.last:
        results["train/loss"] = loop.window.last["loss"]
    if loop.run.config.train.on_nonfinite == "skip":
        results["train/nonfinite_skipped"] = float(loop.window.nonfinite_skipped)
    if loop.interrupted:
        results["train/interrupted"] = 1.0
    return results


def _skipped_steps(results: dict[str, float]) -> str:
    """``"N steps skipped ..."`` when updates were skipped this session, else ``""``."""
    n = int(results.get("train/nonfinite_skipped", 0))
    if not n:
        return ""
    return f"{n} step{'s' * (n > 1)} skipped for a non-finite loss or gradient"


def run_notes(loop: StepLoop, results: dict[str, float], profiler: StepProfiler) -> list[str]:
    """The lines under the report heading: steps trained, resume, skipped updates, profile,
    best checkpoint, config changes."""
    run, tc = loop.run, loop.run.config.train
    notes = [
        f"Trained {loop.step} of {int(tc.num_steps)} steps"
        + (f" (resumed from step {run.start_step})" if run.start_step else "")
        + f"; wall time this session {results['train/wall_s']:.1f} s.",
    ]
    if _skipped_steps(results):
        notes.append(
            f"{_skipped_steps(results).capitalize()} (`train.on_nonfinite='skip'`): their "
            "updates were not applied, and their losses are left out of the logged means."
        )
    if loop.interrupted:
        notes.append("Interrupted before the end: no final evaluation; rerun to resume.")
    if profiler.written is not None:
        notes.append(
            f"Profiler trace of steps {profiler.first}-{profiler.last} in `{profiler.written}` "
            f"(`tensorboard --logdir {profiler.written}`)."
        )
    checkpointer = run.checkpointer
    best = checkpointer.best_step() if hasattr(checkpointer, "best_step") else None
    if best is not None and tc.best_metric:
        notes.append(f"Best checkpoint by `{tc.best_metric}`: step {best}.")
    if loop.test_metrics is not None:
        notes.append(
            f"`{run.config.data.test_split}` evaluated once, with the checkpoint of step "
            f"{loop.tested_step} (selected on `{run.config.data.eval_split}`)."
        )
    if run.start_step and run.config_changes:
        notes.append(
            f"Config changed when resuming at step {run.start_step}: "
            f"{config_drift.describe_changes(run.config_changes)} (`{config_drift.CHANGES_FILE}`)."
        )
    return notes


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    allow_config_change: bool = False,
) -> dict[str, float]:
    """Train ``config`` in ``workdir`` (resuming from its latest checkpoint) and evaluate.

    The workdir is locked for the whole run (:mod:`jaxcv.workdir_lock`): a second run on
    it is refused at once.

    Args:
      config: an experiment config (see ``experiments/``): ``name``, ``seed``, ``task``,
        ``data``, ``model``, ``optimizer``, ``train``.
      workdir: the run directory (created if missing).
      allow_config_change: resume even though keys that are not safe to change on resume
        differ from the checkpoints' config (recorded in ``config_changes.jsonl``).

    Returns:
      The final flat results, also written to ``results.json``: ``<eval split>/<metric>``
      (e.g. ``validation/accuracy``) of the final state, with ``data.test_split``
      ``<test split>/<metric>`` of the selected checkpoint (evaluated once) and
      ``train/selected_step``, then ``train/steps``, ``train/images_per_s``,
      ``train/loss``, ``train/wall_s``, ``train/compile_s``, ``peak_rss_mb``; after an
      interruption (SIGTERM/Ctrl-C) ``train/interrupted = 1`` and no final evaluation.

    Raises:
      NonFiniteLossError: the loss became NaN/inf (``train.on_nonfinite="stop"``).
      jaxcv.errors.WorkdirLockedError: another process is using ``workdir``.
      jaxcv.errors.ConfigChangedError: the config differs from the checkpoints' (see
        :mod:`jaxcv.train.config_drift`).
      jaxcv.train.CheckpointMismatchError: ``workdir`` holds another experiment's checkpoints.
    """
    wall_start = time.perf_counter()
    config = copy.deepcopy(config)  # num_classes gets filled in; the caller's config is kept
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with workdir_lock(workdir, f"jaxcv train {config.name}"):
        return _train_locked(config, workdir, wall_start, allow_config_change)


def _train_locked(config, workdir: Path, wall_start: float, allow_config_change: bool):
    """:func:`train_and_evaluate` once the workdir is locked."""
    enable_compilation_cache()
    run = build_run(config, workdir, allow_config_change=allow_config_change)
    closers = [run.checkpointer.close]
    loop = None
    try:
        loop = _start_loop(run, closers)
        loop.train()
        loop.test()
    except BaseException as e:
        _close_all(closers, failing=True)
        if isinstance(e, WriteError) and loop is not None:
            raise _write_failed(e, loop, wall_start) from e
        raise
    try:
        _close_all(closers, failing=False)
    except WriteError as e:  # e.g. the last save, written in the background
        raise _write_failed(e, loop, wall_start) from e
    return _finish(loop, wall_start)


def _start_loop(run: Run, closers: list) -> StepLoop:
    """The run's metrics writer, progress bar, profiler and :class:`StepLoop`; each part's
    ``close`` goes into ``closers``, in the order they are to be closed."""
    config, num_steps = run.config, int(run.config.train.num_steps)
    writer = MetricsWriter(run.out_dir)
    closers.append(writer.close)
    if run.start_step == 0:
        writer.write_text(0, "config", f"```\n{config}\n```")
    progress = ProgressBar(num_steps, run.start_step)
    closers.insert(0, progress.close)
    profiler = StepProfiler.for_run(config, run.workdir, run.start_step, num_steps)
    closers.insert(0, profiler.close)
    return StepLoop(run, writer, progress, profiler)


def _close_all(closers: list, *, failing: bool) -> None:
    """Call every closer, even after one fails; then raise the first failure, unless the run
    is already failing (its own error is the one to report)."""
    first = None
    for close in closers:
        try:
            close()
        except Exception as e:
            first = first or e
    if first is not None and not failing:
        raise first


def _write_failed(error: WriteError, loop: StepLoop, wall_start: float) -> WriteError:
    """``error`` (a checkpoint or the metrics could not be written, e.g. a full disk)
    completed with where the run's finished metrics went: ``results.json``, marked
    ``train/write_failed``, when the disk still takes that small file."""
    results = final_results(loop, wall_start)
    results["train/write_failed"] = 1.0
    try:
        path = write_results(loop.run.out_dir, results)
        note = f"the metrics of the {loop.step} steps trained are in {path}"
    except OSError as e:
        note = f"{RESULTS_FILE} could not be written either ({e.strerror or e})"
    if not isinstance(error, CheckpointWriteError):  # which names the steps saved itself
        latest = loop.run.checkpointer.latest_step()
        note += f"; the last checkpoint is step {latest}" if latest else "; no checkpoint saved"
    return type(error)(f"{error}; {note}")


def _finish(loop: StepLoop, wall_start: float) -> dict[str, float]:
    """Write ``results.json`` and the report of a finished (or interrupted) run; print them."""
    run, config = loop.run, loop.run.config
    results = final_results(loop, wall_start)
    report = write_outputs(
        run.out_dir,
        config,
        results,
        None if loop.interrupted else loop.evaluation,
        list(run.info.class_names),
        notes=run_notes(loop, results, loop.profiler),
    )
    summary = report_lib.summarize(results, headline_keys(config, reported_split(config)))
    skipped = _skipped_steps(results)
    print(f"{config.name}: {summary}".rstrip() + (f"; {skipped}" if skipped else ""))
    print(f"Report: {report.resolve()}")
    return {k: float(v) for k, v in results.items() if not isinstance(v, str)}
