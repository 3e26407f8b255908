"""The per-pixel patch CNN: "run a CNN on a patch around every pixel, classify its centre".

The naive approach to semantic segmentation that FCNs replaced (Farabet et al. 2013, Pinheiro &
Collobert 2014, in spirit): a small classifier sees a ``P x P`` patch centred on a pixel and
predicts that pixel's class. Training uses a fixed number of sampled pixels per image (see
:class:`jaxcv.tasks.segmentation.PatchSegmentationTask`); dense prediction evaluates the patch
of *every* pixel, in fixed-size chunks (:func:`dense_predict`), which is what makes the method
expensive at test time: ``H W`` forward passes per image, with no computation shared between
overlapping patches.

Patches (:func:`extract_patches`): pixel ``(y, x)`` at scale ``s`` takes the ``P s x P s``
window whose middle ``s x s`` block contains ``(y, x)`` (from row
``y - (P // 2) s - (s - 1) // 2``; exactly centred for odd ``s``), average-pooled by ``s`` to
``P x P``; pixels outside the image are 0 (the normalised mean colour). Several scales
(``scales=(1, 2, 4)``) give a multi-scale input of growing context: the same conv trunk (shared
weights) encodes each scale, and the classifier sees the concatenated features.

The conv trunk is either the model's own ``channels`` stages (``conv1``, ``conv2``, ...) or, with
``stages``, the first stages of a VGG-style trunk under ``backbone`` (:class:`~jaxcv.models.
backbones.vgg.VGGBackbone`, optionally with BatchNorm): a classification run of a VGG with the
same first stages is then a ``model.init_from`` for it (:mod:`jaxcv.train.trunk`), the patch
CNN's pre-trained start.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcv.models.backbones.vgg import VGGBackbone
from jaxcv.models.layers import check_images, conv_kernel_init, max_pool, torch_linear_kernel_init

Dtype = Any


def _check_patch_args(patch_size: int, scales: Sequence[int]) -> None:
    if patch_size < 1 or patch_size % 2 == 0:
        raise ValueError(f"patch_size must be odd and >= 1; got {patch_size}")
    if not scales or any(int(s) < 1 for s in scales):
        raise ValueError(f"scales must be positive ints; got {tuple(scales)}")


def extract_patches(
    images: jax.Array, coords: jax.Array, patch_size: int, scales: Sequence[int] = (1,)
) -> jax.Array:
    """The multi-scale patches around pixels ``coords``.

    Args:
      images: ``(B, H, W, C)``.
      coords: ``(B, N, 2)`` int ``(y, x)`` pixel positions inside the image.
      patch_size: odd ``P``.
      scales: integer scales ``s``; scale ``s`` covers ``P s x P s`` pixels, average-pooled.

    Returns:
      ``(B, N, S, P, P, C)`` with ``S = len(scales)``, zeros outside the image.
    """
    check_images(images)
    _check_patch_args(patch_size, scales)
    if coords.ndim != 3 or coords.shape[0] != images.shape[0] or coords.shape[2] != 2:
        raise ValueError(
            f"coords must be (B={images.shape[0]}, N, 2) (y, x); got shape {coords.shape}"
        )
    b, _, _, c = images.shape
    p = patch_size
    coords = coords.astype(jnp.int32)
    out = []
    for s in (int(s) for s in scales):
        size = p * s
        before = (p // 2) * s + (s - 1) // 2  # rows above the pixel
        pad = size
        padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

        def crop(img, yx, size=size, before=before, pad=pad):
            start = (yx[0] - before + pad, yx[1] - before + pad, 0)
            return jax.lax.dynamic_slice(img, start, (size, size, c))

        windows = jax.vmap(lambda img, yxs, crop=crop: jax.vmap(lambda yx: crop(img, yx))(yxs))(
            padded, coords
        )  # (B, N, P s, P s, C)
        if s > 1:
            n = windows.shape[1]
            windows = windows.reshape(b, n, p, s, p, s, c).mean(axis=(3, 5))
        out.append(windows)
    return jnp.stack(out, axis=2)


class PatchCNN(nn.Module):
    """A small CNN classifying the centre pixel of (multi-scale) patches.

    ``apply(variables, images (B, H, W, C), coords (B, N, 2), train=bool, rngs={'dropout': key}
    when train)`` returns float32 logits ``(B, N, num_classes)`` of the pixels ``coords``
    (``(y, x)`` int). Without ``coords`` (``coords=None``) it classifies every pixel in one pass,
    ``(B, H, W, num_classes)``, which needs ``B H W`` patches in memory: use
    :func:`dense_predict` for chunked dense prediction.

    Attributes:
      num_classes: ``K`` classes, background included.
      patch_size: odd ``P`` (the receptive field at scale 1).
      scales: integer input scales (``(1,)``: single scale; ``(1, 2, 4)``: multi-scale).
      channels: widths of the ``3x3`` conv + ReLU + ``2x2`` max-pool stages (shared by scales).
      stages: instead of ``channels``, VGG conv widths per stage (``((16,), (32,), (64, 64))``):
        a :class:`VGGBackbone` named ``backbone``, its last pool classified (empty: ``channels``).
      batch_norm: BatchNorm after every conv of ``stages``.
      hidden_units: width of the hidden FC layer (0 for none).
      dropout_rate: dropout after the hidden layer.
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    num_classes: int = 21
    patch_size: int = 33
    scales: Sequence[int] = (1,)
    channels: Sequence[int] = (32, 64, 64)
    stages: Sequence[Sequence[int]] = ()
    batch_norm: bool = False
    hidden_units: int = 128
    dropout_rate: float = 0.3
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def classify(self, patches: jax.Array, train: bool = False) -> jax.Array:
        """Classify patches ``(N, S, P, P, C)`` (from :func:`extract_patches`) -> ``(N, K)``."""
        if patches.ndim != 5 or patches.shape[1] != len(self.scales):
            raise ValueError(
                f"patches must be (N, S={len(self.scales)}, P, P, C); got shape {patches.shape}"
            )
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive int; got {self.num_classes!r}")
        n, s, p, _, c = patches.shape
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        x = patches.reshape(n * s, p, p, c).astype(self.dtype)
        if self.stages:
            trunk = VGGBackbone(
                stages=tuple(tuple(w) for w in self.stages),
                batch_norm=self.batch_norm,
                name="backbone",
                **kw,
            )
            x = trunk(x, train)[f"pool{len(self.stages)}"]
        for i, width in enumerate(() if self.stages else self.channels, start=1):
            x = nn.Conv(
                width,
                (3, 3),
                padding=((1, 1), (1, 1)),
                kernel_init=conv_kernel_init,
                name=f"conv{i}",
                **kw,
            )(x)
            x = nn.relu(x)
            if min(x.shape[1:3]) >= 2:
                x = max_pool(x, 2, 2)
        x = x.reshape(n, -1)  # the S scales' features side by side
        dense = {"kernel_init": torch_linear_kernel_init, **kw}
        if self.hidden_units:
            x = nn.relu(nn.Dense(self.hidden_units, name="fc1", **dense)(x))
            x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
        return nn.Dense(self.num_classes, name="logits", **dense)(x).astype(jnp.float32)

    def __call__(
        self, images: jax.Array, coords: jax.Array | None = None, train: bool = False
    ) -> jax.Array:
        """Logits at ``coords (B, N, 2)`` -> ``(B, N, K)``; every pixel -> ``(B, H, W, K)``."""
        check_images(images)
        b, h, w, _ = images.shape
        dense = coords is None
        if dense:
            coords = jnp.broadcast_to(pixel_grid(h, w), (b, h * w, 2))
        patches = extract_patches(images, coords, self.patch_size, self.scales)
        n = patches.shape[1]
        logits = self.classify(patches.reshape(b * n, *patches.shape[2:]), train)
        logits = logits.reshape(b, n, -1)
        return logits.reshape(b, h, w, -1) if dense else logits


def pixel_grid(height: int, width: int) -> jax.Array:
    """All ``(y, x)`` pixel positions in row-major order: ``(H W, 2)`` int32."""
    ys, xs = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
    return jnp.stack([ys.ravel(), xs.ravel()], axis=-1).astype(jnp.int32)


def dense_predict(
    model: PatchCNN, variables: dict, images: jax.Array, chunk_size: int = 1024
) -> jax.Array:
    """Logits of every pixel's patch, evaluated ``chunk_size`` pixels at a time.

    Static shapes: the ``H W`` positions are padded to a multiple of ``chunk_size`` (repeating
    the last pixel) and ``jax.lax.map`` runs one chunk per iteration, so memory is bounded by
    ``B chunk_size`` patches and the function compiles once per image size; no Python loop
    over pixels.

    Args:
      model: a :class:`PatchCNN`.
      variables: its variables.
      images: ``(B, H, W, C)``.
      chunk_size: pixels per forward pass (per image).

    Returns:
      ``(B, H, W, K)`` float32 logits, equal to classifying each pixel's patch on its own.
    """
    check_images(images)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
    b, h, w, _ = images.shape
    grid = pixel_grid(h, w)
    chunk = min(chunk_size, h * w)
    num_chunks = -(-(h * w) // chunk)
    grid = jnp.concatenate([grid, jnp.broadcast_to(grid[-1], (num_chunks * chunk - h * w, 2))])
    chunks = grid.reshape(num_chunks, chunk, 2)

    def run(yx: jax.Array) -> jax.Array:
        return model.apply(variables, images, jnp.broadcast_to(yx, (b, chunk, 2)), train=False)

    logits = jax.lax.map(run, chunks)  # (num_chunks, B, chunk, K)
    logits = jnp.moveaxis(logits, 1, 0).reshape(b, num_chunks * chunk, -1)[:, : h * w]
    return logits.reshape(b, h, w, -1)
