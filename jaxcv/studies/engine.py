"""What the multi-part studies share: in-memory data, short training runs, reports.

A study trains several small models (several latent sizes, label fractions, seeds) on a dataset
that fits in memory, so it reads each split once (:func:`load_arrays`), samples training
batches from NumPy arrays (:func:`fit`, which still runs the engine's pure train step through
:class:`jaxcv.train.Parallel`), predicts in fixed-size padded batches (:func:`predict`) and
writes one ``report.md`` with its own tables plus ``results.json``
(:func:`write_study_outputs`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxcv import data as jdata
from jaxcv.train.logging import peak_rss_mb
from jaxcv.train.optim import make_optimizer
from jaxcv.train.parallel import Parallel
from jaxcv.train.report import results_table
from jaxcv.train.state import create_train_state
from jaxcv.train.step import make_train_step

__all__ = [
    "FitResult",
    "fit",
    "load_arrays",
    "markdown_table",
    "predict",
    "write_study_outputs",
]

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
FIGURES_DIR = "figures"


def load_arrays(config: ml_collections.ConfigDict, split: str) -> dict[str, np.ndarray]:
    """All of ``split`` as ``image (N, H, W, C)`` float32 (normalised) and ``label (N,)``.

    Reads ``config.data`` (``name``, ``data_dir``, ``image_size``, ``eval_batch_size``); one
    in-order pass of the evaluation pipeline, padding rows dropped.
    """
    dc = config.data
    ds = jdata.make_pipeline(
        dc.name,
        split,
        int(dc.eval_batch_size),
        train=False,
        seed=int(config.seed),
        image_size=dc.image_size,
        data_dir=dc.data_dir,
        keys=("image", "label"),
    )
    images, labels = [], []
    for batch in ds.as_numpy_iterator():
        keep = np.asarray(batch["example_valid"]).astype(bool)
        images.append(batch["image"][keep])
        labels.append(batch["label"][keep])
    if not images:
        raise ValueError(f"split {split!r} of {dc.name!r} is empty")
    return {"image": np.concatenate(images), "label": np.concatenate(labels).astype(np.int32)}


def _index_stream(n: int, batch_size: int, rng: np.random.Generator):
    """Batches of indices from consecutive shuffled epochs (works for ``n < batch_size``)."""
    buffer = np.zeros((0,), np.int64)
    while True:
        while buffer.size < batch_size:
            buffer = np.concatenate([buffer, rng.permutation(n)])
        yield buffer[:batch_size]
        buffer = buffer[batch_size:]


@dataclasses.dataclass
class FitResult:
    """A finished training run: host ``variables`` (``{'params': ..., **model_state}``), the
    logged ``losses`` ``[(step, mean loss)]`` and the wall ``seconds`` (compilation
    included); ``first_step_seconds`` is the first step (mostly compilation),
    ``step_seconds`` the mean wall time of the other steps (batch slicing included; NaN for
    a one-step run) and ``step_cpu_seconds`` their mean CPU time (all threads of the process;
    less sensitive than wall time to other processes on a shared machine)."""

    variables: dict
    losses: list[tuple[int, float]]
    seconds: float
    first_step_seconds: float = float("nan")
    step_seconds: float = float("nan")
    step_cpu_seconds: float = float("nan")


def fit(
    task: Any,
    arrays: dict[str, np.ndarray],
    optimizer: ml_collections.ConfigDict | dict,
    *,
    num_steps: int,
    batch_size: int,
    seed: int,
    parallel: str = "mesh",
    init: Callable[[Any], Any] | None = None,
    init_variables: Callable[[dict], dict] | None = None,
    log_every: int = 100,
) -> FitResult:
    """Train ``task`` on batches sampled from in-memory ``arrays``.

    Args:
      task: a :class:`jaxcv.tasks.base.Task`.
      arrays: ``image (N, H, W, C)`` and optionally ``label (N,)`` (every key with leading dim
        ``N`` is batched).
      optimizer: an ``optimizer`` config section (see :func:`jaxcv.train.make_optimizer`).
      num_steps: train steps; batch_size: examples per step (a multiple of the device count).
      seed: initialisation, step keys and batch order.
      parallel: ``"mesh"`` | ``"pmap"`` | ``"none"``.
      init: optional ``params -> params`` applied after initialisation (e.g. copying a
        pre-trained encoder in); the optimizer state is rebuilt for the new params.
      init_variables: optional ``variables -> variables`` (``{'params': ..., **model_state}``,
        e.g. a pre-trained trunk with its BatchNorm statistics), applied after ``init``.
      log_every: steps between loss fetches (host syncs).

    Returns:
      A :class:`FitResult`.

    Raises:
      RuntimeError: the loss became NaN/inf (names the step).
    """
    if num_steps < 1 or batch_size < 1:
        raise ValueError(f"num_steps and batch_size must be >= 1; got {num_steps}, {batch_size}")
    t0 = time.perf_counter()
    n = arrays["image"].shape[0]
    keys = [k for k, v in arrays.items() if np.ndim(v) and v.shape[0] == n]
    stream = _index_stream(n, batch_size, np.random.default_rng(seed))
    tx = make_optimizer(optimizer, num_steps)
    first = next(stream)
    state = create_train_state(
        task, jax.random.PRNGKey(seed), {k: arrays[k][first] for k in keys}, tx
    )
    if init is not None:
        params = init(state.params)
        state = state.replace(params=params, opt_state=tx.init(params))
    if init_variables is not None:
        variables = dict(init_variables({"params": state.params, **state.model_state}))
        params = variables.pop("params")
        state = state.replace(params=params, model_state=variables, opt_state=tx.init(params))
    par = Parallel(parallel)
    step_fn = par.compile_train_step(make_train_step(task, axis_name=par.axis_name))
    state = par.put_state(state)
    losses, pending = [], []
    indices = first
    t_steps, cpu_steps = time.perf_counter(), time.process_time()
    first_step = float("nan")
    for step in range(1, num_steps + 1):
        state, metrics = step_fn(state, par.put_batch({k: arrays[k][indices] for k in keys}))
        pending.append(metrics["loss"])
        if step == 1:  # one sync: the steady-state step time below excludes compilation
            jax.block_until_ready(metrics["loss"])
            first_step = time.perf_counter() - t_steps
            t_steps, cpu_steps = time.perf_counter(), time.process_time()
        if step % log_every == 0 or step == num_steps:
            values = np.asarray([float(np.asarray(jax.device_get(v))) for v in pending])
            if not np.all(np.isfinite(values)):
                bad = step - len(values) + 1 + int(np.flatnonzero(~np.isfinite(values))[0])
                raise RuntimeError(f"non-finite loss at step {bad}; lower the learning rate")
            losses.append((step, float(values.mean())))
            pending = []
        indices = next(stream)
    jax.block_until_ready(state.params)
    n = num_steps - 1 if num_steps > 1 else float("nan")
    steady = (time.perf_counter() - t_steps) / n
    steady_cpu = (time.process_time() - cpu_steps) / n
    variables = par.get_state(state).variables
    return FitResult(variables, losses, time.perf_counter() - t0, first_step, steady, steady_cpu)


def predict(
    predict_fn: Callable[[dict, dict], dict],
    variables: dict,
    images: np.ndarray,
    batch_size: int,
) -> dict[str, np.ndarray]:
    """``predict_fn(variables, batch)`` over ``images (N, H, W, C)`` in padded batches.

    Every batch has ``batch_size`` rows (one compilation) and an ``example_valid`` key; the
    outputs' padding rows are dropped. Returns ``{name: (N, ...)}`` NumPy arrays.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C); got shape {images.shape}")
    fn = jax.jit(predict_fn)
    n = images.shape[0]
    chunks: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, batch_size):
        part = images[start : start + batch_size]
        m = part.shape[0]
        padded = np.zeros((batch_size, *images.shape[1:]), images.dtype)
        padded[:m] = part
        batch = {"image": padded, "example_valid": np.arange(batch_size) < m}
        for key, value in fn(variables, batch).items():
            chunks.setdefault(key, []).append(np.asarray(value)[:m])
    return {k: np.concatenate(v) for k, v in chunks.items()}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; floats are written with 4 decimals, ``|`` in cells is escaped."""

    def fmt(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_study_outputs(
    workdir: Path,
    config: ml_collections.ConfigDict,
    results: dict[str, float],
    sections: Sequence[tuple[str, str]],
    *,
    notes: Sequence[str] = (),
    wall_start: float | None = None,
) -> Path:
    """Write ``results.json`` and ``report.md``; returns the report path.

    Args:
      workdir: the run directory (figures are expected under ``workdir/figures``).
      config: the study's config (shown at the end of the report).
      results: flat figures (``test/...``); ``peak_rss_mb`` and ``wall_s`` are added.
      sections: ``[(heading, markdown)]`` in order (tables, ``![..](figures/x.png)`` links).
      notes: lines under the title (how the numbers were obtained).
      wall_start: ``time.perf_counter()`` at the start, for ``wall_s``.
    """
    results = dict(results)
    results["peak_rss_mb"] = peak_rss_mb()
    if wall_start is not None:
        results["wall_s"] = time.perf_counter() - wall_start
    (workdir / RESULTS_FILE).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [f"# {config.name}", "", f"Run directory `{workdir.resolve()}`, written {now}.", ""]
    out += [f"{line}  " for line in notes]
    for heading, body in sections:
        out += ["", f"## {heading}", "", body.rstrip()]
    out += ["", "## All figures (results.json)", "", results_table(results), ""]
    out += ["## Config", "", "```yaml", str(config).rstrip(), "```", ""]
    path = workdir / REPORT_FILE
    path.write_text("\n".join(out), encoding="utf-8")
    return path


def figure_link(workdir: Path, path: Path, caption: str) -> str:
    """A markdown image link to ``path`` relative to ``workdir``."""
    return f"![{caption}]({Path(path).resolve().relative_to(Path(workdir).resolve())})"
