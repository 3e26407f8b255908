"""The training state: one immutable pytree carried from step to step.

:class:`TrainState` holds everything a run needs to continue bit-for-bit after a restart:
the step counter, the trainable ``params``, the non-trainable ``model_state`` (e.g.
``{'batch_stats': ...}``), the optimizer state and the PRNG key. The optimizer itself (``tx``,
a pure ``optax.GradientTransformation``) is a static field: it is part of the tree structure,
never an array, so it is not checkpointed and jit treats it as a constant.

The key is stored as raw ``uint32`` key data ``(2,)`` (not a typed key array) so that every
checkpoint backend can store it; the train step splits it on every call and never reuses it.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxcv.tasks.base import Task

__all__ = ["TrainState", "create_train_state"]

PyTree = Any


class TrainState(flax.struct.PyTreeNode):
    """Step counter, parameters, model state, optimizer state and PRNG key.

    Attributes:
      step: int32 scalar, the number of train steps taken.
      params: the ``params`` collection (float32 leaves).
      model_state: the other variable collections, e.g. ``{'batch_stats': ...}``, or ``{}``.
      opt_state: the state of ``tx`` for ``params``.
      rng: ``(2,)`` uint32 raw PRNG key data; split inside each train step.
      tx: the optax transformation (static, not a pytree leaf).
    """

    step: jax.Array
    params: PyTree
    model_state: dict
    opt_state: optax.OptState
    rng: jax.Array
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    @property
    def variables(self) -> dict:
        """``{'params': params, **model_state}``, ready for ``module.apply``."""
        return {"params": self.params, **self.model_state}


def raw_key(rng: jax.Array) -> jax.Array:
    """Return ``rng`` as raw ``(2,)`` uint32 key data (accepts typed or raw keys)."""
    rng = jnp.asarray(rng)
    if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        rng = jax.random.key_data(rng)
    if rng.shape != (2,) or rng.dtype != jnp.uint32:
        raise ValueError(
            "rng must be a PRNG key (jax.random.key(...) or raw uint32 data of shape (2,)); "
            f"got shape {rng.shape} dtype {rng.dtype}"
        )
    return rng


# The initialisation runs once per run, so on CPU it is compiled without XLA's backend (LLVM)
# optimisations: it compiles several times faster (it was a large part of a detector's cold
# compile; ``experiments/bench/compile.py`` measures it), its run time does not matter, and its
# values equal the optimised build's to float32 rounding.
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def _init_variables(task: Task, rng: jax.Array, batch: dict[str, jax.Array]) -> dict:
    init = jax.jit(task.init_variables)
    if any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((rng, batch))):
        return init(rng, batch)  # traced (e.g. under jax.eval_shape): nothing is compiled
    lowered = init.lower(rng, batch)
    options = INIT_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
    return lowered.compile(compiler_options=options)(rng, batch)


def create_train_state(
    task: Task,
    rng: jax.Array,
    sample_batch: dict[str, Any],
    tx: optax.GradientTransformation,
) -> TrainState:
    """Initialise the model and optimizer.

    Args:
      task: the task providing ``init_variables``.
      rng: a PRNG key (typed or raw); split into an init key and the state's key.
      sample_batch: a batch dict (e.g. ``image (B, H, W, C)``); only shapes and dtypes matter.
      tx: the optimizer, e.g. from :func:`jaxcv.train.optim.make_optimizer`.

    Returns:
      A :class:`TrainState` at step 0 on the default device. ``tx.init`` runs here, so
      optimizer configuration errors (such as a ``freeze`` regex that matches no parameter)
      are raised by this call.
    """
    if not isinstance(sample_batch, dict):
        raise ValueError(f"sample_batch must be a dict of arrays; got {type(sample_batch)}")
    init_rng, state_rng = jax.random.split(raw_key(rng))
    batch = {k: jnp.asarray(v) for k, v in sample_batch.items()}
    variables = _init_variables(task, init_rng, batch)
    if "params" not in variables:
        raise ValueError(
            f"task.init_variables must return a dict with 'params'; got keys {list(variables)}"
        )
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    opt_state = tx.init(params)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        model_state=model_state,
        opt_state=opt_state,
        rng=state_rng,
        tx=tx,
    )
