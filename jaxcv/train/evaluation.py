"""One evaluation pass of a run over a split, and what it returns."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from jaxcv.data.pipeline import numpy_batches
from jaxcv.types import EXAMPLE_VALID

__all__ = ["Evaluation", "evaluate"]


@dataclasses.dataclass
class Evaluation:
    """One evaluation pass: flat ``metrics``, the ``evaluator`` (e.g. its confusion matrix),
    up to N ``samples`` (batch keys and outputs of the first valid examples) and the split."""

    metrics: dict[str, float]
    evaluator: Any
    samples: dict[str, np.ndarray] | None
    split: str


def _gather_processes(tree: dict[str, Any]) -> dict[str, np.ndarray]:
    """Every process's rows ``(B_local, ...)`` concatenated into ``(B_global, ...)`` (process
    order), on every process; rank-0 values are kept as they are."""
    from jax.experimental import multihost_utils

    rows = {k: v for k, v in tree.items() if np.ndim(v) > 0}
    gathered = multihost_utils.process_allgather(rows, tiled=True)
    return {**tree, **{k: np.asarray(v) for k, v in gathered.items()}}


def evaluate(task, eval_step, parallel, state, dataset, *, split: str, num_samples: int = 24):
    """Run ``eval_step`` over ``dataset`` (a tf.data pass) and reduce with the task's evaluator.

    Args:
      task: the task (``make_evaluator``).
      eval_step: ``parallel.compile_eval_step(make_eval_step(task))``.
      parallel: the :class:`jaxcv.train.parallel.Parallel` placing batches.
      state: the placed train state.
      dataset: eval ``tf.data.Dataset`` of dict batches (``example_valid (B,)`` on padding).
      split: the split name (for the report).
      num_samples: how many valid examples to keep for the report's sample figure: up to a
        third misclassified ones (when outputs have ``pred_label``), then the first ones.

    Returns:
      An :class:`Evaluation`.
    """
    evaluator = task.make_evaluator()
    first: dict[str, list[np.ndarray]] = {}
    wrong: dict[str, list[np.ndarray]] = {}
    counts = {"first": 0, "wrong": 0}
    max_wrong = num_samples // 3

    def keep(store, name, rows, arrays, limit):
        rows = rows[: limit - counts[name]]
        for key, value in arrays.items():
            if value.ndim and value.shape[0] == arrays["image"].shape[0]:
                store.setdefault(key, []).append(value[rows])
        counts[name] += rows.size

    for batch in numpy_batches(dataset, f"the {split!r} split"):
        outputs = parallel.get_outputs(eval_step(state, parallel.put_batch(batch)))
        if jax.process_count() > 1:
            # Each process fed its shard; every process's evaluator sees the global batch, so
            # the metrics cover the whole split and agree across processes.
            batch, outputs = _gather_processes(batch), _gather_processes(outputs)
        evaluator.update(batch, outputs)
        arrays = {k: np.asarray(v) for k, v in {**batch, **outputs}.items()}
        valid = arrays.get(EXAMPLE_VALID, np.ones(len(arrays["image"]), bool)).astype(bool)
        errors = np.zeros_like(valid)
        if "pred_label" in arrays and "label" in arrays:
            # Misclassified examples are the informative ones: show a few of them first.
            errors = valid & (arrays["pred_label"] != arrays["label"])
            if counts["wrong"] < max_wrong:
                keep(wrong, "wrong", np.flatnonzero(errors), arrays, max_wrong)
        if counts["first"] < num_samples:
            keep(first, "first", np.flatnonzero(valid & ~errors), arrays, num_samples)
    samples = None
    if first or wrong:
        merged = {k: np.concatenate(wrong.get(k, []) + first.get(k, [])) for k in first or wrong}
        samples = {k: v[:num_samples] for k, v in merged.items()}
    return Evaluation(evaluator.result(), evaluator, samples, split)
