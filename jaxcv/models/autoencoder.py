"""Autoencoders: linear, MLP and convolutional, plus a classifier on their encoder.

Every autoencoder has an ``encoder`` submodule mapping images ``(B, H, W, C)`` to latents
``(B, D)`` and a ``decoder`` submodule mapping latents back to images ``(B, H, W, C)``, so the
parameter tree is ``{'encoder': ..., 'decoder': ...}``. :class:`EncoderClassifier` holds the
same encoder under the same name plus a ``head``, so a pre-trained ``params['encoder']`` can be
copied into it for fine-tuning.

Contract::

    out = model.apply(variables, images, train=False)
    out["latent"]          (B, D)        the code
    out["reconstruction"]  (B, H, W, C)  the decoder output (identity or sigmoid activation)
    z = model.apply(variables, images, method="encode")          # (B, D)
    x = model.apply(variables, z, method="decode")               # (B, H, W, C)

The decoder needs the image shape up front (``image_shape``), so :meth:`decode` works from a
latent alone (sampling, interpolation). The convolutional decoder upsamples with transposed
convolutions (stride 2, ``'SAME'``: exactly ``2x`` per stage). None of these models has
BatchNorm or dropout: ``model_state`` is empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcv.models.layers import check_images

Dtype = Any
ARCHITECTURES = ("linear", "mlp", "conv")
OUTPUT_ACTIVATIONS = ("identity", "sigmoid")


def _check_latent(z: Any, latent_dim: int) -> None:
    shape = tuple(getattr(z, "shape", ()))
    if len(shape) != 2 or shape[1] != latent_dim:
        raise ValueError(f"latents must have shape (B, {latent_dim}); got shape {shape}")


def _check_image_shape(images: Any, image_shape: Sequence[int]) -> None:
    check_images(images)
    if tuple(images.shape[1:]) != tuple(image_shape):
        raise ValueError(
            f"images must have shape (B, {', '.join(map(str, image_shape))}) (the model's "
            f"image_shape); got shape {tuple(images.shape)}"
        )


def _conv_bottleneck(image_shape: Sequence[int], stages: int) -> tuple[int, int]:
    h, w = int(image_shape[0]), int(image_shape[1])
    factor = 2**stages
    if h % factor or w % factor:
        raise ValueError(
            f"the conv autoencoder halves the image {stages} times; image_shape "
            f"{tuple(image_shape)} must have H and W divisible by {factor}"
        )
    return h // factor, w // factor


class Encoder(nn.Module):
    """Images ``(B, H, W, C)`` -> features ``(B, latent_dim)``.

    Attributes:
      latent_dim: output width ``D``.
      architecture: ``"linear"`` (flatten, one Dense), ``"mlp"`` (flatten, ReLU Dense layers of
        ``hidden_units``, Dense) or ``"conv"`` (per width in ``channels``: a 3x3 stride-2 conv +
        ReLU; then flatten and Dense).
      hidden_units: MLP widths; channels: conv widths.
      dtype: compute dtype (parameters are float32).
    """

    latent_dim: int
    architecture: str = "mlp"
    hidden_units: Sequence[int] = (256, 128)
    channels: Sequence[int] = (32, 64)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
        """``(B, H, W, C)`` float images -> ``(B, latent_dim)`` float32."""
        check_images(images)
        x = images.astype(self.dtype)
        if self.architecture == "conv":
            for i, width in enumerate(self.channels):
                x = nn.relu(
                    nn.Conv(
                        width,
                        (3, 3),
                        strides=(2, 2),
                        padding="SAME",
                        dtype=self.dtype,
                        name=f"conv{i}",
                    )(x)
                )
        elif self.architecture not in ("linear", "mlp"):
            raise ValueError(
                f"unknown architecture {self.architecture!r}; valid: {list(ARCHITECTURES)}"
            )
        x = x.reshape(x.shape[0], -1)
        if self.architecture == "mlp":
            for i, width in enumerate(self.hidden_units):
                x = nn.relu(nn.Dense(width, dtype=self.dtype, name=f"fc{i}")(x))
        return nn.Dense(self.latent_dim, dtype=self.dtype, name="latent")(x).astype(jnp.float32)


class Decoder(nn.Module):
    """Latents ``(B, latent_dim)`` -> images ``(B, H, W, C)`` (pre-activation values).

    Attributes:
      image_shape: ``(H, W, C)`` of the output.
      architecture: ``"linear"`` (one Dense to ``H*W*C``), ``"mlp"`` (ReLU Dense layers of
        ``reversed(hidden_units)``, then Dense) or ``"conv"`` (Dense to the ``H/2^n x W/2^n x
        channels[-1]`` bottleneck, per width in ``reversed(channels)`` a 3x3 stride-2 transposed
        conv + ReLU, then a 3x3 conv to ``C``).
      hidden_units, channels: as in :class:`Encoder` (mirrored).
      dtype: compute dtype.
    """

    image_shape: Sequence[int]
    architecture: str = "mlp"
    hidden_units: Sequence[int] = (256, 128)
    channels: Sequence[int] = (32, 64)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z: jnp.ndarray) -> jnp.ndarray:
        """``(B, D)`` latents -> ``(B, H, W, C)`` float32 decoder outputs (logits / means)."""
        if z.ndim != 2:
            raise ValueError(f"latents must have shape (B, D); got shape {tuple(z.shape)}")
        h, w, c = (int(s) for s in self.image_shape)
        x = z.astype(self.dtype)
        if self.architecture == "conv":
            bh, bw = _conv_bottleneck(self.image_shape, len(self.channels))
            x = nn.relu(nn.Dense(bh * bw * self.channels[-1], dtype=self.dtype, name="fc")(x))
            x = x.reshape(x.shape[0], bh, bw, self.channels[-1])
            for i, width in enumerate(reversed(self.channels)):
                x = nn.relu(
                    nn.ConvTranspose(
                        width,
                        (3, 3),
                        strides=(2, 2),
                        padding="SAME",
                        dtype=self.dtype,
                        name=f"deconv{i}",
                    )(x)
                )
            x = nn.Conv(c, (3, 3), padding="SAME", dtype=self.dtype, name="out")(x)
        elif self.architecture in ("linear", "mlp"):
            if self.architecture == "mlp":
                for i, width in enumerate(reversed(self.hidden_units)):
                    x = nn.relu(nn.Dense(width, dtype=self.dtype, name=f"fc{i}")(x))
            x = nn.Dense(h * w * c, dtype=self.dtype, name="out")(x)
            x = x.reshape(x.shape[0], h, w, c)
        else:
            raise ValueError(
                f"unknown architecture {self.architecture!r}; valid: {list(ARCHITECTURES)}"
            )
        return x.astype(jnp.float32)


class Autoencoder(nn.Module):
    """A deterministic autoencoder (see the module docstring for the contract).

    Attributes:
      latent_dim: ``D``.
      image_shape: ``(H, W, C)`` of inputs and reconstructions.
      architecture: ``"linear"`` | ``"mlp"`` | ``"conv"`` (encoder and decoder alike; the
        linear autoencoder has no nonlinearity, so it spans a ``D``-dim affine subspace).
      hidden_units: MLP widths; channels: conv widths (encoder order; the decoder mirrors).
      output_activation: ``"identity"`` (e.g. MSE on pixels, and the linear AE) or
        ``"sigmoid"`` (reconstructions in ``(0, 1)``).
      dtype: compute dtype; parameters float32.
    """

    latent_dim: int = 8
    image_shape: Sequence[int] = (8, 8, 1)
    architecture: str = "conv"
    hidden_units: Sequence[int] = (256, 128)
    channels: Sequence[int] = (32, 64)
    output_activation: str = "identity"
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
        if self.output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(
                f"unknown output_activation {self.output_activation!r}; valid: "
                f"{list(OUTPUT_ACTIVATIONS)}"
            )
        if self.architecture == "conv":
            _conv_bottleneck(self.image_shape, len(self.channels))
        shared = {
            "architecture": self.architecture,
            "hidden_units": tuple(self.hidden_units),
            "channels": tuple(self.channels),
            "dtype": self.dtype,
        }
        self.encoder = Encoder(self.latent_dim, **shared)
        self.decoder = Decoder(tuple(self.image_shape), **shared)

    def encode(self, images: jnp.ndarray) -> jnp.ndarray:
        """``(B, H, W, C)`` images -> ``(B, D)`` latents."""
        _check_image_shape(images, self.image_shape)
        return self.encoder(images)

    def decode(self, z: jnp.ndarray) -> jnp.ndarray:
        """``(B, D)`` latents -> ``(B, H, W, C)`` reconstructions (after the activation)."""
        _check_latent(z, self.latent_dim)
        x = self.decoder(z)
        return nn.sigmoid(x) if self.output_activation == "sigmoid" else x

    def __call__(self, images: jnp.ndarray, train: bool = False) -> dict[str, jnp.ndarray]:
        """Encode and decode ``(B, H, W, C)`` images.

        Returns:
          ``{'latent': (B, D), 'reconstruction': (B, H, W, C)}`` float32 (``train`` is accepted
          for the common model signature; the model behaves the same in both modes).
        """
        del train
        z = self.encode(images)
        return {"latent": z, "reconstruction": self.decode(z)}


class EncoderClassifier(nn.Module):
    """An autoencoder's encoder followed by a classification head.

    The ``encoder`` submodule has the fields of :class:`Autoencoder`'s, so
    ``params['encoder']`` of a trained autoencoder of the same fields drops in.

    Attributes:
      num_classes: ``K``.
      latent_dim, architecture, hidden_units, channels, dtype: as in :class:`Autoencoder`.
      head_units: hidden ReLU widths of the head between the latent and the logits.
    """

    num_classes: int = 10
    latent_dim: int = 32
    architecture: str = "conv"
    hidden_units: Sequence[int] = (256, 128)
    channels: Sequence[int] = (32, 64)
    head_units: Sequence[int] = ()
    dtype: Dtype = jnp.float32

    def setup(self) -> None:
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive int; got {self.num_classes!r}")
        self.encoder = Encoder(
            self.latent_dim,
            architecture=self.architecture,
            hidden_units=tuple(self.hidden_units),
            channels=tuple(self.channels),
            dtype=self.dtype,
        )
        self.head = [nn.Dense(w, dtype=self.dtype) for w in self.head_units]
        self.logits = nn.Dense(self.num_classes, dtype=self.dtype)

    def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """``(B, H, W, C)`` images -> ``(B, num_classes)`` float32 logits."""
        del train
        x = self.encoder(images)
        for layer in self.head:
            x = nn.relu(layer(x))
        return self.logits(x).astype(jnp.float32)
