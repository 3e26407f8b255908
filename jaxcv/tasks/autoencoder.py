"""Unsupervised tasks: a deterministic autoencoder and a VAE (the ``Task`` protocol).

Pixels. The pipeline gives images normalised as ``(p - mean) / std`` with ``p`` in ``[0, 1]``.
Both tasks undo that with the dataset's ``mean``/``std`` (``jaxcv.data.DATASETS[name]``):
``p = clip(image * std + mean, 0, 1)``; the reconstruction targets are these ``[0, 1]`` pixels
(thresholded at ``binarize_threshold`` for a VAE with ``binarize=True``), and the model input
is the target renormalised, ``(target - mean) / std``. MSE figures are therefore in ``[0, 1]``
pixel units, and a binarised VAE's ELBO is a bound on a proper discrete log-likelihood, in nats
per image.

:class:`AutoencoderTask`: MSE (or per-pixel binary cross-entropy on logits) between the
reconstruction and the target; evaluator: ``mse`` per pixel. :class:`VAETask`: loss
``-(log p(x | z) - beta * KL)`` with one reparameterised sample; evaluator: ``elbo_nats``
(beta = 1, closed-form KL), ``iwae_nats`` (``iwae_samples`` importance samples), ``kl_nats``,
``log_likelihood_nats``, means over test images.

Constructors ``(config, model) -> Task`` for ``jaxcv.train.runtime.TASKS``:
:func:`make_autoencoder_task` and :func:`make_vae_task` read ``config.data.name`` and the
optional section ``config.unsupervised`` (keys ``loss``, ``beta``, ``likelihood``,
``decoder_std``, ``binarize``, ``binarize_threshold``, ``iwae_samples``, ``iwae_chunk``).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcv import types
from jaxcv.ops.losses import sigmoid_binary_cross_entropy
from jaxcv.tasks import likelihood as lk

__all__ = [
    "TASK_KEYS",
    "AutoencoderEvaluator",
    "AutoencoderTask",
    "VAEEvaluator",
    "VAETask",
    "make_autoencoder_task",
    "make_vae_task",
]

AE_LOSSES = ("mse", "bce")
TASK_KEYS = {"autoencoder": ("image", "label"), "vae": ("image", "label")}


def _images(batch: dict[str, Any]) -> jax.Array:
    images = batch[types.IMAGE]
    if images.ndim != 4:
        raise ValueError(f"batch['image'] must be (B, H, W, C); got shape {images.shape}")
    return images


def _weights(batch: dict[str, Any], size: int) -> jax.Array:
    if types.EXAMPLE_VALID in batch:
        return batch[types.EXAMPLE_VALID].astype(jnp.float32)
    return jnp.ones((size,), jnp.float32)


def _weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


class _PixelSpace:
    """Maps normalised images to ``[0, 1]`` targets and back (see the module docstring)."""

    def __init__(self, pixel_mean, pixel_std, binarize: bool, threshold: float):
        self.pixel_mean = np.asarray(pixel_mean, np.float32).reshape(-1)
        self.pixel_std = np.asarray(pixel_std, np.float32).reshape(-1)
        if np.any(self.pixel_std <= 0):
            raise ValueError(f"pixel_std must be > 0; got {self.pixel_std}")
        self.binarize = bool(binarize)
        self.threshold = float(threshold)

    def targets(self, images: jax.Array) -> jax.Array:
        """``(B, H, W, C)`` normalised images -> ``[0, 1]`` (or binary) targets."""
        pixels = jnp.clip(images.astype(jnp.float32) * self.pixel_std + self.pixel_mean, 0, 1)
        if self.binarize:
            pixels = (pixels > self.threshold).astype(jnp.float32)
        return pixels

    def normalise(self, pixels: jax.Array) -> jax.Array:
        """``[0, 1]`` pixels -> the pipeline's normalisation (the model input)."""
        return (pixels - self.pixel_mean) / self.pixel_std


class AutoencoderTask(_PixelSpace):
    """The ``Task`` protocol for :class:`jaxcv.models.autoencoder.Autoencoder`.

    Args:
      model: an autoencoder returning ``{'latent', 'reconstruction'}``.
      pixel_mean, pixel_std: the pipeline's per-channel normalisation (``C`` values each).
      loss: ``"mse"`` (squared error to the ``[0, 1]`` pixels) or ``"bce"`` (the model's
        reconstruction read as logits: use ``output_activation="identity"``).
      binarize, binarize_threshold: targets ``pixels > threshold`` instead of grey levels.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        pixel_mean=(0.0,),
        pixel_std=(1.0,),
        loss: str = "mse",
        binarize: bool = False,
        binarize_threshold: float = 0.5,
    ):
        if loss not in AE_LOSSES:
            raise ValueError(f"unknown autoencoder loss {loss!r}; valid: {list(AE_LOSSES)}")
        super().__init__(pixel_mean, pixel_std, binarize, binarize_threshold)
        self.model = model
        self.loss = loss

    def init_variables(self, rng: jax.Array, batch: dict[str, Any]) -> dict:
        """``{'params': ...}`` from ``batch['image'] (B, H, W, C)``."""
        return dict(self.model.init(rng, jnp.asarray(_images(batch)), train=False))

    def _forward(self, variables, images):
        targets = self.targets(images)
        out = self.model.apply(variables, self.normalise(targets), train=False)
        recon = out["reconstruction"]
        if recon.shape != targets.shape:
            raise ValueError(
                f"reconstruction shape {recon.shape} differs from the images' {targets.shape}"
            )
        return out, targets

    def loss_fn(self, params, model_state, batch, rng, *, train: bool = True):
        """Mean reconstruction loss per pixel of ``batch['image'] (B, H, W, C)``.

        Returns:
          ``(loss, ({'loss', 'mse'}, model_state))``; ``mse`` is per pixel in ``[0, 1]`` units
          (for ``loss="bce"`` computed on ``sigmoid(logits)``).
        """
        del rng, train
        images = _images(batch)
        out, targets = self._forward({"params": params, **(model_state or {})}, images)
        recon = out["reconstruction"]
        weights = _weights(batch, images.shape[0])
        if self.loss == "bce":
            per_image = jnp.mean(
                sigmoid_binary_cross_entropy(recon, targets, reduction="none"), axis=(1, 2, 3)
            )
            recon = jax.nn.sigmoid(recon)
        mse = _weighted_mean(jnp.mean((recon - targets) ** 2, axis=(1, 2, 3)), weights)
        loss = mse if self.loss == "mse" else _weighted_mean(per_image, weights)
        return loss, ({"loss": loss, "mse": mse}, dict(model_state or {}))

    def predict_fn(self, variables: dict, batch: dict[str, Any]) -> dict[str, jax.Array]:
        """``latent (B, D)``, ``reconstruction (B, H, W, C)`` in pixel units, ``target`` (the
        ``[0, 1]`` pixels) and ``squared_error (B,)`` (summed over pixels)."""
        out, targets = self._forward(variables, _images(batch))
        recon = out["reconstruction"]
        if self.loss == "bce":
            recon = jax.nn.sigmoid(recon)
        return {
            "latent": out["latent"],
            "reconstruction": recon,
            "target": targets,
            "squared_error": jnp.sum((recon - targets) ** 2, axis=(1, 2, 3)),
        }

    def make_evaluator(self) -> AutoencoderEvaluator:
        """A fresh :class:`AutoencoderEvaluator`."""
        return AutoencoderEvaluator()


class _MeanAccumulator:
    """Float64 sums of per-example outputs over valid examples."""

    def __init__(self, keys: tuple[str, ...]):
        self._keys = keys
        self._sums = dict.fromkeys(keys, 0.0)
        self._count = 0
        self.pixels_per_example = 0

    def update(self, batch: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
        """Add the valid rows of ``outputs[key] (B,)`` for every key."""
        images = np.asarray(batch[types.IMAGE])
        if images.ndim != 4:
            raise ValueError(f"batch['image'] must be (B, H, W, C); got shape {images.shape}")
        keep = np.ones(images.shape[0], bool)
        keep = np.asarray(batch.get(types.EXAMPLE_VALID, keep)).astype(bool)
        self.pixels_per_example = int(np.prod(images.shape[1:]))
        for key in self._keys:
            values = np.asarray(outputs[key], np.float64)
            if values.shape != keep.shape:
                raise ValueError(f"outputs[{key!r}] must be {keep.shape}; got {values.shape}")
            self._sums[key] += float(values[keep].sum())
        self._count += int(keep.sum())

    def means(self) -> dict[str, float]:
        n = self._count
        return {k: (s / n if n else float("nan")) for k, s in self._sums.items()}


class AutoencoderEvaluator(_MeanAccumulator):
    """``result()``: ``mse`` (mean squared error per pixel) and ``num_examples``."""

    def __init__(self):
        super().__init__(("squared_error",))

    def result(self) -> dict[str, float]:
        """``{'mse', 'num_examples'}``; NaN when empty."""
        per_image = self.means()["squared_error"]
        return {
            "mse": per_image / max(self.pixels_per_example, 1),
            "num_examples": float(self._count),
        }


class VAETask(_PixelSpace):
    """The ``Task`` protocol for :class:`jaxcv.models.vae.VAE`.

    Args:
      model: a VAE (``encode``, ``decode``, ``__call__`` with the ``sample`` rng).
      pixel_mean, pixel_std: the pipeline's normalisation.
      likelihood: ``"bernoulli"`` (decoder logits) or ``"gaussian"`` (decoder means, fixed
        ``decoder_std``).
      beta: weight of the KL term in the training loss (``1`` = the ELBO; evaluation always
        reports the beta = 1 ELBO).
      binarize, binarize_threshold: model binary pixels ``pixels > threshold``.
      iwae_samples: ``K`` importance samples for ``iwae_nats`` in ``predict_fn`` (0: skip).
      iwae_chunk: samples decoded at once (bounds memory; must divide ``iwae_samples``).
      eval_seed: the fixed key of ``predict_fn``'s samples (one key per call; examples in a
        batch get independent samples).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        pixel_mean=(0.0,),
        pixel_std=(1.0,),
        likelihood: str = "bernoulli",
        decoder_std: float = 0.1,
        beta: float = 1.0,
        binarize: bool = True,
        binarize_threshold: float = 0.5,
        iwae_samples: int = 0,
        iwae_chunk: int = 100,
        eval_seed: int = 0,
    ):
        if likelihood not in lk.LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; valid: {list(lk.LIKELIHOODS)}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0; got {beta}")
        if iwae_samples < 0 or (iwae_samples and iwae_samples % min(iwae_chunk, iwae_samples)):
            raise ValueError(
                f"iwae_samples={iwae_samples} must be >= 0 and a multiple of iwae_chunk="
                f"{iwae_chunk}"
            )
        super().__init__(pixel_mean, pixel_std, binarize, binarize_threshold)
        self.model = model
        self.likelihood = likelihood
        self.decoder_std = float(decoder_std)
        self.beta = float(beta)
        self.iwae_samples = int(iwae_samples)
        self.iwae_chunk = min(int(iwae_chunk), max(self.iwae_samples, 1))
        self.eval_seed = int(eval_seed)

    def init_variables(self, rng: jax.Array, batch: dict[str, Any]) -> dict:
        """``{'params': ...}`` from ``batch['image'] (B, H, W, C)``."""
        params_rng, sample_rng = jax.random.split(rng)
        images = jnp.asarray(_images(batch))
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
        images = _images(batch)
        targets = self.targets(images)
        out = self.model.apply(
            {"params": params, **(model_state or {})},
            self.normalise(targets),
            rngs={"sample": rng},
        )
        log_px = self.log_likelihood(out["logits"], targets)
        kl = lk.kl_standard_normal(out["mean"], out["logvar"])
        weights = _weights(batch, images.shape[0])
        loss = _weighted_mean(-(log_px - self.beta * kl), weights)
        metrics = {
            "loss": loss,
            "elbo": _weighted_mean(log_px - kl, weights),
            "kl": _weighted_mean(kl, weights),
            "log_likelihood": _weighted_mean(log_px, weights),
        }
        return loss, (metrics, dict(model_state or {}))

    def predict_fn(self, variables: dict, batch: dict[str, Any]) -> dict[str, jax.Array]:
        """:meth:`bounds` with the fixed ``eval_seed`` key (static shapes)."""
        return self.bounds(variables, _images(batch), jax.random.PRNGKey(self.eval_seed))

    def make_evaluator(self) -> VAEEvaluator:
        """A fresh :class:`VAEEvaluator`."""
        return VAEEvaluator(with_iwae=bool(self.iwae_samples))


class VAEEvaluator(_MeanAccumulator):
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


def _options(config) -> dict[str, Any]:
    section = config.get("unsupervised") if hasattr(config, "get") else None
    return dict(section.to_dict() if hasattr(section, "to_dict") else section or {})


def _normalisation(config) -> dict[str, Any]:
    from jaxcv.data import DATASETS

    name = config.data.name
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}")
    spec = DATASETS[name]
    return {"pixel_mean": tuple(spec.mean), "pixel_std": tuple(spec.std)}


def make_autoencoder_task(config, model: nn.Module) -> AutoencoderTask:
    """``(config, model) -> AutoencoderTask`` (reads ``config.unsupervised.loss``,
    ``binarize``, ``binarize_threshold``; pixel normalisation from ``config.data.name``)."""
    opts = _options(config)
    return AutoencoderTask(
        model,
        **_normalisation(config),
        loss=opts.get("loss", "mse"),
        binarize=opts.get("binarize", False),
        binarize_threshold=opts.get("binarize_threshold", 0.5),
    )


def make_vae_task(config, model: nn.Module) -> VAETask:
    """``(config, model) -> VAETask`` (reads ``config.unsupervised.likelihood``,
    ``decoder_std``, ``beta``, ``binarize``, ``binarize_threshold``, ``iwae_samples``,
    ``iwae_chunk``; pixel normalisation from ``config.data.name``)."""
    opts = _options(config)
    return VAETask(
        model,
        **_normalisation(config),
        likelihood=opts.get("likelihood", "bernoulli"),
        decoder_std=opts.get("decoder_std", 0.1),
        beta=opts.get("beta", 1.0),
        binarize=opts.get("binarize", True),
        binarize_threshold=opts.get("binarize_threshold", 0.5),
        iwae_samples=opts.get("iwae_samples", 0),
        iwae_chunk=opts.get("iwae_chunk", 100),
        eval_seed=config.get("seed", 0),
    )
