"""The deterministic autoencoder as a ``Task``: reconstruction loss, MSE evaluation.

:class:`AutoencoderTask` trains :class:`jaxcv.models.autoencoder.Autoencoder` with the MSE (or
per-pixel binary cross-entropy on logits) between the reconstruction and the ``[0, 1]`` pixel
target (:mod:`jaxcv.tasks.reconstruction` explains the pixel space); its evaluator reports the
``mse`` per pixel. :func:`task_from_config` builds it for ``config.task == "autoencoder"`` with
its :class:`AutoencoderSettings` from ``config.unsupervised`` and the pixel normalisation of
``config.data.name``. The VAE is :mod:`jaxcv.tasks.vae`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcv.ops.losses import sigmoid_binary_cross_entropy
from jaxcv.tasks.inputs import batch_images
from jaxcv.tasks.reconstruction import (
    AutoencoderSettings,
    MeanAccumulator,
    PixelSpace,
    example_weights,
    pixel_normalisation,
    unsupervised_settings,
    weighted_mean,
)
from jaxcv.tasks.settings import replace_settings

__all__ = [
    "AutoencoderEvaluator",
    "AutoencoderSettings",
    "AutoencoderTask",
    "task_from_config",
]


class AutoencoderTask(PixelSpace):
    """The ``Task`` protocol for :class:`jaxcv.models.autoencoder.Autoencoder`.

    Args:
      model: an autoencoder returning ``{'latent', 'reconstruction'}``.
      settings: :class:`AutoencoderSettings` (default: the class defaults).
      pixel_mean, pixel_std: the pipeline's per-channel normalisation (``C`` values each).
      **overrides: fields of :class:`AutoencoderSettings` replacing those of ``settings``.
    """

    def __init__(
        self,
        model: nn.Module,
        settings: AutoencoderSettings | None = None,
        *,
        pixel_mean=(0.0,),
        pixel_std=(1.0,),
        **overrides: Any,
    ):
        self.settings = replace_settings(settings or AutoencoderSettings(), overrides)
        s = self.settings
        super().__init__(pixel_mean, pixel_std, s.binarize, s.binarize_threshold)
        self.model = model
        self.loss = s.loss

    def init_variables(self, rng: jax.Array, batch: dict[str, Any]) -> dict:
        """``{'params': ...}`` from ``batch['image'] (B, H, W, C)``."""
        return dict(self.model.init(rng, batch_images(batch), train=False))

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
        images = batch_images(batch)
        out, targets = self._forward({"params": params, **(model_state or {})}, images)
        recon = out["reconstruction"]
        weights = example_weights(batch, images.shape[0])
        if self.loss == "bce":
            per_image = jnp.mean(
                sigmoid_binary_cross_entropy(recon, targets, reduction="none"), axis=(1, 2, 3)
            )
            recon = jax.nn.sigmoid(recon)
        mse = weighted_mean(jnp.mean((recon - targets) ** 2, axis=(1, 2, 3)), weights)
        loss = mse if self.loss == "mse" else weighted_mean(per_image, weights)
        return loss, ({"loss": loss, "mse": mse}, dict(model_state or {}))

    def predict_fn(self, variables: dict, batch: dict[str, Any]) -> dict[str, jax.Array]:
        """``latent (B, D)``, ``reconstruction (B, H, W, C)`` in pixel units, ``target`` (the
        ``[0, 1]`` pixels) and ``squared_error (B,)`` (summed over pixels)."""
        out, targets = self._forward(variables, batch_images(batch))
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


class AutoencoderEvaluator(MeanAccumulator):
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


def task_from_config(config: Any, model: nn.Module) -> AutoencoderTask:
    """The task of ``config.task == "autoencoder"`` around ``model``: its
    :class:`AutoencoderSettings` from ``config.unsupervised``, the pixel normalisation of
    ``config.data.name``."""
    settings = unsupervised_settings(AutoencoderSettings, config)
    return AutoencoderTask(model, settings, **pixel_normalisation(config))
