"""Optimizers and learning-rate schedules from an ``optimizer`` config section.

``make_optimizer(config.optimizer, num_steps)`` builds one ``optax`` transformation:

    clip_by_global_norm(grad_clip_norm)            if grad_clip_norm is set
    sgd:   add_decayed_weights(weight_decay) -> trace(momentum, nesterov)   (coupled L2, as torch)
    adamw: scale_by_adam(b1, b2, eps) -> add_decayed_weights(weight_decay) (decoupled)
    scale_by_learning_rate(schedule)               (wrapped in optax.inject_hyperparams)

Weight decay skips biases and normalisation parameters by default: only parameters with
``ndim > 1`` whose name is not ``bias``/``scale`` are decayed (``decay_all_params=True``
decays everything).

``lr_multipliers`` is a list of ``(regex, factor)`` pairs: a parameter whose path a pattern
matches (the first that does) has its updates, weight decay included, scaled by ``factor``
(Caffe's ``lr_mult``: e.g. ``[("^(conv|bn)\\d", 0.1)]`` fine-tunes a pre-trained trunk ten
times slower than the fresh layers above it). A pattern that matches nothing raises
``ValueError`` at ``tx.init(params)``.

``freeze`` is a list of regular expressions searched (``re.search``) in each parameter's
'/'-joined path, e.g. ``"Conv_0/kernel"``; matching parameters get exactly zero updates (and no
optimizer state) through ``optax.partition``. A pattern that matches nothing raises
``ValueError`` at ``tx.init(params)`` listing some parameter paths, so typos are not silently
ignored.

The learning rate actually applied at each update lives in the optimizer state
(``optax.tree_utils.tree_get(opt_state, "learning_rate")``), which the train step reports.

Config keys read (``ml_collections.ConfigDict``, dict, or any object with attributes):
``name`` ("sgd" | "adamw"), ``learning_rate``, ``momentum`` (sgd, default 0.9), ``nesterov``
(default False), ``weight_decay`` (default 0), ``b1``/``b2``/``eps`` (adamw, defaults 0.9,
0.999, 1e-8), ``schedule`` ("constant" | "cosine" | "step"), ``warmup_steps`` (default 0),
``decay_steps`` (cosine: step at which the cosine reaches ``end_learning_rate``, default
``num_steps``), ``end_learning_rate`` (cosine, default 0), ``boundaries`` (step: absolute steps
at which the rate is multiplied by ``decay_factor``, default 0.1), ``grad_clip_norm``,
``lr_multipliers``, ``freeze``, ``decay_all_params``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "decay_mask",
    "freeze_labels",
    "learning_rate_fn",
    "lr_multiplier_transform",
    "make_optimizer",
    "param_path",
]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "cosine", "step")
_NO_DECAY_NAMES = ("bias", "scale")
_MISSING = object()


def _get(config: Any, key: str, default: Any = _MISSING) -> Any:
    """Read ``key`` from a ConfigDict / dict / attribute object, with an optional default."""
    if isinstance(config, dict) or hasattr(config, "keys"):
        value = config[key] if key in config else default
    else:
        value = getattr(config, key, default)
    if value is _MISSING:
        raise ValueError(f"optimizer config is missing the required key {key!r}")
    return value


def param_path(path: Sequence[Any]) -> str:
    """'/'-join a jax key path: ``(DictKey('Conv_0'), DictKey('kernel'))`` -> ``Conv_0/kernel``."""
    parts = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def learning_rate_fn(opt_config: Any, num_steps: int) -> optax.Schedule:
    """The learning-rate schedule: linear warmup from 0, then constant / cosine / step.

    Args:
      opt_config: the ``optimizer`` config section (see module docstring for the keys).
      num_steps: total number of training steps (default cosine horizon).

    Returns:
      ``schedule(count) -> float32 scalar``, jit-able; ``count`` is the number of updates
      already applied.
    """
    base = float(_get(opt_config, "learning_rate"))
    schedule = _get(opt_config, "schedule", "constant")
    warmup = int(_get(opt_config, "warmup_steps", 0) or 0)
    if warmup < 0:
        raise ValueError(f"warmup_steps must be >= 0; got {warmup}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid schedules: {list(SCHEDULES)}")
    if schedule == "cosine":
        decay_steps = _get(opt_config, "decay_steps", None) or num_steps
        if decay_steps <= warmup:
            raise ValueError(
                f"cosine decay_steps ({decay_steps}) must exceed warmup_steps ({warmup})"
            )
        end = float(_get(opt_config, "end_learning_rate", 0.0) or 0.0)
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=base,
            warmup_steps=warmup,
            decay_steps=int(decay_steps),
            end_value=end,
        )
    if schedule == "step":
        boundaries = [int(b) for b in (_get(opt_config, "boundaries", None) or ())]
        factor = float(_get(opt_config, "decay_factor", 0.1))
        if sorted(boundaries) != boundaries or any(b <= warmup for b in boundaries):
            raise ValueError(
                f"step boundaries must be increasing and > warmup_steps ({warmup}); "
                f"got {boundaries}"
            )
        after = optax.piecewise_constant_schedule(base, {b - warmup: factor for b in boundaries})
    else:
        after = optax.constant_schedule(base)
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, base, warmup), after], [warmup])


def decay_mask(params: Any) -> Any:
    """Boolean tree, ``True`` where weight decay applies (``ndim > 1`` and not bias/scale)."""

    def keep(path, leaf):
        name = param_path(path).rsplit("/", 1)[-1]
        return jnp.ndim(leaf) > 1 and name not in _NO_DECAY_NAMES

    return jax.tree_util.tree_map_with_path(keep, params)


def freeze_labels(patterns: Sequence[str]) -> Callable[[Any], Any]:
    """``params -> tree of 'frozen' | 'trainable'`` labels from regexes over param paths.

    Raises:
      ValueError: (when called) if a pattern matches no parameter; the message lists some paths.
    """
    compiled = [re.compile(p) for p in patterns]

    def labels(params):
        paths = [param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
        unused = [c.pattern for c in compiled if not any(c.search(path) for path in paths)]
        if unused:
            raise _unused_patterns_error("freeze", unused, paths)
        return jax.tree_util.tree_map_with_path(
            lambda p, _: (
                "frozen" if any(c.search(param_path(p)) for c in compiled) else "trainable"
            ),
            params,
        )

    return labels


def _unused_patterns_error(kind: str, unused: list[str], paths: list[str]) -> ValueError:
    shown = ", ".join(paths[:12]) + (", ..." if len(paths) > 12 else "")
    return ValueError(f"{kind} patterns {unused} match no parameter; parameter paths are: {shown}")


def lr_multiplier_transform(pairs: Sequence[Sequence[Any]]) -> optax.GradientTransformation:
    """Scale each parameter's updates by the factor of the first ``(regex, factor)`` pair whose
    pattern it matches (1 where none does).

    Raises:
      ValueError: a factor below 0 or a malformed pair (at once); a pattern that matches no
        parameter (at ``init``), listing some parameter paths.
    """
    compiled = []
    for pair in pairs:
        if len(pair) != 2 or float(pair[1]) < 0:
            raise ValueError(f"lr_multipliers entries are (regex, factor >= 0); got {pair!r}")
        compiled.append((re.compile(str(pair[0])), float(pair[1])))

    def factor(path) -> float:
        name = param_path(path)
        return next((f for c, f in compiled if c.search(name)), 1.0)

    def init_fn(params):
        paths = [param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
        unused = [c.pattern for c, _ in compiled if not any(c.search(p) for p in paths)]
        if unused:
            raise _unused_patterns_error("lr_multipliers", unused, paths)
        return optax.EmptyState()

    def scale(path, update):
        f = factor(path)
        return update if f == 1.0 else update * jnp.asarray(f, update.dtype)

    def update_fn(updates, state, params=None):
        del params
        return jax.tree_util.tree_map_with_path(scale, updates), state

    return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(opt_config: Any, num_steps: int) -> optax.GradientTransformation:
    """Build the optimizer described by ``opt_config`` (see the module docstring).

    Args:
      opt_config: the ``optimizer`` config section.
      num_steps: total number of training steps (for the schedule).

    Returns:
      An ``optax.GradientTransformation`` over float32 params. Its state records the learning
      rate of the last update under the name ``learning_rate``.
    """
    name = _get(opt_config, "name")
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid optimizers: {list(OPTIMIZERS)}")
    schedule = learning_rate_fn(opt_config, num_steps)
    weight_decay = float(_get(opt_config, "weight_decay", 0.0) or 0.0)
    mask = True if _get(opt_config, "decay_all_params", False) else decay_mask
    parts: list[optax.GradientTransformation] = []
    clip = _get(opt_config, "grad_clip_norm", None)
    if clip is not None:
        if clip <= 0:
            raise ValueError(f"grad_clip_norm must be positive or None; got {clip}")
        parts.append(optax.clip_by_global_norm(float(clip)))
    if name == "sgd":
        if weight_decay:
            parts.append(optax.add_decayed_weights(weight_decay, mask=mask))
        momentum = float(_get(opt_config, "momentum", 0.9) or 0.0)
        if momentum:
            parts.append(
                optax.trace(decay=momentum, nesterov=bool(_get(opt_config, "nesterov", False)))
            )
    else:
        parts.append(
            optax.scale_by_adam(
                b1=float(_get(opt_config, "b1", 0.9)),
                b2=float(_get(opt_config, "b2", 0.999)),
                eps=float(_get(opt_config, "eps", 1e-8)),
            )
        )
        if weight_decay:
            parts.append(optax.add_decayed_weights(weight_decay, mask=mask))
    parts.append(optax.inject_hyperparams(optax.scale_by_learning_rate)(learning_rate=schedule))
    multipliers = list(_get(opt_config, "lr_multipliers", None) or ())
    if multipliers:
        parts.append(lr_multiplier_transform(multipliers))
    tx = optax.chain(*parts)
    freeze = list(_get(opt_config, "freeze", None) or ())
    if freeze:
        tx = optax.partition(
            {"trainable": tx, "frozen": optax.set_to_zero()}, freeze_labels(freeze)
        )
    return tx
