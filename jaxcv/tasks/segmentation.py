"""Semantic segmentation: per-pixel softmax cross-entropy, the FCN metrics, colour overlays.

:class:`SegmentationTask` implements the ``Task`` protocol of :mod:`jaxcv.tasks.base` for dense
models ``model.apply(variables, images (B, H, W, C), train=...) -> logits (B, H, W, K)`` (FCN,
DeconvNet): the loss is the mean softmax cross-entropy over the labelled pixels (label 255 =
ignore, padded examples of ``example_valid`` excluded), the training metric is the pixel
accuracy over the same pixels, and predictions are the per-pixel argmax ``pred_segmentation``.

:class:`PatchSegmentationTask` trains the per-pixel :class:`jaxcv.models.patch_cnn.PatchCNN` on
a fixed number of pixels per image, sampled by random priorities (:func:`sample_pixels`), and
predicts densely by evaluating every pixel's patch.

:class:`SegmentationEvaluator` accumulates a confusion matrix on the host
(:class:`jaxcv.eval.segmentation.SegmentationMetrics`) and reports ``pixel_accuracy``,
``mean_accuracy``, ``mIoU`` and ``fwIoU``. The report's colour overlays are
:mod:`jaxcv.viz.segmentation`.

``num_classes`` counts the background: ``K = 1 + `` the dataset's object classes (5 for
``shapes``, 21 for VOC); targets must be in ``0..K-1`` or 255.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcv import types
from jaxcv.eval.segmentation import SegmentationMetrics, metrics_from_confusion
from jaxcv.models.patch_cnn import PatchCNN, dense_predict
from jaxcv.ops.losses import softmax_cross_entropy
from jaxcv.tasks.inputs import batch_images, check_image_batch
from jaxcv.tasks.settings import replace_settings, settings_from_config

PRED_KEY = types.PRED_SEGMENTATION
METRIC_KEYS = ("pixel_accuracy", "mean_accuracy", "mIoU", "fwIoU")


def _images_and_labels(batch: dict[str, Any]) -> tuple[jax.Array, jax.Array]:
    images, labels = batch[types.IMAGE], batch[types.SEGMENTATION]
    check_image_batch(images)
    if labels.shape != images.shape[:3]:
        raise ValueError(
            f"batch['segmentation'] must be (B, H, W) = {images.shape[:3]}; got shape "
            f"{labels.shape}"
        )
    return images, labels


def _example_weights(batch: dict[str, Any], batch_size: int) -> jax.Array:
    """``(B,)`` float32: 0 for padded examples (``example_valid``), else 1."""
    if types.EXAMPLE_VALID in batch:
        return jnp.asarray(batch[types.EXAMPLE_VALID]).astype(jnp.float32)
    return jnp.ones((batch_size,), jnp.float32)


def _masked_loss_and_accuracy(
    logits: jax.Array, labels: jax.Array, weights: jax.Array, ignore_label: int
) -> tuple[jax.Array, jax.Array]:
    """Mean CE and accuracy over pixels with ``weights > 0`` and a label other than ignore."""
    loss = softmax_cross_entropy(logits, labels, weights, ignore_index=ignore_label)
    keep = (labels != ignore_label).astype(jnp.float32) * weights
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    accuracy = jnp.sum(correct * keep) / jnp.maximum(jnp.sum(keep), 1.0)
    return loss, accuracy


@dataclasses.dataclass(frozen=True)
class SegmentationSettings:
    """Hyperparameters of :class:`SegmentationTask`, from ``config.segmentation``.

    Attributes:
      ignore_label: target value excluded from the loss and the metrics.
    """

    ignore_label: int = types.IGNORE_LABEL


@dataclasses.dataclass(frozen=True)
class PatchSegmentationSettings(SegmentationSettings):
    """Hyperparameters of :class:`PatchSegmentationTask`, from ``config.segmentation``.

    Attributes:
      pixels_per_image: ``N`` pixels sampled per image and training step.
      balance_classes: class-balanced pixel sampling (see :func:`sample_pixels`).
      chunk_size: pixels per forward pass in dense prediction.
    """

    pixels_per_image: int = 256
    balance_classes: bool = True
    chunk_size: int = 2048

    def __post_init__(self):
        if self.pixels_per_image < 1 or self.chunk_size < 1:
            raise ValueError(
                f"pixels_per_image and chunk_size must be >= 1; got {self.pixels_per_image}, "
                f"{self.chunk_size}"
            )


class SegmentationTask:
    """The ``Task`` protocol for dense per-pixel classifiers (FCN, DeconvNet).

    Args:
      model: a Linen module mapping images ``(B, H, W, C)`` to logits ``(B, H, W, K)``; it takes
        ``train=bool``, keeps BatchNorm statistics in ``batch_stats`` and uses the ``dropout``
        rng.
      num_classes: ``K``, background included; the model's last axis must have this size.
      settings: :class:`SegmentationSettings` (default: the class defaults).
      **overrides: fields of the settings replacing those of ``settings`` (``ignore_label``).
    """

    settings_class = SegmentationSettings

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        settings: SegmentationSettings | None = None,
        **overrides: Any,
    ):
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                f"num_classes must be an int >= 2 (with background); got {num_classes!r}"
            )
        self.settings = replace_settings(settings or self.settings_class(), overrides)
        ignore_label = self.settings.ignore_label
        if 0 <= ignore_label < num_classes:
            raise ValueError(
                f"ignore_label {ignore_label} collides with a class in 0..{num_classes - 1}"
            )
        self.model = model
        self.num_classes = num_classes
        self.ignore_label = ignore_label

    def _check_logits(self, logits: jax.Array, expected: tuple[int, ...]) -> None:
        if logits.shape != (*expected, self.num_classes):
            raise ValueError(
                f"the model must return logits {(*expected, self.num_classes)}; got shape "
                f"{logits.shape}"
            )

    def _init_args(self, images: jax.Array) -> tuple:
        return (images,)

    def init_variables(self, rng: jax.Array, batch: dict[str, Any]) -> dict:
        """Initialise the model from ``batch['image'] (B, H, W, C)``.

        Returns:
          ``{'params': ..., 'batch_stats': ...}`` (``batch_stats`` only with BatchNorm; sown
          ``intermediates`` are dropped).
        """
        images = batch_images(batch)
        params_rng, dropout_rng = jax.random.split(rng)
        variables = self.model.init(
            {"params": params_rng, "dropout": dropout_rng}, *self._init_args(images), train=False
        )
        return {k: v for k, v in variables.items() if k != "intermediates"}

    def _apply_train(self, variables: dict, args: tuple, rng: jax.Array, train: bool):
        if not train:
            return self.model.apply(variables, *args, train=False), {}
        mutable = [k for k in variables if k != "params"]
        rngs = {"dropout": rng}
        if mutable:
            return self.model.apply(variables, *args, train=True, rngs=rngs, mutable=mutable)
        return self.model.apply(variables, *args, train=True, rngs=rngs), {}

    def loss_fn(self, params, model_state, batch, rng, *, train: bool = True):
        """Mean per-pixel softmax cross-entropy over labelled pixels of valid examples.

        Args:
          params: the ``params`` collection.
          model_state: the other collections (``{'batch_stats': ...}`` or ``{}``).
          batch: ``image (B, H, W, C)``, ``segmentation (B, H, W)`` int (255 = ignore) and
            optionally ``example_valid (B,)``.
          rng: dropout key.
          train: training mode.

        Returns:
          ``(loss, (metrics, new_model_state))`` with metrics ``loss`` and ``pixel_accuracy``.
        """
        images, labels = _images_and_labels(batch)
        variables = {"params": params, **(model_state or {})}
        logits, updates = self._apply_train(variables, (images,), rng, train)
        self._check_logits(logits, labels.shape)
        weights = jnp.broadcast_to(
            _example_weights(batch, labels.shape[0])[:, None, None], labels.shape
        )
        loss, accuracy = _masked_loss_and_accuracy(logits, labels, weights, self.ignore_label)
        new_state = dict(model_state or {})
        new_state.update(updates)
        return loss, ({"loss": loss, "pixel_accuracy": accuracy}, new_state)

    def predict_fn(self, variables: dict, batch: dict[str, Any]) -> dict[str, jax.Array]:
        """Per-pixel predictions for ``batch['image'] (B, H, W, C)``.

        Returns:
          ``pred_segmentation (B, H, W)`` int32 (argmax class) and ``confidence (B, H, W)``
          float32 (its softmax probability).
        """
        images = batch_images(batch)
        logits = self.batch_logits(variables, batch)
        self._check_logits(logits, images.shape[:3])
        return {
            PRED_KEY: jnp.argmax(logits, axis=-1).astype(jnp.int32),
            "confidence": jnp.max(jax.nn.softmax(logits, axis=-1), axis=-1),
        }

    def dense_logits(self, variables: dict, images: jax.Array) -> jax.Array:
        """``(B, H, W, K)`` float32 logits in inference mode."""
        return self.model.apply(variables, images, train=False).astype(jnp.float32)

    def batch_logits(self, variables: dict, batch: dict[str, Any]) -> jax.Array:
        """``(B, H, W, K)`` float32 logits of ``batch['image']`` in inference mode (what
        :meth:`predict_fn` and the studies read; a task may use other keys of ``batch``)."""
        return self.dense_logits(variables, batch_images(batch))

    def make_evaluator(self) -> SegmentationEvaluator:
        """A fresh :class:`SegmentationEvaluator`."""
        return SegmentationEvaluator(self.num_classes, ignore_label=self.ignore_label)


def sample_pixels(
    key: jax.Array,
    labels: jax.Array,
    num_samples: int,
    num_classes: int,
    *,
    ignore_label: int = 255,
    balance_classes: bool = False,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Sample ``N`` labelled pixels per image without replacement, by random priorities.

    Each pixel gets the priority ``log(u) / w`` with ``u ~ U(0, 1)`` (Efraimidis-Spirakis: the
    top ``N`` are a weighted sample without replacement, probabilities proportional to ``w``);
    ``w = 1`` (uniform) or, with ``balance_classes``, ``1 / (pixels of its class in the image)``
    so that every present class is drawn about equally often. Ignored pixels are never drawn.

    Args:
      key: PRNG key.
      labels: ``(B, H, W)`` int in ``0..K-1`` or ``ignore_label``.
      num_samples: ``N <= H W``.
      num_classes: ``K``.
      ignore_label: label never sampled.
      balance_classes: class-balanced weights (see above).

    Returns:
      ``coords (B, N, 2)`` int32 ``(y, x)``, ``targets (B, N)`` int32 and ``valid (B, N)`` bool
      (False where an image has fewer than ``N`` labelled pixels).
    """
    if labels.ndim != 3:
        raise ValueError(f"labels must be (B, H, W); got shape {labels.shape}")
    b, h, w = labels.shape
    if not 1 <= num_samples <= h * w:
        raise ValueError(f"num_samples must be in 1..H*W={h * w}; got {num_samples}")
    flat = labels.reshape(b, h * w)
    labelled = flat != ignore_label
    u = jax.random.uniform(key, flat.shape, minval=jnp.finfo(jnp.float32).tiny, maxval=1.0)
    priority = jnp.log(u)
    if balance_classes:
        onehot = jax.nn.one_hot(jnp.where(labelled, flat, 0), num_classes) * labelled[..., None]
        counts = jnp.sum(onehot, axis=1)  # (B, K)
        class_count = jnp.take_along_axis(counts, jnp.where(labelled, flat, 0), axis=1)
        priority = priority * jnp.maximum(class_count, 1.0)
    priority = jnp.where(labelled, priority, -jnp.inf)
    top, index = jax.lax.top_k(priority, num_samples)
    coords = jnp.stack([index // w, index % w], axis=-1).astype(jnp.int32)
    targets = jnp.take_along_axis(flat, index, axis=1).astype(jnp.int32)
    return coords, targets, jnp.isfinite(top)


class PatchSegmentationTask(SegmentationTask):
    """The patch CNN's task: train on sampled pixels, predict every pixel's patch.

    Args:
      model: a :class:`jaxcv.models.patch_cnn.PatchCNN` (``apply(variables, images, coords
        (B, N, 2)) -> (B, N, K)``).
      num_classes: ``K``, background included.
      settings: :class:`PatchSegmentationSettings` (default: the class defaults).
      **overrides: fields of :class:`PatchSegmentationSettings` replacing those of ``settings``.
    """

    settings_class = PatchSegmentationSettings

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        settings: PatchSegmentationSettings | None = None,
        **overrides: Any,
    ):
        super().__init__(model, num_classes, settings, **overrides)
        self.pixels_per_image = self.settings.pixels_per_image
        self.balance_classes = self.settings.balance_classes
        self.chunk_size = self.settings.chunk_size

    def _init_args(self, images: jax.Array) -> tuple:
        coords = jnp.zeros((images.shape[0], self.pixels_per_image, 2), jnp.int32)
        return (images, coords)

    def loss_fn(self, params, model_state, batch, rng, *, train: bool = True):
        """Mean cross-entropy of ``pixels_per_image`` sampled pixels per valid example.

        Returns:
          ``(loss, (metrics, new_model_state))`` with metrics ``loss``, ``pixel_accuracy`` (over
          the sampled pixels) and ``sampled_fraction`` (sampled over requested pixels).
        """
        images, labels = _images_and_labels(batch)
        sample_key, dropout_key = jax.random.split(rng)
        coords, targets, valid = sample_pixels(
            sample_key,
            labels,
            self.pixels_per_image,
            self.num_classes,
            ignore_label=self.ignore_label,
            balance_classes=self.balance_classes,
        )
        variables = {"params": params, **(model_state or {})}
        logits, updates = self._apply_train(variables, (images, coords), dropout_key, train)
        self._check_logits(logits, targets.shape)
        weights = valid.astype(jnp.float32) * _example_weights(batch, labels.shape[0])[:, None]
        loss, accuracy = _masked_loss_and_accuracy(logits, targets, weights, self.ignore_label)
        new_state = dict(model_state or {})
        new_state.update(updates)
        metrics = {
            "loss": loss,
            "pixel_accuracy": accuracy,
            "sampled_fraction": jnp.mean(valid.astype(jnp.float32)),
        }
        return loss, (metrics, new_state)

    def dense_logits(self, variables: dict, images: jax.Array) -> jax.Array:
        """Every pixel's patch classified, ``chunk_size`` pixels at a time: ``(B, H, W, K)``."""
        return dense_predict(self.model, variables, images, self.chunk_size)


def task_from_config(config: Any, model: nn.Module) -> SegmentationTask:
    """The task of ``config.task == "segmentation"`` around ``model`` (the loop's constructor).

    A :class:`jaxcv.models.patch_cnn.PatchCNN` gets a :class:`PatchSegmentationTask` with its
    :class:`PatchSegmentationSettings`, any dense model (FCN, DeconvNet) a
    :class:`SegmentationTask` with its :class:`SegmentationSettings`, both from
    ``config.segmentation``.

    Args:
      config: the experiment config (``config.model.num_classes`` = K with background).
      model: the built model; its ``num_classes`` field is used when present.

    Returns:
      The task.
    """
    num_classes = getattr(model, "num_classes", None) or config.model.get("num_classes")
    if num_classes is None:
        raise ValueError("segmentation needs config.model.num_classes (object classes + 1)")
    task_class = PatchSegmentationTask if isinstance(model, PatchCNN) else SegmentationTask
    settings = settings_from_config(task_class.settings_class, config, "segmentation")
    return task_class(model, int(num_classes), settings)


class SegmentationEvaluator:
    """Accumulates the four FCN metrics over an evaluation pass (host side, NumPy).

    ``update(batch, outputs)`` reads ``batch['segmentation'] (B, H, W)``, optional
    ``batch['example_valid'] (B,)`` (padded examples are skipped) and
    ``outputs['pred_segmentation'] (B, H, W)``; ``result()`` returns ``pixel_accuracy``,
    ``mean_accuracy``, ``mIoU``, ``fwIoU`` and ``num_examples``. ``confusion`` is the ``(K, K)``
    pixel confusion matrix (rows = target class).
    """

    def __init__(self, num_classes: int, *, ignore_label: int = 255):
        self.metrics = SegmentationMetrics(num_classes, ignore_label=ignore_label)
        self.num_examples = 0

    @property
    def confusion(self) -> np.ndarray:
        """``(K, K)`` int64 pixel counts, rows = target class, columns = prediction."""
        return self.metrics.confusion

    def update(self, batch: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
        """Add one batch (see the class docstring)."""
        pred = np.asarray(outputs[PRED_KEY])
        target = np.asarray(batch[types.SEGMENTATION])
        if pred.shape != target.shape or pred.ndim != 3:
            raise ValueError(
                f"pred_segmentation and segmentation must both be (B, H, W); got {pred.shape} "
                f"and {target.shape}"
            )
        valid = batch.get(types.EXAMPLE_VALID)
        valid = np.ones(pred.shape[0], bool) if valid is None else np.asarray(valid, bool)
        self.metrics.update(pred, target, valid)
        self.num_examples += int(valid.sum())

    def result(self) -> dict[str, float]:
        """``pixel_accuracy``, ``mean_accuracy``, ``mIoU``, ``fwIoU`` (NaN when empty),
        ``num_examples``, and each class's IoU as ``class_iou/K`` (class index ``K``, 0 =
        background; NaN for a class neither present nor predicted): which classes limit mIoU."""
        per_class = metrics_from_confusion(self.confusion)["per_class_iou"]
        return {
            **self.metrics.result(),
            "num_examples": float(self.num_examples),
            **{f"class_iou/{k}": float(v) for k, v in enumerate(per_class)},
        }
