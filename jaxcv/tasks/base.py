"""The two protocols where a model meets its training engine.

A :class:`Task` owns a Flax module and says how to initialise it, how to compute the training
loss and how to turn raw outputs into predictions. Everything in it is a pure function of arrays
(jit-able, static shapes), so the generic engine in :mod:`jaxcv.train` can differentiate,
shard and compile it without knowing what the task is.

An :class:`Evaluator` is its host-side counterpart: it receives NumPy batches and the NumPy
outputs of ``predict_fn`` one batch at a time and reduces them to flat metrics
(``{"accuracy": 0.98, ...}``; the loop adds the split prefix such as ``test/``).

Variables follow Flax conventions: ``{'params': ..., **model_state}``, where ``model_state``
holds the non-trainable collections such as ``{'batch_stats': ...}`` (empty when the model has
none).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import flax.linen as nn
import jax
import numpy as np

__all__ = ["Evaluator", "Task", "config_sections"]

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
        """Return the metrics of everything seen so far, flat names without a split prefix."""
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


def config_sections(config: Any, *names: str) -> dict[str, Any]:
    """The keys of the config sections ``names`` merged into one dict (later sections win;
    absent sections count as empty), e.g. a task's settings from ``config.detection``."""
    merged: dict[str, Any] = {}
    for name in names:
        section = config.get(name, None)
        if section is not None:
            merged.update(section.to_dict() if hasattr(section, "to_dict") else section)
    return merged
