"""What the autoencoder and VAE tasks share: pixel space, batch weights, per-example means.

Pixels. The pipeline gives images normalised as ``(p - mean) / std`` with ``p`` in ``[0, 1]``.
Both tasks (:mod:`jaxcv.tasks.autoencoder`, :mod:`jaxcv.tasks.vae`) undo that with the
dataset's ``mean``/``std`` (``jaxcv.data.DATASETS[name]``, :func:`pixel_normalisation`):
``p = clip(image * std + mean, 0, 1)``; the reconstruction targets are these ``[0, 1]`` pixels
(thresholded at ``binarize_threshold`` with ``binarize=True``), and the model input is the
target renormalised, ``(target - mean) / std``. MSE figures are therefore in ``[0, 1]`` pixel
units, and a binarised VAE's ELBO is a bound on a proper discrete log-likelihood, in nats per
image.

Both tasks read ``config.unsupervised``, a section they share with each other and with the
unsupervised studies (:data:`STUDY_KEYS`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxcv import types
from jaxcv.tasks import likelihood as lk
from jaxcv.tasks.inputs import batch_images
from jaxcv.tasks.settings import settings_from_config

__all__ = [
    "AE_LOSSES",
    "STUDY_KEYS",
    "AutoencoderSettings",
    "MeanAccumulator",
    "PixelSpace",
    "VAESettings",
    "example_weights",
    "pixel_normalisation",
    "unsupervised_settings",
    "weighted_mean",
]

#: Keys of ``config.unsupervised`` that jaxcv/studies/autoencoders.py and jaxcv/studies/vae.py
#: read (the tasks skip them; any other key that is no task setting is rejected).
STUDY_KEYS = (
    "cluster_latent_dim",
    "finetune_seeds",
    "finetune_steps",
    "head_units",
    "iwae_ks",
    "label_fractions",
    "latent_sizes",
    "linear_optimizer",
    "linear_steps",
    "num_interpolations",
    "pretrain_latent_dim",
    "scatter_latent_dim",
)

T = TypeVar("T")


AE_LOSSES = ("mse", "bce")


@dataclasses.dataclass(frozen=True)
class AutoencoderSettings:
    """Hyperparameters of :class:`AutoencoderTask`, from ``config.unsupervised``.

    Attributes:
      loss: ``"mse"`` (squared error to the ``[0, 1]`` pixels) or ``"bce"`` (the model's
        reconstruction read as logits: use ``output_activation="identity"``).
      binarize, binarize_threshold: targets ``pixels > threshold`` instead of grey levels.
    """

    loss: str = "mse"
    binarize: bool = False
    binarize_threshold: float = 0.5

    def __post_init__(self):
        if self.loss not in AE_LOSSES:
            raise ValueError(f"unknown autoencoder loss {self.loss!r}; valid: {list(AE_LOSSES)}")


@dataclasses.dataclass(frozen=True)
class VAESettings:
    """Hyperparameters of :class:`VAETask`, from ``config.unsupervised``.

    Attributes:
      likelihood: ``"bernoulli"`` (decoder logits) or ``"gaussian"`` (decoder means, fixed
        ``decoder_std``).
      decoder_std: the Gaussian decoder's standard deviation.
      beta: weight of the KL term in the training loss (``1`` = the ELBO; evaluation always
        reports the beta = 1 ELBO).
      binarize, binarize_threshold: model binary pixels ``pixels > threshold``.
      iwae_samples: ``K`` importance samples for ``iwae_nats`` in ``predict_fn`` (0: skip).
      iwae_chunk: samples decoded at once (bounds memory; must divide ``iwae_samples``).
    """

    likelihood: str = "bernoulli"
    decoder_std: float = 0.1
    beta: float = 1.0
    binarize: bool = True
    binarize_threshold: float = 0.5
    iwae_samples: int = 0
    iwae_chunk: int = 100

    def __post_init__(self):
        if self.likelihood not in lk.LIKELIHOODS:
            raise ValueError(
                f"unknown likelihood {self.likelihood!r}; valid: {list(lk.LIKELIHOODS)}"
            )
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0; got {self.beta}")
        k, chunk = self.iwae_samples, self.iwae_chunk
        if k < 0 or (k and k % min(chunk, k)):
            raise ValueError(f"iwae_samples={k} must be >= 0 and a multiple of iwae_chunk={chunk}")


def unsupervised_settings(settings_class: type[T], config: Any) -> T:
    """``settings_class`` (:class:`AutoencoderSettings` or :class:`VAESettings`) from
    ``config.unsupervised``, skipping the other task's keys and :data:`STUDY_KEYS`."""
    shared = {f.name for cls in (AutoencoderSettings, VAESettings) for f in dataclasses.fields(cls)}
    return settings_from_config(
        settings_class, config, "unsupervised", shared=shared | set(STUDY_KEYS)
    )


def example_weights(batch: dict[str, Any], size: int) -> jax.Array:
    """``(B,)`` float32: 0 for padded examples (``example_valid``), else 1."""
    if types.EXAMPLE_VALID in batch:
        return batch[types.EXAMPLE_VALID].astype(jnp.float32)
    return jnp.ones((size,), jnp.float32)


def weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    """``sum(values * weights) / max(sum(weights), 1)`` for ``(B,)`` arrays."""
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def pixel_normalisation(config: Any) -> dict[str, tuple[float, ...]]:
    """``{"pixel_mean", "pixel_std"}`` of the dataset ``config.data.name``."""
    from jaxcv.data import DATASETS

    name = config.data.name
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}")
    spec = DATASETS[name]
    return {"pixel_mean": tuple(spec.mean), "pixel_std": tuple(spec.std)}


class PixelSpace:
    """Maps normalised images to ``[0, 1]`` targets and back (see the module docstring).

    Args:
      pixel_mean, pixel_std: the pipeline's per-channel normalisation (``C`` values each).
      binarize, threshold: targets ``pixels > threshold`` instead of grey levels.
    """

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


class MeanAccumulator:
    """Float64 sums of per-example outputs ``(B,)`` over the valid examples of a pass.

    Args:
      keys: the output keys summed.
    """

    def __init__(self, keys: tuple[str, ...]):
        self._keys = keys
        self._sums = dict.fromkeys(keys, 0.0)
        self._count = 0
        self.pixels_per_example = 0

    def update(self, batch: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
        """Add the valid rows of ``outputs[key] (B,)`` for every key."""
        images = batch_images(batch, np)
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
        """``{key: mean over the valid examples}`` (NaN when none)."""
        n = self._count
        return {k: (s / n if n else float("nan")) for k, s in self._sums.items()}
