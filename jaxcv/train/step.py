"""The generic, pure train and eval steps.

``make_train_step(task)`` returns ``train_step(state, batch) -> (state, metrics)``:

1. split the state's key (the new key goes back into the state; the step key is used once);
2. ``value_and_grad`` of ``task.loss_fn`` (``has_aux``) at ``state.params``;
3. with ``axis_name`` (pmap), ``lax.pmean`` of the gradients, metrics and new model state over
   that axis, so every device applies the same update;
4. one optimizer update, the global gradient norm and the learning rate in the metrics;
5. non-finite loss or gradients: ``on_nonfinite="skip"`` keeps params and optimizer state
   (``jnp.where`` over the trees) and reports ``nonfinite=1``; ``"stop"`` applies the update
   anyway and reports the non-finite loss so the loop can stop without saving.

Data-parallel semantics. Under a sharded ``jax.jit`` (Parallel mode "mesh") the step is written
for the global batch and XLA inserts the reductions: the result equals the single-device step
on the global batch, BatchNorm statistics included. Under ``pmap`` each device sees a
sub-batch of ``B / n`` examples: the loss mean, gradients and metrics are averaged across
devices, which equals the global-batch mean because all sub-batches have the same size, but a
BatchNorm layer normalises with its own sub-batch statistics (unless the model's BatchNorm was
built with ``axis_name="batch"``), and the running averages in ``model_state`` are the mean over
devices of the per-device updates. The running *mean* therefore equals the global-batch one
exactly; the running *variance* is the mean of per-device variances, which differs from the
global variance by the variance of the device means. Under pmap the step key is additionally
folded with the device index so dropout masks differ between devices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxcv.tasks.base import Task
from jaxcv.train.state import TrainState

__all__ = ["ON_NONFINITE", "current_learning_rate", "make_eval_step", "make_train_step"]

ON_NONFINITE = ("stop", "skip")
Batch = dict[str, Any]
Metrics = dict[str, jax.Array]


def current_learning_rate(opt_state: Any) -> jax.Array | None:
    """The learning rate recorded by ``optax.inject_hyperparams`` in ``opt_state`` (or None)."""
    try:
        lr = optax.tree_utils.tree_get(
            opt_state,
            "learning_rate",
            filtering=lambda _, value: isinstance(value, (jax.Array, float)),
        )
    except KeyError:
        return None
    return None if lr is None else jnp.asarray(lr, jnp.float32)


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def make_train_step(
    task: Task,
    *,
    axis_name: str | None = None,
    on_nonfinite: str = "stop",
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """Build the pure train step for ``task``.

    Args:
      task: the task (its ``loss_fn`` returns ``(loss, (metrics, new_model_state))``).
      axis_name: the pmap axis to average over (``Parallel.axis_name``); None for single-device
        and sharded-jit (mesh) execution.
      on_nonfinite: ``"stop"`` or ``"skip"`` (see the module docstring).

    Returns:
      ``train_step(state, batch) -> (new_state, metrics)``. ``batch`` holds arrays with leading
      dim ``B`` (per device under pmap). ``metrics`` are float32 scalars: the task's metrics,
      ``loss``, ``grad_norm`` (global L2 norm of the averaged gradients), ``learning_rate`` (of
      this update, when the optimizer records it) and ``nonfinite`` (1.0 when the loss or a
      gradient was not finite). ``new_state.step`` is ``state.step + 1`` even for a skipped
      update. The function carries ``axis_name`` and ``on_nonfinite`` attributes.
    """
    if on_nonfinite not in ON_NONFINITE:
        raise ValueError(f"on_nonfinite must be one of {list(ON_NONFINITE)}; got {on_nonfinite!r}")

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        if not isinstance(batch, dict):
            raise ValueError(f"batch must be a dict of arrays; got {type(batch)}")
        new_rng, step_rng = jax.random.split(state.rng)
        if axis_name is not None:
            step_rng = jax.random.fold_in(step_rng, jax.lax.axis_index(axis_name))

        def loss_of(params):
            return task.loss_fn(params, state.model_state, batch, step_rng, train=True)

        (loss, (metrics, model_state)), grads = jax.value_and_grad(loss_of, has_aux=True)(
            state.params
        )
        loss = jnp.asarray(loss, jnp.float32)
        if loss.shape != ():
            raise ValueError(f"task.loss_fn must return a scalar loss; got shape {loss.shape}")
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        if axis_name is not None:
            grads, loss, metrics, model_state = jax.lax.pmean(
                (grads, loss, metrics, model_state), axis_name
            )
        grad_norm = optax.global_norm(grads)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        if on_nonfinite == "skip":
            finite = finite & _all_finite(model_state)
            keep_new = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
            params = keep_new(params, state.params)
            opt_state = keep_new(opt_state, state.opt_state)
            model_state = keep_new(model_state, state.model_state)
        lr = current_learning_rate(opt_state)
        metrics.update(
            loss=loss,
            grad_norm=grad_norm.astype(jnp.float32),
            nonfinite=1.0 - finite.astype(jnp.float32),
        )
        if lr is not None:
            metrics["learning_rate"] = lr
        new_state = state.replace(
            step=state.step + 1,
            params=params,
            model_state=model_state,
            opt_state=opt_state,
            rng=new_rng,
        )
        return new_state, metrics

    train_step.axis_name = axis_name  # type: ignore[attr-defined]
    train_step.on_nonfinite = on_nonfinite  # type: ignore[attr-defined]
    return train_step


def make_eval_step(task: Task) -> Callable[[TrainState, Batch], dict[str, jax.Array]]:
    """Build ``eval_step(state, batch) -> task.predict_fn(state.variables, batch)``.

    The outputs are arrays with leading dim ``B`` (e.g. ``logits (B, K)``); no cross-device
    reduction is needed, so the same function serves every parallel mode.
    """

    def eval_step(state: TrainState, batch: Batch) -> dict[str, jax.Array]:
        if not isinstance(batch, dict):
            raise ValueError(f"batch must be a dict of arrays; got {type(batch)}")
        return task.predict_fn(state.variables, batch)

    eval_step.axis_name = None  # type: ignore[attr-defined]
    return eval_step
