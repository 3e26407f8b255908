"""The variational autoencoder as a ``Task``: the ELBO loss, ELBO and IWAE evaluation.

:class:`VAETask` trains :class:`jaxcv.models.vae.VAE` on ``-(log p(x | z) - beta * KL)`` with
one reparameterised sample, on the ``[0, 1]`` (binarised by default) pixel targets of
:mod:`jaxcv.tasks.reconstruction`; its evaluator reports ``elbo_nats`` (beta = 1, closed-form
KL), ``iwae_nats`` (``iwae_samples`` importance samples), ``kl_nats``, ``log_likelihood_nats``,
means over test images. :func:`task_from_config` builds it for ``config.task == "vae"`` with its
:class:`VAESettings` from ``config.unsupervised``, the pixel normalisation of
``config.data.name`` and ``config.seed`` as the evaluation key.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcv.tasks import likelihood as lk
from jaxcv.tasks.inputs import batch_images
from jaxcv.tasks.reconstruction import (
    MeanAccumulator,
    PixelSpace,
    VAESettings,
    example_weights,
    pixel_normalisation,
    unsupervised_settings,
    weighted_mean,
)
from jaxcv.tasks.settings import replace_settings

__all__ = ["VAEEvaluator", "VAESettings", "VAETask", "task_from_config"]


class VAETask(PixelSpace):
    """The ``Task`` protocol for :class:`jaxcv.models.vae.VAE`.

    Args:
      model: a VAE (``encode``, ``decode``, ``__call__`` with the ``sample`` rng).
      settings: :class:`VAESettings` (default: the class defaults).
      pixel_mean, pixel_std: the pipeline's normalisation.
      eval_seed: the fixed key of ``predict_fn``'s samples (one key per call; examples in a
        batch get independent samples).
      **overrides: fields of :class:`VAESettings` replacing those of ``settings``.
    """

    def __init__(
        self,
        model: nn.Module,
        settings: VAESettings | None = None,
        *,
        pixel_mean=(0.0,),
        pixel_std=(1.0,),
        eval_seed: int = 0,
        **overrides: Any,
    ):
        self.settings = replace_settings(settings or VAESettings(), overrides)
        s = self.settings
        super().__init__(pixel_mean, pixel_std, s.binarize, s.binarize_threshold)
        self.model = model
        self.likelihood = s.likelihood
        self.decoder_std = s.decoder_std
        self.beta = s.beta
        self.iwae_samples = s.iwae_samples
        self.iwae_chunk = min(s.iwae_chunk, max(s.iwae_samples, 1))
        self.eval_seed = int(eval_seed)

    def init_variables(self, rng: jax.Array, batch: dict[str, Any]) -> dict:
        """``{'params': ...}`` from ``batch['image'] (B, H, W, C)``."""
        params_rng, sample_rng = jax.random.split(rng)
        images = batch_images(batch)
        return dict(self.model.init({"params": params_rng, "sample": sample_rng}, images))

    def log_likelihood(self, outputs: jax.Array, targets: jax.Array) -> jax.Array:
        """``log p(x | z)`` per image: ``(..., B, H, W, C)`` decoder outputs -> ``(..., B)``."""
        return lk.image_log_likelihood(outputs, targets, self.likelihood, self.decoder_std)

    def decoder_mean(self, outputs: jax.Array) -> jax.Array:
        """The mean of ``p(x | z)``: ``sigmoid(logits)`` (Bernoulli) or the means."""
        return jax.nn.sigmoid(outputs) if self.likelihood == "bernoulli" else outputs

    def bounds(self, variables: dict, images: jax.Array, rng: jax.Array) -> dict[str, jax.Array]:
        """Per-example ELBO terms and, if ``iwae_samples``, the IWAE estimate, in nats.

        Args:
          variables: the VAE's variables.
          images: ``(B, H, W, C)`` normalised images.
          rng: key for the one ELBO sample and the ``K`` importance samples.

        Returns:
          ``elbo``, ``kl``, ``log_likelihood`` (the one-sample ``log p(x | z)``) ``(B,)``;
          ``iwae`` ``(B,)`` when ``iwae_samples > 0``; ``mean (B, D)``; ``target`` and
          ``reconstruction`` (decoder mean at ``z = mean``) ``(B, H, W, C)``.
        """
        targets = self.targets(images)
        x = self.normalise(targets)
        elbo_rng, iwae_rng = jax.random.split(rng)
        mean, logvar = self.model.apply(variables, x, method="encode")
        eps = jax.random.normal(elbo_rng, mean.shape, jnp.float32)
        outputs = self.model.apply(variables, mean + jnp.exp(0.5 * logvar) * eps, method="decode")
        log_px = self.log_likelihood(outputs, targets)
        kl = lk.kl_standard_normal(mean, logvar)
        result = {
            "elbo": log_px - kl,
            "kl": kl,
            "log_likelihood": log_px,
            "mean": mean,
            "target": targets,
            "reconstruction": self.decoder_mean(self.model.apply(variables, mean, method="decode")),
        }
        if self.iwae_samples:
            result["iwae"] = self._iwae(variables, targets, mean, logvar, iwae_rng)
        return result

    def _iwae(self, variables, targets, mean, logvar, rng) -> jax.Array:
        chunks = self.iwae_samples // self.iwae_chunk

        def chunk_log_weights(key):
            eps = jax.random.normal(key, (self.iwae_chunk, *mean.shape), jnp.float32)
            z = mean + jnp.exp(0.5 * logvar) * eps
            log_px = self.log_likelihood(self.model.apply(variables, z, method="decode"), targets)
            return lk.importance_log_weights(log_px, z, mean, logvar)

        log_w = jax.lax.map(chunk_log_weights, jax.random.split(rng, chunks))
        return lk.iwae_bound(log_w.reshape(self.iwae_samples, mean.shape[0]))

    def loss_fn(self, params, model_state, batch, rng, *, train: bool = True):
        """``-(log p(x | z) - beta * KL)`` averaged over the batch (nats per image).

        Returns:
          ``(loss, ({'loss', 'elbo', 'kl', 'log_likelihood'}, model_state))``.
        """
        del train
        images = batch_images(batch)
        targets = self.targets(images)
        out = self.model.apply(
            {"params": params, **(model_state or {})},
            self.normalise(targets),
            rngs={"sample": rng},
        )
        log_px = self.log_likelihood(out["logits"], targets)
        kl = lk.kl_standard_normal(out["mean"], out["logvar"])
        weights = example_weights(batch, images.shape[0])
        loss = weighted_mean(-(log_px - self.beta * kl), weights)
        metrics = {
            "loss": loss,
            "elbo": weighted_mean(log_px - kl, weights),
            "kl": weighted_mean(kl, weights),
            "log_likelihood": weighted_mean(log_px, weights),
        }
        return loss, (metrics, dict(model_state or {}))

    def predict_fn(self, variables: dict, batch: dict[str, Any]) -> dict[str, jax.Array]:
        """:meth:`bounds` with the fixed ``eval_seed`` key (static shapes)."""
        return self.bounds(variables, batch_images(batch), jax.random.PRNGKey(self.eval_seed))

    def make_evaluator(self) -> VAEEvaluator:
        """A fresh :class:`VAEEvaluator`."""
        return VAEEvaluator(with_iwae=bool(self.iwae_samples))


class VAEEvaluator(MeanAccumulator):
    """``result()``: ``elbo_nats``, ``kl_nats``, ``log_likelihood_nats``, ``iwae_nats`` (when
    computed), ``bits_per_dim`` (``-elbo / (pixels * ln 2)``) and ``num_examples``."""

    def __init__(self, with_iwae: bool = True):
        keys = ("elbo", "kl", "log_likelihood") + (("iwae",) if with_iwae else ())
        super().__init__(keys)

    def result(self) -> dict[str, float]:
        """Means over the valid examples seen (NaN when empty)."""
        means = self.means()
        out = {f"{k}_nats": v for k, v in means.items()}
        out["bits_per_dim"] = -means["elbo"] / (max(self.pixels_per_example, 1) * np.log(2.0))
        out["num_examples"] = float(self._count)
        return out


def task_from_config(config: Any, model: nn.Module) -> VAETask:
    """The task of ``config.task == "vae"`` around ``model``: its :class:`VAESettings` from
    ``config.unsupervised``, the pixel normalisation of ``config.data.name``, ``config.seed``
    as the evaluation key."""
    settings = unsupervised_settings(VAESettings, config)
    return VAETask(model, settings, **pixel_normalisation(config), eval_seed=config.get("seed", 0))
