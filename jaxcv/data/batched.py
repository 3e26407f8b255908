"""Augmentation of whole classification batches: one tf.data map call per batch, not per image.

A per-example ``map`` pays tf.data's per-call overhead on every image, which for a small
classifier can exceed what its train step spends on the image (both are measured by
``experiments/bench/input_pipeline.py``). For batches of fixed-shape images and labels only,
:func:`jaxcv.data.make_pipeline` batches first and applies these vectorised versions of
:func:`jaxcv.data.transforms.random_flip` and :func:`jaxcv.data.transforms.random_translate`:
the same operation on every image with its own random draw.
"""

from collections.abc import Sequence

import tensorflow as tf

from jaxcv.data import transforms as T
from jaxcv.data.registry import Augmentation
from jaxcv.types import IMAGE, LABEL

BATCHABLE_KEYS = frozenset({IMAGE, LABEL})


def can_batch(
    keys: Sequence[str],
    image_shape: Sequence[int | None],
    augmentation: Augmentation,
    *,
    augment: bool,
    fit: str,
    proposals,
) -> bool:
    """Whether the example transforms of ``make_pipeline`` can run on whole batches: only
    images (all stored with one static ``image_shape``) and labels, no external proposals,
    ``fit="resize"``, and at most the flip and the translation as augmentation (the random
    resized crop has a per-image output size)."""
    if set(keys) - BATCHABLE_KEYS or proposals is not None or None in tuple(image_shape):
        return False
    if fit != "resize":
        return False
    return not (augment and augmentation.crop_min_scale is not None)


def random_flip(batch: dict, seed: tf.Tensor) -> dict:
    """Mirrors each image of ``image (B, H, W, C)`` left-right with probability 1/2."""
    images = batch[IMAGE]
    flip = tf.random.stateless_uniform([tf.shape(images)[0]], seed) < 0.5
    return {**batch, IMAGE: tf.where(flip[:, None, None, None], tf.reverse(images, [2]), images)}


def random_translate(batch: dict, seed: tf.Tensor, pad: int) -> dict:
    """Zero-pads each image of ``image (B, H, W, C)`` by ``pad`` and crops a random ``(H, W)``
    window from it: an independent shift of up to ``pad`` pixels per image."""
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    images = batch[IMAGE]
    b = tf.shape(images)[0]
    h, w = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    offsets = tf.random.stateless_uniform([b, 2], seed, 0, 2 * pad + 1, dtype=tf.int32)
    rows = offsets[:, :1] + tf.range(h)[None]  # (B, H)
    cols = offsets[:, 1:] + tf.range(w)[None]  # (B, W)
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    out = tf.gather(out, cols, axis=2, batch_dims=1)
    return {**batch, IMAGE: tf.ensure_shape(out, images.shape)}


def transform(
    batch: dict,
    seeds: tf.Tensor,
    augmentation: Augmentation,
    *,
    augment: bool,
    image_size: Sequence[int] | None,
    grayscale_to_rgb: bool,
    mean: Sequence[float],
    std: Sequence[float],
) -> dict:
    """The per-example steps of ``make_pipeline`` on a batch, in the same order: flip and
    translation (when ``augment``; ``seeds[0]`` and ``seeds[1]`` of the ``(3, 2)`` seeds),
    bilinear anti-aliased resize to ``image_size``, grey to RGB, normalisation."""
    if augment and augmentation.hflip:
        batch = random_flip(batch, seeds[0])
    if augment and augmentation.translate:
        batch = random_translate(batch, seeds[1], augmentation.translate)
    images = batch[IMAGE]
    if image_size is not None and tuple(images.shape[1:3]) != tuple(image_size):
        images = tf.image.resize(images, image_size, method="bilinear", antialias=True)
        batch = {**batch, IMAGE: images}
    if grayscale_to_rgb and images.shape[-1] == 1:
        batch = T.grayscale_to_rgb(batch)
    return T.normalize(batch, mean, std)
