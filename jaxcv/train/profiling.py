"""A jax profiler trace of a few training steps after warm-up (``--set profile=true``).

The trace covers steps ``k .. k + n - 1`` of the run, where ``k`` skips the compiling first
step and :data:`WARMUP_STEPS` warm steps, not the whole run (a trace of every step would be
large and slow the run). It is written by :func:`jax.profiler.start_trace` into
``workdir/profile`` as ``plugins/profile/<run>/<host>.xplane.pb``, viewable with
``tensorboard --logdir WORKDIR/profile`` (the profile plugin) or xprof. Each traced step is a
``train`` step annotation (:class:`jax.profiler.StepTraceAnnotation`) spanning its input fetch
and dispatch; the trace starts and ends on a finished device state, so the traced steps do not
overlap untraced ones.

:class:`CompileCounter` counts XLA compilations per jitted function (and persistent-cache hits)
from jax's monitoring events, for tests that a step compiles once and for compile benchmarks.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import jax
from jax import monitoring

__all__ = ["PROFILE_DIR", "PROFILE_STEPS", "WARMUP_STEPS", "CompileCounter", "StepProfiler"]

PROFILE_DIR = "profile"
WARMUP_STEPS = 2  # untraced steps after the compiling first one
PROFILE_STEPS = 3  # traced steps

# jax's monitoring events (jax._src.dispatch.BACKEND_COMPILE_EVENT, jax._src.compiler).
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"
CACHE_MISS_EVENT = "/jax/compilation_cache/cache_misses"


class StepProfiler:
    """Trace training steps ``first .. last`` (1-based, inclusive) into ``log_dir``.

    Call :meth:`before` before fetching step ``s``'s batch and :meth:`after` once step ``s``
    is dispatched; both do nothing outside the window (and when ``enabled`` is False), so the
    loop calls them unconditionally. :meth:`close` stops a trace left running (an exception or
    an interruption inside the window).
    """

    def __init__(self, log_dir: str | Path, first: int, last: int, *, enabled: bool = True):
        if enabled and not 1 <= first <= last:
            raise ValueError(f"profile window must satisfy 1 <= first <= last; got {first}..{last}")
        self.log_dir = Path(log_dir)
        self.first, self.last = first, last
        self.enabled = enabled
        self.written: Path | None = None  # log_dir once a trace was saved
        self._active = False
        self._annotation: jax.profiler.StepTraceAnnotation | None = None

    @classmethod
    def for_run(
        cls, config: Any, workdir: str | Path, start_step: int, num_steps: int
    ) -> StepProfiler:
        """The profiler of a run resuming at ``start_step`` (0: fresh) up to ``num_steps``:
        enabled by the config's top-level ``profile`` key (default False); the window starts
        after the compiling step and :data:`WARMUP_STEPS` warm steps, clamped to the run."""
        enabled = bool(config.get("profile", False)) and start_step < num_steps
        first = min(start_step + 2 + WARMUP_STEPS, num_steps)
        last = min(first + PROFILE_STEPS - 1, num_steps)
        return cls(Path(workdir) / PROFILE_DIR, first, last, enabled=enabled)

    def before(self, step: int, state: Any) -> None:
        """Start the trace (after ``state`` is computed) when ``step`` opens the window."""
        if not self.enabled or not self.first <= step <= self.last:
            return
        if step == self.first:
            jax.block_until_ready(state)
            self.log_dir.mkdir(parents=True, exist_ok=True)
            jax.profiler.start_trace(str(self.log_dir))
            self._active = True
        self._annotation = jax.profiler.StepTraceAnnotation("train", step_num=step)
        self._annotation.__enter__()

    def after(self, step: int, outputs: Any) -> None:
        """End step ``step``'s annotation; at the window's end wait for ``outputs`` (the new
        state and metrics) and save the trace."""
        if self._annotation is not None:
            self._annotation.__exit__(None, None, None)
            self._annotation = None
        if self._active and step == self.last:
            jax.block_until_ready(outputs)
            self._stop()

    def close(self) -> None:
        """Save a trace still running (the run stopped inside the window)."""
        if self._annotation is not None:
            self._annotation.__exit__(None, None, None)
            self._annotation = None
        if self._active:
            self._stop()

    def _stop(self) -> None:
        jax.profiler.stop_trace()
        self._active = False
        self.written = self.log_dir

    def trace_files(self) -> list[Path]:
        """The ``*.xplane.pb`` files under ``log_dir`` (empty before a trace is saved)."""
        return sorted(self.log_dir.rglob("*.xplane.pb")) if self.log_dir.is_dir() else []


class CompileCounter:
    """Count XLA compilations while active (a context manager), from jax's monitoring events.

    Every executable jax builds (``jax.jit`` of a new shape, an eager op on a new shape) records
    one backend-compile event named after its function (``jit_train_step``, ...); a persistent
    cache hit still counts as one (the executable is loaded instead of compiled) and also
    counts in ``cache_hits``.

    Attributes:
      compiles: ``{function name: number of compilations}``.
      seconds: ``{function name: total compile (or cache load) seconds}``.
      cache_hits, cache_misses: persistent compilation cache lookups that hit / missed.
    """

    def __init__(self) -> None:
        self.compiles: collections.Counter[str] = collections.Counter()
        self.seconds: collections.defaultdict[str, float] = collections.defaultdict(float)
        self.cache_hits = 0
        self.cache_misses = 0

    def _on_duration(self, event: str, duration: float, **kwargs: Any) -> None:
        if event == BACKEND_COMPILE_EVENT:
            name = str(kwargs.get("fun_name", "?"))
            self.compiles[name] += 1
            self.seconds[name] += duration

    def _on_event(self, event: str, **kwargs: Any) -> None:
        if event == CACHE_HIT_EVENT:
            self.cache_hits += 1
        elif event == CACHE_MISS_EVENT:
            self.cache_misses += 1

    def __enter__(self) -> CompileCounter:
        monitoring.register_event_duration_secs_listener(self._on_duration)
        monitoring.register_event_listener(self._on_event)
        return self

    def __exit__(self, *exc: Any) -> None:
        monitoring.unregister_event_duration_listener(self._on_duration)
        monitoring.unregister_event_listener(self._on_event)

    def count(self, name: str) -> int:
        """Compilations of functions whose name contains ``name`` (e.g. ``"train_step"``)."""
        return sum(n for fun, n in self.compiles.items() if name in fun)

    def total(self) -> int:
        """All compilations seen."""
        return sum(self.compiles.values())
