"""Running jitted train steps and keeping their metrics, for every training loop of the library.

:func:`jaxcv.train.loop.train_and_evaluate` (tf.data batches, evaluation, checkpoints) and the
studies' in-memory training (:func:`jaxcv.studies.engine.fit`) both step through
:class:`StepRunner` and keep the step metrics in a :class:`MetricsWindow`, so step timing,
non-finite losses and throughput are handled in one place:

* the step runs asynchronously: its metrics stay on device until :meth:`MetricsWindow.flush`
  fetches all pending ones in one host sync;
* the host dispatches at most ``max_in_flight`` steps ahead of the devices: before a new step
  it waits for the one ``max_in_flight`` steps back (never the step just dispatched, so the
  devices always have the next step queued). Unbounded, the host ran 30+ steps ahead on CPU,
  holding their batches, and a SIGTERM was honoured only after all of them had run;
* the input runs ahead of the steps (:class:`DevicePrefetch`): right after a step is dispatched
  the next batches are read and copied to the devices while it runs, so two batches are in
  flight and a step never waits for its batch's host-to-device copy;
* a flush stops on the first non-finite loss with :class:`jaxcv.errors.NonFiniteLossError`
  naming its step (unless the step skips such updates, ``on_nonfinite="skip"`` of
  :func:`jaxcv.train.step.make_train_step`, which the window counts);
* the first step is flushed on its own and left out of the throughput: its time is mostly
  compilation (:attr:`StepRunner.compile_s`); time spent between steps on other work
  (evaluation, checkpoints) is left out with :meth:`MetricsWindow.restart_clock`.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from jaxcv.errors import NonFiniteLossError

__all__ = ["DevicePrefetch", "MetricsWindow", "StepRunner", "nonfinite_location"]

Metrics = dict[str, Any]


def nonfinite_location(loss: float, step: int, seed: int) -> str:
    """The start of a non-finite-loss message: the value, the step and its training batch."""
    return (
        f"non-finite loss ({loss}) at step {step} (training batch #{step - 1} of the "
        f"seed-{seed} stream)"
    )


def _mean_metrics(fetched: list[dict[str, float]]) -> dict[str, float]:
    """The means over the steps whose update was applied, and ``skipped``: how many were not
    (``nonfinite`` of :func:`jaxcv.train.step.make_train_step`). A skipped step's loss, NaN or
    enormous, says nothing of the model, so it is left out of the means (NaN when every step
    of the window was skipped)."""
    applied = [m for m in fetched if not float(m.get("nonfinite", 0.0))]
    keys = [k for k in fetched[0] if k != "nonfinite"]
    means = {
        k: float(np.mean([np.asarray(m[k], np.float64) for m in applied])) if applied else np.nan
        for k in keys
    }
    if "nonfinite" in fetched[0]:
        means["skipped"] = float(len(fetched) - len(applied))
    return means


class MetricsWindow:
    """The step metrics not yet fetched from the devices, and the run's step timing.

    Args:
      fetch: on-device step metrics -> ``{name: float}`` (blocks until ready; e.g.
        :meth:`jaxcv.train.Parallel.get_metrics`).
      batch_size: global examples per step (for ``images_per_s``).
      start_step: the step before the first one added (0 for a fresh run, else the resumed step).
      describe_nonfinite: ``(loss, step) -> message`` of the error raised on a non-finite loss.
      stop_on_nonfinite: raise on a non-finite loss (False when the step skips such updates).
      log: called with ``(step, means)`` by every flush, before the clock restarts (so writing
        the metrics is not counted as step time).

    Attributes:
      train_s, cpu_s, timed_steps: wall and process CPU seconds of the timed windows and their
        number of steps.
      last: the means of the last flushed window (``{}`` before the first flush), over its
        applied steps, with ``skipped``: how many of its steps were not applied.
      nonfinite_skipped: steps whose update was skipped for a non-finite loss or gradient.
    """

    def __init__(
        self,
        fetch: Callable[[Metrics], dict[str, float]],
        batch_size: int,
        start_step: int = 0,
        *,
        describe_nonfinite: Callable[[float, int], str],
        stop_on_nonfinite: bool = True,
        log: Callable[[int, dict[str, float]], None] | None = None,
    ):
        self._fetch, self._batch_size = fetch, int(batch_size)
        self._describe, self._stop, self._log = describe_nonfinite, stop_on_nonfinite, log
        self._pending: list[Metrics] = []
        self._start_step = start_step
        self.train_s = self.cpu_s = 0.0
        self.timed_steps = self.nonfinite_skipped = 0
        self.last: dict[str, float] = {}
        self.restart_clock()

    def add(self, metrics: Metrics) -> None:
        """Keep one step's on-device metrics (no host sync)."""
        self._pending.append(metrics)

    def restart_clock(self) -> None:
        """Start the window's time now (after work that is not a train step)."""
        self.clock_start, self._cpu_start = time.perf_counter(), time.process_time()

    def flush(self, step: int, *, timed: bool = True) -> dict[str, float] | None:
        """Fetch the pending metrics (one host sync) up to ``step``, check and average them.

        ``timed=False`` leaves the window out of the throughput (the compiling first step).

        Returns:
          The means (plus ``images_per_s`` when timed), or None when nothing was pending.

        Raises:
          NonFiniteLossError: a loss was NaN/inf (``step`` is the first such step).
        """
        if not self._pending:
            return None
        fetched = [self._fetch(m) for m in self._pending]
        elapsed = time.perf_counter() - self.clock_start
        cpu = time.process_time() - self._cpu_start
        self._check_finite(fetched)
        n = len(fetched)
        means = _mean_metrics(fetched)
        self.nonfinite_skipped += int(means.get("skipped", 0))
        if timed:
            self.train_s += elapsed
            self.cpu_s += cpu
            self.timed_steps += n
            means["images_per_s"] = n * self._batch_size / max(elapsed, 1e-9)
        self.last = means
        if self._log is not None:
            self._log(step, means)
        self._pending, self._start_step = [], step
        self.restart_clock()
        return means

    def _check_finite(self, fetched: list[dict[str, float]]) -> None:
        losses = np.array([float(m["loss"]) for m in fetched])
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size and self._stop:
            bad_step = self._start_step + int(bad[0]) + 1
            raise NonFiniteLossError(self._describe(losses[bad[0]], bad_step), step=bad_step)

    @property
    def images_per_s(self) -> float:
        """Examples per second over the timed windows (0.0 before any)."""
        return self.timed_steps * self._batch_size / self.train_s if self.train_s > 0 else 0.0

    @property
    def step_seconds(self) -> float:
        """Mean wall seconds of a timed step (NaN before any)."""
        return self.train_s / self.timed_steps if self.timed_steps else float("nan")

    @property
    def step_cpu_seconds(self) -> float:
        """Mean process CPU seconds (all threads) of a timed step (NaN before any)."""
        return self.cpu_s / self.timed_steps if self.timed_steps else float("nan")


class DevicePrefetch:
    """Host batches placed on the devices ahead of use: :meth:`fill` reads and places batches
    until ``size`` wait on the devices (``put`` starts an asynchronous copy), ``next()`` hands
    over the oldest.

    A batch that fails to read (a corrupt record) raises when its turn comes, not while the
    batches before it are still to be used; the end of ``batches`` ends the iteration.

    Args:
      batches: host batches ``{key: (B, ...)}``.
      put: host batch -> device batch (:meth:`jaxcv.train.Parallel.put_batch`).
      size: batches kept on the devices ahead of the one in use (2: two in flight).
    """

    def __init__(self, batches: Iterator[Any], put: Callable[[Any], Any], size: int = 2):
        if size < 1:
            raise ValueError(f"prefetch size must be >= 1; got {size}")
        self._batches, self._put, self._size = batches, put, size
        self._queue: collections.deque = collections.deque()
        self._ended = False

    def fill(self) -> None:
        """Read and place batches until ``size`` are waiting (or the input ended or failed)."""
        while not self._ended and len(self._queue) < self._size:
            try:
                self._queue.append((self._put(next(self._batches)), None))
            except StopIteration:
                self._ended = True
            except Exception as error:  # raised in its turn, by __next__
                self._queue.append((None, error))
                self._ended = True

    def __iter__(self) -> DevicePrefetch:
        return self

    def __next__(self) -> Any:
        if not self._queue:
            self.fill()
        if not self._queue:
            raise StopIteration
        batch, error = self._queue.popleft()
        if error is not None:
            raise error
        return batch


class StepRunner:
    """Dispatches train steps: the compiled step on the next device batch, its metrics into
    ``window``, then the following batches to the devices (:class:`DevicePrefetch`, ``prefetch``
    ahead) while the step runs; the first step is synced on its own for :attr:`compile_s`.

    Args:
      step_fn: the compiled ``(state, batch) -> (state, metrics)``
        (:meth:`jaxcv.train.Parallel.compile_train_step`).
      parallel: the :class:`jaxcv.train.Parallel` placing the batches.
      batches: host batches ``{key: (B, ...)}``, one per step.
      window: the :class:`MetricsWindow` that keeps the metrics.
      first_step: the number of the first step run (1, or the resumed step + 1).
      profiler: an optional :class:`jaxcv.train.profiling.StepProfiler`.
      prefetch: batches placed on the devices ahead of the step that uses them.
      max_in_flight: steps dispatched but possibly not finished; dispatching one more first
        waits for the oldest.
    """

    def __init__(
        self,
        step_fn: Callable[[Any, dict], tuple[Any, Metrics]],
        parallel: Any,
        batches: Iterator[dict[str, np.ndarray]],
        window: MetricsWindow,
        *,
        first_step: int = 1,
        profiler: Any = None,
        prefetch: int = 2,
        max_in_flight: int = 3,
    ):
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1; got {max_in_flight}")
        self._step_fn = step_fn
        self._in_flight: collections.deque = collections.deque()
        self._max_in_flight = max_in_flight
        self._batches = DevicePrefetch(batches, parallel.put_batch, prefetch)
        self._window, self._first_step, self._profiler = window, first_step, profiler
        self.compile_s = 0.0  # wall seconds of the first step, once it ran

    def run(self, state: Any, step: int) -> Any:
        """Run step ``step`` from ``state``; returns the new state (still on device)."""
        if self._profiler is not None:
            self._profiler.before(step, state)
        while len(self._in_flight) >= self._max_in_flight:
            jax.block_until_ready(self._in_flight.popleft())
        state, metrics = self._step_fn(state, next(self._batches))
        self._in_flight.append(metrics)
        self._batches.fill()  # the next batches go to the devices while this step runs
        if self._profiler is not None:
            self._profiler.after(step, (state, metrics))
        self._window.add(metrics)
        if step == self._first_step:
            # One sync after the first step: its time is mostly compilation.
            start = self._window.clock_start
            self._window.flush(step, timed=False)
            self.compile_s = time.perf_counter() - start
        return state
