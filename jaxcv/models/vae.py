"""The variational autoencoder (Kingma & Welling, 2014): Gaussian encoder, sampled latent.

The encoder (the :class:`jaxcv.models.autoencoder.Encoder` of ``architecture``, with
``2 * latent_dim`` outputs) gives the mean and log-variance of the diagonal Gaussian
``q(z | x)``; a latent is drawn with the reparameterisation trick ``z = mean + exp(logvar / 2) *
eps``, ``eps ~ N(0, I)`` (so gradients flow through ``mean`` and ``logvar``); the decoder maps
``z`` to the parameters of ``p(x | z)``: Bernoulli logits or Gaussian means per pixel (the
likelihood itself lives in :mod:`jaxcv.tasks.likelihood`). The prior is ``N(0, I)``.

Contract::

    out = model.apply(variables, images, rngs={"sample": key})
    out["mean"], out["logvar"], out["z"]   (B, D)
    out["logits"]                          (B, H, W, C)  decoder output at ``z``
    mean, logvar = model.apply(variables, images, method="encode")
    logits = model.apply(variables, z, method="decode")      # z (..., D) -> (..., H, W, C)

Randomness is explicit: the ``sample`` rng stream, or ``eps`` passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcv.models.autoencoder import (
    ARCHITECTURES,
    Decoder,
    Encoder,
    _check_image_shape,
    _conv_bottleneck,
)

Dtype = Any
SAMPLE_RNG = "sample"


def reparameterize(mean: jax.Array, logvar: jax.Array, eps: jax.Array) -> jax.Array:
    """``z = mean + exp(logvar / 2) * eps``.

    Args:
      mean: ``(..., D)``.
      logvar: ``(..., D)``.
      eps: standard-normal noise broadcasting against them, e.g. ``(K, B, D)`` for ``K``
        samples per example.

    Returns:
      ``z`` with the broadcast shape.
    """
    if mean.shape != logvar.shape:
        raise ValueError(
            f"mean and logvar must have the same shape; got {mean.shape} and {logvar.shape}"
        )
    if eps.shape[-mean.ndim :] != mean.shape:
        raise ValueError(f"eps must end in the shape of mean {mean.shape}; got {eps.shape}")
    return mean + jnp.exp(0.5 * logvar) * eps


class VAE(nn.Module):
    """Variational autoencoder (see the module docstring).

    Attributes:
      latent_dim: ``D``.
      image_shape: ``(H, W, C)``.
      architecture: ``"mlp"`` or ``"conv"`` (``"linear"`` is allowed too) for encoder and
        decoder.
      hidden_units: MLP widths; channels: conv widths (the decoder mirrors them).
      logvar_clip: the encoder's log-variance is clipped to ``[-clip, clip]`` for stability.
      dtype: compute dtype; parameters float32.
    """

    latent_dim: int = 8
    image_shape: Sequence[int] = (8, 8, 1)
    architecture: str = "mlp"
    hidden_units: Sequence[int] = (256, 128)
    channels: Sequence[int] = (32, 64)
    logvar_clip: float = 10.0
    dtype: Dtype = jnp.float32

    def setup(self) -> None:
        if not isinstance(self.latent_dim, int) or self.latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive int; got {self.latent_dim!r}")
        if len(tuple(self.image_shape)) != 3:
            raise ValueError(f"image_shape must be (H, W, C); got {self.image_shape!r}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"unknown architecture {self.architecture!r}; valid: {list(ARCHITECTURES)}"
            )
        if self.architecture == "conv":
            _conv_bottleneck(self.image_shape, len(self.channels))
        shared = {
            "architecture": self.architecture,
            "hidden_units": tuple(self.hidden_units),
            "channels": tuple(self.channels),
            "dtype": self.dtype,
        }
        self.encoder = Encoder(2 * self.latent_dim, **shared)
        self.decoder = Decoder(tuple(self.image_shape), **shared)

    def encode(self, images: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        """``(B, H, W, C)`` images -> ``(mean (B, D), logvar (B, D))`` of ``q(z | x)``."""
        _check_image_shape(images, self.image_shape)
        stats = self.encoder(images)
        mean, logvar = jnp.split(stats, 2, axis=-1)
        return mean, jnp.clip(logvar, -self.logvar_clip, self.logvar_clip)

    def decode(self, z: jnp.ndarray) -> jnp.ndarray:
        """Latents ``(..., D)`` (any leading dims) -> decoder outputs ``(..., H, W, C)``."""
        if z.ndim < 2 or z.shape[-1] != self.latent_dim:
            raise ValueError(
                f"latents must have shape (..., B, {self.latent_dim}); got shape {tuple(z.shape)}"
            )
        lead = z.shape[:-1]
        x = self.decoder(z.reshape(-1, self.latent_dim))
        return x.reshape(*lead, *x.shape[1:])

    def __call__(
        self, images: jnp.ndarray, train: bool = False, eps: jnp.ndarray | None = None
    ) -> dict[str, jnp.ndarray]:
        """Encode, sample one latent per image and decode it.

        Args:
          images: ``(B, H, W, C)``.
          train: accepted for the common model signature (no train-only layers).
          eps: optional ``(B, D)`` standard-normal noise; default drawn from the ``sample``
            rng stream.

        Returns:
          ``{'mean', 'logvar', 'z'}`` ``(B, D)`` and ``'logits'`` ``(B, H, W, C)``, float32.
        """
        del train
        mean, logvar = self.encode(images)
        if eps is None:
            eps = jax.random.normal(self.make_rng(SAMPLE_RNG), mean.shape, jnp.float32)
        z = reparameterize(mean, logvar, eps)
        return {"mean": mean, "logvar": logvar, "z": z, "logits": self.decode(z)}
