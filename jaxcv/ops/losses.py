"""Numerically stable losses with explicit weights/masks and a documented reduction.

Every loss computes an element-wise (or per-example) value, multiplies it by optional
``weights`` (a float weight or a bool valid mask broadcasting to that shape), then reduces:

* ``"none"``: the weighted values, same shape as the unreduced loss;
* ``"sum"``: the sum of the weighted values;
* ``"mean"``: that sum divided by the sum of the weights (the number of valid entries for a
  mask; the number of entries without weights), and 0 when every weight is 0 (where torch
  returns NaN for an all-ignored batch).
"""

from typing import Literal

import jax
import jax.numpy as jnp

from jaxcv.ops._checks import check_min_rank, check_same_shape

Array = jax.Array
ArrayLike = jax.typing.ArrayLike
Reduction = Literal["none", "sum", "mean"]

_REDUCTIONS = ("none", "sum", "mean")


def _reduce(loss: Array, weights: ArrayLike | None, reduction: str) -> Array:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if weights is None:
        w = jnp.ones_like(loss)
    else:
        weights = jnp.asarray(weights)
        try:
            w = jnp.broadcast_to(weights.astype(loss.dtype), loss.shape)
        except ValueError as err:
            raise ValueError(
                f"weights of shape {weights.shape} do not broadcast to the loss shape {loss.shape}"
            ) from err
        # A masked-out entry contributes exactly 0, even where its loss is inf or NaN.
        loss = jnp.where(w != 0, loss, 0.0)
    weighted = loss * w
    if reduction == "none":
        return weighted
    total = jnp.sum(weighted)
    if reduction == "sum":
        return total
    denom = jnp.sum(w)
    return jnp.where(denom > 0, total / jnp.where(denom > 0, denom, 1.0), 0.0)


def smooth_l1(
    pred: ArrayLike,
    target: ArrayLike,
    beta: float = 1.0,
    weights: ArrayLike | None = None,
    reduction: Reduction = "sum",
) -> Array:
    """Smooth-L1 (Huber divided by ``beta``) loss, torchvision/fvcore's definition.

    Element-wise ``0.5 * x**2 / beta`` where ``|x| < beta`` and ``|x| - 0.5 * beta`` elsewhere,
    with ``x = pred - target``; ``beta == 0`` (below 1e-5) gives the plain L1 loss. Faster
    R-CNN uses ``beta = 1/9`` for the RPN and ``1.0`` for the box head, summed over positives
    and divided by the number of sampled anchors/RoIs.

    Args:
      pred: ``(..., D)`` predictions, e.g. box deltas ``(R, 4)``.
      target: same shape as ``pred``.
      beta: transition point between the quadratic and the linear regime.
      weights: optional weights or bool mask broadcasting to ``pred`` (e.g. ``(R, 1)``
        positives).
      reduction: ``"none"``, ``"sum"`` (default) or ``"mean"`` (see the module docstring).

    Returns:
      A scalar, or ``pred``'s shape for ``"none"``.
    """
    check_same_shape(pred, target, "pred", "target")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    diff = jnp.abs(jnp.asarray(pred) - jnp.asarray(target))
    if beta < 1e-5:
        loss = diff
    else:
        loss = jnp.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)
    return _reduce(loss, weights, reduction)


def softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    weights: ArrayLike | None = None,
    *,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
) -> Array:
    """Softmax cross-entropy with integer labels, like ``torch.nn.functional.cross_entropy``.

    Per example ``-sum_k q_k log_softmax(logits)_k`` with ``q = (1 - eps) * one_hot(label) +
    eps / K`` (``eps = label_smoothing``), computed with a stable log-softmax.

    Args:
      logits: ``(..., K)`` unnormalised scores, e.g. ``(B, K)`` or per-pixel ``(B, H, W, K)``.
      labels: ``(...)`` int class ids in ``[0, K)`` (or ``ignore_index``). A label outside
        ``[0, K)`` with a non-zero weight gives a NaN loss (never a silently wrong number).
      weights: optional ``(...)`` per-example weights or bool valid mask.
      ignore_index: label value (e.g. 255) whose examples get weight 0.
      label_smoothing: ``eps`` in ``[0, 1]``.
      reduction: ``"mean"`` (default: over valid examples), ``"sum"`` or ``"none"`` (``(...)``).

    Returns:
      A scalar, or labels' shape for ``"none"``.
    """
    check_min_rank(logits, 1, "logits")
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels must have shape logits.shape[:-1] = {logits.shape[:-1]}, "
            f"got labels {labels.shape} for logits {logits.shape}"
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must be integer class ids, got dtype {labels.dtype}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    valid = jnp.ones(labels.shape, bool)
    if ignore_index is not None:
        valid = labels != ignore_index
    safe = jnp.where(valid, labels, 0)
    nll = -jnp.take_along_axis(log_p, safe[..., None], axis=-1)[..., 0]
    if label_smoothing > 0:
        smooth = -jnp.mean(log_p, axis=-1)
        nll = (1.0 - label_smoothing) * nll + label_smoothing * smooth
    w = valid.astype(jnp.float32)
    if weights is not None:
        weights = jnp.asarray(weights)
        if weights.shape != labels.shape:
            raise ValueError(
                f"weights must have the labels' shape {labels.shape}, got {weights.shape}"
            )
        w = w * weights.astype(jnp.float32)
    in_range = (labels >= 0) & (labels < logits.shape[-1])
    nll = jnp.where(in_range | (w == 0), nll, jnp.nan)
    return _reduce(nll, w, reduction)


def sigmoid_binary_cross_entropy(
    logits: ArrayLike,
    targets: ArrayLike,
    weights: ArrayLike | None = None,
    reduction: Reduction = "mean",
) -> Array:
    """Binary cross-entropy on logits, like torch's ``binary_cross_entropy_with_logits``.

    Element-wise ``max(x, 0) - x * t + log1p(exp(-|x|))``: exact for any finite logit (no
    ``log(sigmoid)`` underflow). Used for RPN objectness and mask-head pixels.

    Args:
      logits: ``(...)`` logits.
      targets: same shape, probabilities in ``[0, 1]`` (0/1 labels, or soft targets).
      weights: optional weights or bool mask broadcasting to ``logits``.
      reduction: ``"mean"`` (default: over weighted entries), ``"sum"`` or ``"none"``.
    """
    check_same_shape(logits, targets, "logits", "targets")
    x = jnp.asarray(logits).astype(jnp.float32)
    t = jnp.asarray(targets).astype(jnp.float32)
    loss = jnp.maximum(x, 0.0) - x * t + jnp.log1p(jnp.exp(-jnp.abs(x)))
    return _reduce(loss, weights, reduction)


def kl_divergence_standard_normal(
    mean: ArrayLike,
    logvar: ArrayLike,
    weights: ArrayLike | None = None,
    reduction: Reduction = "none",
) -> Array:
    """``KL(N(mean, exp(logvar)) || N(0, I))`` of diagonal Gaussians, summed over the last axis.

    ``0.5 * sum(mean**2 + exp(logvar) - 1 - logvar)``, with ``exp(v) - 1 - v`` evaluated by
    its Taylor series near 0, so it keeps full float32 relative precision when the posterior
    is close to the prior.

    Args:
      mean: ``(..., D)`` posterior means (a VAE encoder's output).
      logvar: ``(..., D)`` posterior log-variances.
      weights: optional ``(...)`` per-example weights or bool mask.
      reduction: ``"none"`` (default: per-example ``(...)``), ``"sum"`` or ``"mean"``.
    """
    check_min_rank(mean, 1, "mean")
    check_same_shape(mean, logvar, "mean", "logvar")
    mu = jnp.asarray(mean).astype(jnp.float32)
    lv = jnp.asarray(logvar).astype(jnp.float32)
    # exp(v) - 1 - v: a Taylor series where the subtraction would cancel (|v| < 0.1).
    series = lv * lv * (1 / 2 + lv * (1 / 6 + lv * (1 / 24 + lv * (1 / 120 + lv / 720))))
    excess = jnp.where(jnp.abs(lv) < 0.1, series, jnp.expm1(lv) - lv)
    kl = 0.5 * jnp.sum(mu * mu + excess, axis=-1)
    return _reduce(kl, weights, reduction)
