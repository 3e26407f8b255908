"""Semantic segmentation from object proposals, DeconvNet's instance-wise training and
inference (Noh, Hong & Han 2015, sec. 4): a dense network trained on object-centred crops and
applied to object proposals whose score maps are pasted back and aggregated per pixel.

Training (:meth:`ProposalSegmentationTask.loss_fn`), inside the jitted step: each image gives
``crops_per_image`` crops, each around one of its valid ground-truth objects drawn at random.
The object's box, with probability ``hard_fraction`` moved and resized by up to ``jitter`` of
its size (the paper's second stage: proposal-like boxes overlapping the object, neighbours in
view), made square (``square``) and enlarged about its centre by a factor drawn uniformly from
``enlarge`` (:func:`crop_windows`), is resampled to ``crop_size x crop_size``: the image
bilinearly (:func:`jaxcv.ops.warp.crop_and_resize`, 0 = the normalised mean outside the
image), the semantic labels by nearest neighbour (:func:`crop_labels`, ignore outside the
image). With probability ``random_fraction`` a crop's box is instead a random square (side
``U(0.1, 0.5)`` of the image's shorter side, centre anywhere in the image): a proposal-like
window on background or on parts of objects, which the paper's object-centred crops never show
but test-time proposals do. The loss is the per-pixel cross-entropy over the crops; crops of
padded examples and object crops of images without an object weigh 0.

Inference (:meth:`ProposalSegmentationTask.batch_logits`): the batch's ``proposals (B, P, 4)``
with ``proposal_valid (B, P)`` (the first ``P`` of selective search's ranking, joined by the
pipeline from ``config.proposals``; :mod:`jaxcv.proposals.pipeline`) become windows the same
way (square, enlarged by ``test_enlarge``), are cropped and scored ``test_chunk`` proposals per
image at a time, and each ``(S, S, K)`` score map is resized back into its window (bilinear,
:func:`paste_windows`). An image pixel's logits are the maximum, class by class, over the
windows that contain its centre (``aggregate="mean"``: the log of the mean of their softmax
maps); pixels no window contains are background (logit 0 for it, ``-1e9`` for the others: a
one-hot softmax).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcv import types
from jaxcv.ops.warp import crop_and_resize
from jaxcv.tasks.inputs import batch_images
from jaxcv.tasks.segmentation import (
    SegmentationSettings,
    SegmentationTask,
    _example_weights,
    _images_and_labels,
    _masked_loss_and_accuracy,
)
from jaxcv.tasks.settings import settings_from_config

#: Logit of the non-background classes where no proposal window covers a pixel.
UNCOVERED_LOGIT = -1e9


@dataclasses.dataclass(frozen=True)
class InstanceCrops:
    """How crops are made, from ``config.segmentation.instance_crops``.

    Attributes:
      crop_size: ``S``, the network's input side (the pre-trained trunk's 96).
      crops_per_image: crops per image and training step (the model sees ``B x`` this).
      enlarge: ``(low, high)``: a training window is the object's box enlarged by ``U(low,
        high)`` about its centre.
      hard_fraction: the fraction of training crops whose box is jittered first.
      jitter: the box's centre moves by up to ``jitter`` of its width/height and each side is
        scaled by a factor in ``[1 / (1 + jitter), 1 + jitter]``.
      random_fraction: the fraction of training crops on a random box instead of an object.
      square: windows take the longer side of the box on both axes (no warping).
      test_enlarge: the enlargement of test-time proposals.
      test_chunk: proposals per image per network call at test time.
    """

    crop_size: int = 96
    crops_per_image: int = 1
    enlarge: tuple[float, float] = (1.2, 1.5)
    hard_fraction: float = 0.5
    jitter: float = 0.2
    random_fraction: float = 0.0
    square: bool = True
    test_enlarge: float = 1.35
    test_chunk: int = 5

    def __post_init__(self):
        if self.crop_size < 1 or self.crops_per_image < 1 or self.test_chunk < 1:
            raise ValueError(f"crop_size, crops_per_image and test_chunk must be >= 1: {self}")
        if not 0 < self.enlarge[0] <= self.enlarge[1] or self.test_enlarge <= 0:
            raise ValueError(f"enlarge must be 0 < low <= high, test_enlarge > 0: {self}")
        fractions = (self.hard_fraction, self.random_fraction)
        if not all(0.0 <= f <= 1.0 for f in fractions) or self.jitter < 0:
            raise ValueError(f"fractions must be in [0, 1] and jitter >= 0: {self}")


@dataclasses.dataclass(frozen=True)
class ProposalSegmentationSettings(SegmentationSettings):
    """Hyperparameters of :class:`ProposalSegmentationTask`, from ``config.segmentation``.

    Attributes:
      instance_crops: :class:`InstanceCrops`.
      aggregate: how a pixel's windows are combined: ``"max"`` (the paper: the maximum logit
        per class) or ``"mean"`` (the mean of their softmax maps; the logits returned are its
        log, so their softmax is that mean).
    """

    instance_crops: InstanceCrops = dataclasses.field(default_factory=InstanceCrops)
    aggregate: str = "max"

    def __post_init__(self):
        if self.aggregate not in ("max", "mean"):
            raise ValueError(f"aggregate must be 'max' or 'mean'; got {self.aggregate!r}")


def crop_windows(boxes: jax.Array, scale: jax.Array | float, square: bool) -> jax.Array:
    """``(..., 4)`` xyxy boxes -> windows enlarged by ``scale`` (broadcast to ``(...)``) about
    their centres, square (the longer side) with ``square``; sides of at least 1 pixel."""
    cx = 0.5 * (boxes[..., 0] + boxes[..., 2])
    cy = 0.5 * (boxes[..., 1] + boxes[..., 3])
    w = jnp.maximum(boxes[..., 2] - boxes[..., 0], 1.0)
    h = jnp.maximum(boxes[..., 3] - boxes[..., 1], 1.0)
    if square:
        w = h = jnp.maximum(w, h)
    hw, hh = 0.5 * w * scale, 0.5 * h * scale
    return jnp.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=-1)


def crop_labels(labels: jax.Array, windows: jax.Array, size: int) -> jax.Array:
    """Nearest-neighbour crops of label maps: output pixel ``(i, j)`` of window ``(x1, y1, x2,
    y2)`` takes the label of the pixel containing ``(x1 + (j + .5) (x2 - x1) / S, y1 + (i + .5)
    (y2 - y1) / S)`` (the sampling points of :func:`jaxcv.ops.warp.crop_and_resize`), ignore
    (255) outside the image.

    Args:
      labels: ``(B, H, W)`` int.
      windows: ``(B, R, 4)`` xyxy pixels.
      size: ``S``.

    Returns:
      ``(B, R, S, S)`` int32.
    """
    b, h, w = labels.shape
    steps = jnp.arange(size, dtype=jnp.float32) + 0.5

    def axis(start, end, extent):
        index = jnp.floor(start[..., None] + steps * ((end - start) / size)[..., None])
        index = index.astype(jnp.int32)
        return jnp.clip(index, 0, extent - 1), (index >= 0) & (index < extent)

    ys, y_in = axis(windows[..., 1], windows[..., 3], h)
    xs, x_in = axis(windows[..., 0], windows[..., 2], w)
    flat = (ys[..., :, None] * w + xs[..., None, :]).reshape(b, -1)
    values = jnp.take_along_axis(labels.reshape(b, h * w), flat, axis=1).reshape((*ys.shape, size))
    inside = y_in[..., :, None] & x_in[..., None, :]
    return jnp.where(inside, values, types.IGNORE_LABEL).astype(jnp.int32)


def _paste_weights(start: jax.Array, end: jax.Array, size: int, extent: int):
    """``(N, extent, size)`` bilinear weights reading a ``size`` map laid over ``[start, end)``
    at every image pixel centre (edges clamped), and ``(N, extent)`` pixel centre in window."""
    centre = jnp.arange(extent, dtype=jnp.float32) + 0.5
    length = (end - start)[:, None]
    pos = (centre - start[:, None]) * (size / length) - 0.5
    pos = jnp.clip(pos, 0.0, size - 1.0)
    lo = jnp.floor(pos)
    frac = (pos - lo)[..., None]
    lo = lo.astype(jnp.int32)
    hi = jnp.minimum(lo + 1, size - 1)
    weights = (1.0 - frac) * jax.nn.one_hot(lo, size) + frac * jax.nn.one_hot(hi, size)
    inside = (centre >= start[:, None]) & (centre < end[:, None])
    return weights, inside


def paste_windows(
    maps: jax.Array, windows: jax.Array, valid: jax.Array, image_hw: tuple[int, int]
) -> jax.Array:
    """Score maps resized back into their windows of the image.

    Args:
      maps: ``(N, S, S, K)`` score maps, map pixel ``(i, j)`` centred at the window's sampling
        point ``(i, j)`` (see :func:`crop_labels`).
      windows: ``(N, 4)`` xyxy pixels.
      valid: ``(N,)`` bool.
      image_hw: ``(H, W)``.

    Returns:
      ``(N, H, W, K)`` float32: bilinear in the map (clamped at its edges) at the pixel centres
      inside a valid window, ``-inf`` elsewhere.
    """
    size = maps.shape[1]
    wy, y_in = _paste_weights(windows[:, 1], windows[:, 3], size, image_hw[0])
    wx, x_in = _paste_weights(windows[:, 0], windows[:, 2], size, image_hw[1])
    pasted = jnp.einsum("nhs,nstk,nwt->nhwk", wy, maps.astype(jnp.float32), wx)
    inside = y_in[:, :, None] & x_in[:, None, :] & valid[:, None, None]
    return jnp.where(inside[..., None], pasted, -jnp.inf)


def uncovered_to_background(logits: jax.Array) -> jax.Array:
    """``(..., K)`` max-aggregated logits with ``-inf`` where no window covered a pixel: those
    pixels become background (0 for class 0, :data:`UNCOVERED_LOGIT` for the others)."""
    background = jnp.where(jnp.arange(logits.shape[-1]) == types.BACKGROUND, 0.0, UNCOVERED_LOGIT)
    covered = jnp.isfinite(logits[..., :1])
    return jnp.where(covered, logits, background.astype(logits.dtype))


def _random_objects(key: jax.Array, valid: jax.Array, count: int) -> jax.Array:
    """``(B, count)`` indices of valid objects of ``valid (B, M)`` drawn uniformly (with
    replacement; index 0 for an image without one)."""
    u = jax.random.uniform(key, (valid.shape[0], count, valid.shape[1]))
    return jnp.argmax(jnp.where(valid[:, None], u, -1.0), axis=-1)


def _jitter(key: jax.Array, boxes: jax.Array, jitter: float) -> jax.Array:
    """``(..., 4)`` boxes moved by ``U(-j, j)`` of their size and each side scaled by
    ``exp(U(-log(1 + j), log(1 + j)))``."""
    shift_key, scale_key = jax.random.split(key)
    size = boxes[..., 2:] - boxes[..., :2]
    centre = 0.5 * (boxes[..., :2] + boxes[..., 2:])
    centre = (
        centre + jax.random.uniform(shift_key, size.shape, minval=-jitter, maxval=jitter) * size
    )
    log_max = math.log1p(jitter)
    size = size * jnp.exp(
        jax.random.uniform(scale_key, size.shape, minval=-log_max, maxval=log_max)
    )
    return jnp.concatenate([centre - 0.5 * size, centre + 0.5 * size], axis=-1)


def _random_boxes(key: jax.Array, shape: tuple[int, ...], image_hw: tuple[int, int]):
    """``(*shape, 4)`` squares of side ``U(0.1, 0.5) min(H, W)`` centred anywhere in the image."""
    side_key, centre_key = jax.random.split(key)
    side = jax.random.uniform(side_key, shape, minval=0.1, maxval=0.5) * min(image_hw)
    centre = jax.random.uniform(centre_key, (*shape, 2)) * jnp.array(image_hw[::-1], jnp.float32)
    half = 0.5 * side[..., None]
    return jnp.concatenate([centre - half, centre + half], axis=-1)


class ProposalSegmentationTask(SegmentationTask):
    """The ``Task`` protocol for the instance-wise DeconvNet (see the module docstring).

    Args:
      model: a dense Linen module ``(N, S, S, C) -> (N, S, S, K)`` logits (DeconvNet).
      num_classes: ``K``, background included.
      settings: :class:`ProposalSegmentationSettings` (default: the class defaults).
      **overrides: fields of the settings (``instance_crops=InstanceCrops(...)``).
    """

    settings_class = ProposalSegmentationSettings

    def __init__(self, model: nn.Module, num_classes: int, settings=None, **overrides: Any):
        super().__init__(model, num_classes, settings, **overrides)
        self.crops = self.settings.instance_crops

    def _init_args(self, images: jax.Array) -> tuple:
        s = self.crops.crop_size
        return (jnp.zeros((images.shape[0], s, s, images.shape[-1]), images.dtype),)

    def training_crops(self, key: jax.Array, batch: dict[str, Any]):
        """The crops of one training step (see the module docstring).

        Args:
          key: PRNG key.
          batch: ``image (B, H, W, C)``, ``segmentation (B, H, W)``, ``boxes (B, M, 4)``,
            ``valid (B, M)`` and optionally ``example_valid (B,)``.

        Returns:
          ``crops (B n, S, S, C)``, ``labels (B n, S, S)`` int32, ``weights (B n,)`` float32
          (0 for padded examples and for object crops of images without a valid object) and
          ``windows (B, n, 4)``, ``n = crops_per_image``.
        """
        images, labels = _images_and_labels(batch)
        boxes, valid = jnp.asarray(batch[types.BOXES]), jnp.asarray(batch[types.VALID], bool)
        c = self.crops
        b, n = images.shape[0], c.crops_per_image
        keys = jax.random.split(key, 6)
        index = _random_objects(keys[0], valid, n)
        chosen = jnp.take_along_axis(boxes, index[..., None], axis=1)  # (B, n, 4)
        hard = jax.random.uniform(keys[1], (b, n)) < c.hard_fraction
        chosen = jnp.where(hard[..., None], _jitter(keys[2], chosen, c.jitter), chosen)
        random = jax.random.uniform(keys[3], (b, n)) < c.random_fraction
        chosen = jnp.where(
            random[..., None], _random_boxes(keys[4], (b, n), labels.shape[1:]), chosen
        )
        scale = jax.random.uniform(keys[5], (b, n), minval=c.enlarge[0], maxval=c.enlarge[1])
        windows = crop_windows(chosen, scale, c.square)
        s = c.crop_size
        crops = crop_and_resize(images, windows, s).reshape(b * n, s, s, images.shape[-1])
        crop_targets = crop_labels(labels, windows, s).reshape(b * n, s, s)
        has_object = jnp.any(valid, axis=1, keepdims=True)
        weights = _example_weights(batch, b)[:, None] * (random | has_object).astype(jnp.float32)
        return crops, crop_targets, weights.reshape(b * n), windows

    def loss_fn(self, params, model_state, batch, rng, *, train: bool = True):
        """Mean per-pixel cross-entropy over the labelled pixels of the step's crops.

        Returns:
          ``(loss, (metrics, new_model_state))``, metrics ``loss``, ``pixel_accuracy`` (of the
          crops) and ``crop_fraction`` (crops with weight > 0).
        """
        crop_key, dropout_key = jax.random.split(rng)
        crops, labels, weights, _ = self.training_crops(crop_key, batch)
        variables = {"params": params, **(model_state or {})}
        logits, updates = self._apply_train(variables, (crops,), dropout_key, train)
        self._check_logits(logits, labels.shape)
        pixel_weights = jnp.broadcast_to(weights[:, None, None], labels.shape)
        loss, accuracy = _masked_loss_and_accuracy(logits, labels, pixel_weights, self.ignore_label)
        new_state = dict(model_state or {})
        new_state.update(updates)
        metrics = {"loss": loss, "pixel_accuracy": accuracy, "crop_fraction": jnp.mean(weights)}
        return loss, (metrics, new_state)

    def batch_logits(self, variables: dict, batch: dict[str, Any]) -> jax.Array:
        """``(B, H, W, K)`` float32 logits of the images from their proposals (see the module
        docstring): ``batch`` has ``image (B, H, W, C)``, ``proposals (B, P, 4)`` and
        ``proposal_valid (B, P)``."""
        images = batch_images(batch)
        if types.PROPOSALS not in batch or types.PROPOSAL_VALID not in batch:
            raise ValueError(
                "the proposal segmentation needs batch['proposals'] and "
                "batch['proposal_valid'] (a config.proposals section)"
            )
        c = self.crops
        b, h, w, ch = images.shape
        valid = jnp.asarray(batch[types.PROPOSAL_VALID], bool)
        chunk = c.test_chunk
        steps = -(-valid.shape[1] // chunk)
        pad = steps * chunk - valid.shape[1]
        proposals = jnp.pad(jnp.asarray(batch[types.PROPOSALS]), ((0, 0), (0, pad), (0, 0)))
        windows = crop_windows(proposals, c.test_enlarge, c.square)  # padding: 1-pixel windows
        valid = jnp.pad(valid, ((0, 0), (0, pad)))
        windows = windows.reshape(b, steps, chunk, 4).transpose(1, 0, 2, 3)
        valid = valid.reshape(b, steps, chunk).transpose(1, 0, 2)
        s, k = c.crop_size, self.num_classes

        mean = self.settings.aggregate == "mean"

        def step(carry, xs):
            best, total, count = carry
            win, val = xs  # (B, chunk, 4), (B, chunk)
            crops = crop_and_resize(images, win, s).reshape(b * chunk, s, s, ch)
            maps = self.model.apply(variables, crops, train=False)
            self._check_logits(maps, (b * chunk, s, s))
            maps = jax.nn.softmax(maps.astype(jnp.float32), axis=-1) if mean else maps
            pasted = paste_windows(maps, win.reshape(-1, 4), val.reshape(-1), (h, w))
            pasted = pasted.reshape(b, chunk, h, w, k)
            inside = jnp.isfinite(pasted)
            total = total + jnp.sum(jnp.where(inside, pasted, 0.0), axis=1)
            count = count + jnp.sum(inside, axis=1)
            return (jnp.maximum(best, pasted.max(axis=1)), total, count), None

        zeros = jnp.zeros((b, h, w, k), jnp.float32)
        init = (jnp.full((b, h, w, k), -jnp.inf, jnp.float32), zeros, zeros)
        (best, total, count), _ = jax.lax.scan(step, init, (windows, valid))
        if mean:
            averaged = jnp.log(jnp.maximum(total / jnp.maximum(count, 1.0), 1e-30))
            best = jnp.where(count > 0, averaged, -jnp.inf)
        return uncovered_to_background(best)

    def dense_logits(self, variables: dict, images: jax.Array) -> jax.Array:
        """Not defined without proposals: use :meth:`batch_logits`."""
        raise ValueError("the proposal segmentation scores proposals: use batch_logits")


def task_from_config(config: Any, model: nn.Module) -> ProposalSegmentationTask:
    """The task of ``config.task == "proposal_segmentation"`` around ``model``, its settings
    from ``config.segmentation`` (``instance_crops`` a mapping of :class:`InstanceCrops`)."""
    num_classes = getattr(model, "num_classes", None) or config.model.get("num_classes")
    if num_classes is None:
        raise ValueError("segmentation needs config.model.num_classes (object classes + 1)")
    settings = settings_from_config(ProposalSegmentationSettings, config, "segmentation")
    return ProposalSegmentationTask(model, int(num_classes), settings)
