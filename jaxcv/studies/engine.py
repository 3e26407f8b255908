"""What the multi-part studies share: in-memory data, short training runs, reports.

A study trains several small models (several latent sizes, label fractions, seeds) on a dataset
that fits in memory, so it reads each split once (:func:`load_arrays`), samples training
batches from NumPy arrays (:func:`fit`), predicts in fixed-size padded batches
(:func:`predict`) and writes one ``report.md`` with its own tables plus ``results.json``
(:func:`write_study_outputs`).

What is study-specific stays here: the in-memory batches, the host-side predictions the
studies' own evaluations (PCA, k-means, IWAE bounds, accuracy per label fraction) are computed
from, and the report of tables. The steps themselves run through the training loop's parts
(:mod:`jaxcv.train.step_loop`: step timing, non-finite losses, throughput) and
``results.json`` is written by :func:`jaxcv.train.outputs.write_results`, as for
:func:`jaxcv.train.loop.train_and_evaluate`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
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
from jaxcv.train.outputs import write_results
from jaxcv.train.parallel import Parallel
from jaxcv.train.report import results_table
from jaxcv.train.state import create_train_state
from jaxcv.train.step import make_train_step
from jaxcv.train.step_loop import MetricsWindow, StepRunner, nonfinite_location

__all__ = [
    "FitResult",
    "fit",
    "load_arrays",
    "markdown_table",
    "predict",
    "write_study_outputs",
]

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


def _index_stream(n: int, batch_size: int, seed: int):
    """Batches of indices from consecutive shuffled epochs (works for ``n < batch_size``)."""
    rng = np.random.default_rng(seed)
    buffer = np.zeros((0,), np.int64)
    while True:
        while buffer.size < batch_size:
            buffer = np.concatenate([buffer, rng.permutation(n)])
        yield buffer[:batch_size]
        buffer = buffer[batch_size:]


@dataclasses.dataclass
class FitResult:
    """A finished training run: host ``variables`` (``{'params': ..., **model_state}``), the
    logged ``losses`` ``[(step, mean loss)]`` (the first step on its own, then every
    ``log_every`` steps and the last) and the wall ``seconds`` (compilation included);
    ``first_step_seconds`` is the first step (mostly compilation), ``step_seconds`` the mean
    wall time of the other steps (batch slicing included; NaN for a one-step run) and
    ``step_cpu_seconds`` their mean CPU time (all threads of the process; less sensitive than
    wall time to other processes on a shared machine). The timing is
    :class:`jaxcv.train.step_loop.MetricsWindow`'s, as for every training run."""

    variables: dict
    losses: list[tuple[int, float]]
    seconds: float
    first_step_seconds: float = float("nan")
    step_seconds: float = float("nan")
    step_cpu_seconds: float = float("nan")


def _initial_state(task, arrays, tx, seed, init, init_variables):
    """The train state initialised on ``arrays`` (one batch), then ``init`` and
    ``init_variables`` applied (the optimizer state rebuilt for the new params)."""
    state = create_train_state(task, jax.random.PRNGKey(seed), arrays, tx)
    if init is not None:
        params = init(state.params)
        state = state.replace(params=params, opt_state=tx.init(params))
    if init_variables is not None:
        variables = dict(init_variables({"params": state.params, **state.model_state}))
        params = variables.pop("params")
        state = state.replace(params=params, model_state=variables, opt_state=tx.init(params))
    return state


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

    The steps run through :class:`jaxcv.train.step_loop.StepRunner` and
    :class:`~jaxcv.train.step_loop.MetricsWindow`, the parts of
    :func:`jaxcv.train.loop.train_and_evaluate` that run and time steps; what is particular
    here is the data (index batches of consecutive shuffled epochs of ``arrays``), no
    evaluation and no checkpoints.

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
      jaxcv.errors.NonFiniteLossError: the loss became NaN/inf (a ``RuntimeError`` naming the
        step, with its ``step``).
    """
    if num_steps < 1 or batch_size < 1:
        raise ValueError(f"num_steps and batch_size must be >= 1; got {num_steps}, {batch_size}")
    t0 = time.perf_counter()
    n = arrays["image"].shape[0]
    keys = [k for k, v in arrays.items() if np.ndim(v) and v.shape[0] == n]
    batches = ({k: arrays[k][i] for k in keys} for i in _index_stream(n, batch_size, seed))
    tx = make_optimizer(optimizer, num_steps)
    first = next(batches)
    state = _initial_state(task, first, tx, seed, init, init_variables)
    par = Parallel(parallel)
    step_fn = par.compile_train_step(make_train_step(task, axis_name=par.axis_name))
    state = par.put_state(state)
    losses: list[tuple[int, float]] = []
    window = MetricsWindow(
        par.get_metrics,
        batch_size,
        describe_nonfinite=lambda loss, step: (
            f"{nonfinite_location(loss, step, seed)}; lower the learning rate"
        ),
        log=lambda step, means: losses.append((step, means["loss"])),
    )
    runner = StepRunner(step_fn, par, itertools.chain([first], batches), window)
    for step in range(1, num_steps + 1):
        state = runner.run(state, step)
        if step % log_every == 0 or step == num_steps:
            window.flush(step)
    variables = par.get_state(state).variables
    return FitResult(
        variables,
        losses,
        time.perf_counter() - t0,
        runner.compile_s,
        window.step_seconds,
        window.step_cpu_seconds,
    )


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
    write_results(workdir, results)
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
