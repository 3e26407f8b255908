"""Log-densities and variational bounds of latent-variable models, in nats (pure JAX).

These are where a VAE's outputs meet the data, so they live with the tasks (losses are free
functions in ``jaxcv/tasks/``). All functions are jit-able, work in float32 and reduce with
numerically stable forms (``log1p(exp(-|x|))`` for Bernoulli terms, ``logsumexp`` for the
importance-weighted bound).

For an image ``x`` with ``q(z | x) = N(mean, diag(exp(logvar)))``, prior ``p(z) = N(0, I)``:

* ``elbo = E_q[log p(x | z)] - KL(q || p)`` (the KL in closed form), estimated with one sample;
* ``log w_k = log p(x | z_k) + log p(z_k) - log q(z_k | x)`` for ``z_k ~ q``;
* ``iwae_K = logsumexp_k(log w_k) - log K`` (Burda et al., 2016): a lower bound of
  ``log p(x)`` that increases with ``K`` and equals the single-sample Monte-Carlo ELBO
  ``log w_1`` at ``K = 1``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxcv.ops.losses import kl_divergence_standard_normal

__all__ = [
    "LIKELIHOODS",
    "bernoulli_log_likelihood",
    "diagonal_gaussian_log_prob",
    "gaussian_log_likelihood",
    "image_log_likelihood",
    "importance_log_weights",
    "iwae_bound",
    "kl_standard_normal",
    "standard_normal_log_prob",
]

LIKELIHOODS = ("bernoulli", "gaussian")
_LOG_2PI = math.log(2.0 * math.pi)


def _check_images(x: jax.Array, name: str) -> None:
    if x.ndim < 4:
        raise ValueError(f"{name} must have shape (..., B, H, W, C); got shape {tuple(x.shape)}")


def bernoulli_log_likelihood(logits: jax.Array, pixels: jax.Array) -> jax.Array:
    """``sum_pixels log Bernoulli(pixels | sigmoid(logits))`` per image.

    Args:
      logits: ``(..., B, H, W, C)`` decoder logits (leading sample dims allowed).
      pixels: ``(B, H, W, C)`` targets in ``[0, 1]`` (binary for a proper likelihood),
        broadcast against ``logits``.

    Returns:
      ``(..., B)`` float32 log-likelihoods in nats (``<= 0`` for binary pixels).
    """
    _check_images(logits, "logits")
    _check_images(pixels, "pixels")
    x = logits.astype(jnp.float32)
    t = jnp.broadcast_to(pixels.astype(jnp.float32), x.shape)
    log_p = x * t - jnp.maximum(x, 0.0) - jnp.log1p(jnp.exp(-jnp.abs(x)))
    return jnp.sum(log_p, axis=(-3, -2, -1))


def gaussian_log_likelihood(means: jax.Array, pixels: jax.Array, std: float) -> jax.Array:
    """``sum_pixels log N(pixels | means, std^2)`` per image (a density: can exceed 0).

    Args:
      means: ``(..., B, H, W, C)`` decoder means.
      pixels: ``(B, H, W, C)`` targets, broadcast against ``means``.
      std: the fixed decoder standard deviation (> 0).

    Returns:
      ``(..., B)`` float32 log-densities in nats.
    """
    _check_images(means, "means")
    _check_images(pixels, "pixels")
    if not std > 0:
        raise ValueError(f"std must be > 0; got {std}")
    r = (pixels.astype(jnp.float32) - means.astype(jnp.float32)) / std
    per_pixel = -0.5 * r * r - math.log(std) - 0.5 * _LOG_2PI
    return jnp.sum(per_pixel, axis=(-3, -2, -1))


def image_log_likelihood(
    outputs: jax.Array, pixels: jax.Array, likelihood: str = "bernoulli", std: float = 0.1
) -> jax.Array:
    """``log p(x | z)`` per image for ``likelihood`` in :data:`LIKELIHOODS`.

    ``outputs`` ``(..., B, H, W, C)`` are Bernoulli logits or Gaussian means; returns ``(..., B)``.
    """
    if likelihood == "bernoulli":
        return bernoulli_log_likelihood(outputs, pixels)
    if likelihood == "gaussian":
        return gaussian_log_likelihood(outputs, pixels, std)
    raise ValueError(f"unknown likelihood {likelihood!r}; valid: {list(LIKELIHOODS)}")


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
    """``log N(z | 0, I)`` summed over the last axis: ``(..., D) -> (...)``."""
    if z.ndim < 1:
        raise ValueError(f"z must have shape (..., D); got shape {tuple(z.shape)}")
    z = z.astype(jnp.float32)
    return -0.5 * jnp.sum(z * z + _LOG_2PI, axis=-1)


def diagonal_gaussian_log_prob(z: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """``log N(z | mean, diag(exp(logvar)))`` summed over the last axis.

    Args:
      z: ``(..., B, D)`` points (leading sample dims allowed).
      mean, logvar: ``(B, D)``, broadcast against ``z``.

    Returns:
      ``(..., B)`` float32.
    """
    if mean.shape != logvar.shape or mean.ndim < 1:
        raise ValueError(
            f"mean and logvar must share a shape (B, D); got {mean.shape} and {logvar.shape}"
        )
    if z.shape[-mean.ndim :] != mean.shape:
        raise ValueError(f"z must end in the shape of mean {mean.shape}; got {z.shape}")
    lv = logvar.astype(jnp.float32)
    r = (z.astype(jnp.float32) - mean.astype(jnp.float32)) * jnp.exp(-0.5 * lv)
    return -0.5 * jnp.sum(r * r + lv + _LOG_2PI, axis=-1)


def kl_standard_normal(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """Closed-form ``KL(N(mean, exp(logvar)) || N(0, I))`` per example: ``(B, D) -> (B,)``.

    Delegates to :func:`jaxcv.ops.losses.kl_divergence_standard_normal` (accurate near the
    prior).
    """
    return kl_divergence_standard_normal(mean, logvar, reduction="none")


def importance_log_weights(
    log_px_z: jax.Array, z: jax.Array, mean: jax.Array, logvar: jax.Array
) -> jax.Array:
    """``log w = log p(x | z) + log p(z) - log q(z | x)``.

    Args:
      log_px_z: ``(K, B)`` log-likelihoods of each sample.
      z: ``(K, B, D)`` samples from ``q``.
      mean, logvar: ``(B, D)`` parameters of ``q``.

    Returns:
      ``(K, B)`` float32 log importance weights.
    """
    if z.ndim != 3 or log_px_z.shape != z.shape[:2]:
        raise ValueError(
            f"need z (K, B, D) and log_px_z (K, B); got {tuple(z.shape)} and "
            f"{tuple(log_px_z.shape)}"
        )
    return (
        log_px_z.astype(jnp.float32)
        + standard_normal_log_prob(z)
        - diagonal_gaussian_log_prob(z, mean, logvar)
    )


def iwae_bound(log_weights: jax.Array) -> jax.Array:
    """``logsumexp_k(log_weights) - log K``: ``(K, B) -> (B,)`` (stable for any magnitudes)."""
    if log_weights.ndim != 2:
        raise ValueError(f"log_weights must have shape (K, B); got shape {log_weights.shape}")
    k = log_weights.shape[0]
    return jax.nn.logsumexp(log_weights.astype(jnp.float32), axis=0) - math.log(k)
