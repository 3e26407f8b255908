"""Where a model meets its training engine: the two protocols and the record of a task.

A :class:`Task` owns a Flax module and says how to initialise it, how to compute the training
loss and how to turn raw outputs into predictions. Everything in it is a pure function of arrays
(jit-able, static shapes), so the generic engine in :mod:`jaxcv.train` can differentiate,
shard and compile it without knowing what the task is.

An :class:`Evaluator` is its host-side counterpart: it receives NumPy batches and the NumPy
outputs of ``predict_fn`` one batch at a time and reduces them to flat metrics
(``{"accuracy": 0.98, ...}``; the loop adds the split prefix such as ``test/``).

A :class:`Recipe` is everything else the engine needs to know about a task: how to build it
from a config, the batch keys it reads, its headline metrics and its report figures. The
records of all tasks are gathered in one table, :mod:`jaxcv.recipes`; the engine reads them
from there and names no task itself.

Variables follow Flax conventions: ``{'params': ..., **model_state}``, where ``model_state``
holds the non-trainable collections such as ``{'batch_stats': ...}`` (empty when the model has
none).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import flax.linen as nn
import jax
import numpy as np

__all__ = ["Evaluator", "FigureFn", "Recipe", "Task"]

PyTree = Any
Batch = dict[str, Any]


@runtime_checkable
class Evaluator(Protocol):
    """Host-side accumulator of evaluation metrics over one pass of a split."""

    def update(self, batch: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
        """Accumulate one batch.

        Args:
          batch: the NumPy batch dict (the keys of :mod:`jaxcv.types`, e.g. ``image (B, H, W, C)``,
            ``label (B,)``, and ``example_valid (B,)`` bool on padded evaluation batches).
          outputs: NumPy arrays returned by ``Task.predict_fn`` for this batch, leading dim ``B``.
        """
        ...

    def result(self) -> dict[str, float]:
        """Return the metrics of everything seen so far, flat names without a split prefix.

        A fresh evaluator (nothing seen) returns every metric it reports, with NaN values: the
        training loop checks ``train.best_metric`` against these names before it starts.
        """
        ...


@runtime_checkable
class Task(Protocol):
    """A model with its loss and prediction functions (all pure and jit-able)."""

    model: nn.Module

    def init_variables(self, rng: jax.Array, batch: Batch) -> dict:
        """Initialise the model's variables from a sample batch.

        Args:
          rng: a PRNG key.
          batch: a batch dict with the :mod:`jaxcv.types` keys (e.g. ``image (B, H, W, C)``);
            only its shapes matter.

        Returns:
          ``{'params': ..., **model_state}``, e.g. ``{'params': ..., 'batch_stats': ...}``.
        """
        ...

    def loss_fn(
        self,
        params: PyTree,
        model_state: dict,
        batch: Batch,
        rng: jax.Array,
        *,
        train: bool = True,
    ) -> tuple[jax.Array, tuple[dict[str, jax.Array], dict]]:
        """The training objective on one (per-device) batch.

        Args:
          params: the ``params`` collection.
          model_state: the other collections (``{'batch_stats': ...}`` or ``{}``).
          batch: batch dict of arrays with leading dim ``B``.
          rng: a PRNG key for this step (dropout, sampling); never reused by the engine.
          train: training mode (BatchNorm uses batch statistics and updates ``model_state``).

        Returns:
          ``(loss, (metrics, new_model_state))`` where ``loss`` is a float32 scalar (the mean
          over the batch), ``metrics`` a dict of float32 scalars (batch means) and
          ``new_model_state`` has the structure of ``model_state``.
        """
        ...

    def predict_fn(self, variables: dict, batch: Batch) -> dict[str, jax.Array]:
        """Inference outputs with static shapes, leading dim ``B`` (e.g. ``logits (B, K)``)."""
        ...

    def make_evaluator(self) -> Evaluator:
        """A fresh host-side :class:`Evaluator` for one evaluation pass."""
        ...


#: A report figure: ``(fig_dir, evaluation, class_names) -> [(heading, png_path)]``, where
#: ``evaluation`` has ``samples`` (batch keys and outputs of a few examples, or None),
#: ``evaluator`` (after the pass) and ``split`` (:class:`jaxcv.train.evaluation.Evaluation`).
FigureFn = Callable[[Path, Any, Sequence[str]], list[tuple[str, Path]]]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What the training engine needs to know about one task, ``config.task == name``.

    Attributes:
      name: the task's name in configs (``config.task``).
      build: ``(config, model) -> Task``, the task module's ``task_from_config``.
      batch_keys: the batch keys the task reads (the pipeline decodes only these), or None for
        every key the dataset has.
      optional_keys: keys the task reads when the dataset has them (e.g. ``ignore``: VOC's
        "difficult" objects, which VOC07 AP leaves out).
      metric: the evaluator's headline metric (e.g. ``"mAP50"``), what a run is judged by.
      summary: the metrics a run prints after each evaluation, in order (those the evaluator
        reports; the ``metric`` first is not required).
      figures: the report figures drawn from the final evaluation, in order.
      counts_background: ``num_classes`` of the model counts the background class too
        (per-pixel labels ``0..K``); a ``model.num_classes`` of None is filled with the
        dataset's classes plus one.
    """

    name: str
    build: Callable[[Any, nn.Module], Task]
    batch_keys: tuple[str, ...] | None
    metric: str
    summary: tuple[str, ...]
    figures: tuple[FigureFn, ...] = ()
    counts_background: bool = False
    optional_keys: tuple[str, ...] = ()
