"""Image classification: softmax cross-entropy, accuracy, and a host-side evaluator.

:class:`ClassificationTask` implements the ``Task`` protocol of :mod:`jaxcv.tasks.base` for any
classifier module ``model.apply(variables, images (B, H, W, C), train=...) -> logits (B, K)``.
:class:`ClassificationEvaluator` accumulates accuracy, top-5 accuracy (when ``K > 5``), the mean
cross-entropy and a confusion matrix over an evaluation pass, skipping padded examples
(``example_valid``). :func:`task_from_config` builds the task of ``config.task ==
"classification"`` with its :class:`ClassificationSettings`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcv import types
from jaxcv.tasks.inputs import batch_images
from jaxcv.tasks.settings import replace_settings, settings_from_config

__all__ = [
    "ClassificationEvaluator",
    "ClassificationSettings",
    "ClassificationTask",
    "softmax_cross_entropy",
    "task_from_config",
]


def _check_logits_labels(logits, labels) -> None:
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (B, K); got shape {tuple(logits.shape)}")
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"labels must have shape (B,) = ({logits.shape[0]},); got shape {tuple(labels.shape)}"
        )


def softmax_cross_entropy(
    logits: jax.Array, labels: jax.Array, *, label_smoothing: float = 0.0
) -> jax.Array:
    """Per-example softmax cross-entropy with optional label smoothing.

    Args:
      logits: ``(B, K)`` unnormalised class scores (any float dtype; computed in float32).
      labels: ``(B,)`` integer classes in ``0..K-1``.
      label_smoothing: ``eps`` in ``[0, 1)``; the target is ``(1 - eps) * onehot + eps / K``.

    Returns:
      ``(B,)`` float32 losses; NaN for a label outside ``0..K-1`` (its one-hot target would be
      all zeros and its loss a silent 0), so training stops at that batch instead of ignoring
      the example.
    """
    _check_logits_labels(logits, labels)
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing}")
    logits = logits.astype(jnp.float32)
    num_classes = logits.shape[-1]
    targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
    losses = -jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1)
    return jnp.where((labels >= 0) & (labels < num_classes), losses, jnp.nan)


@dataclasses.dataclass(frozen=True)
class ClassificationSettings:
    """Hyperparameters of :class:`ClassificationTask`, from ``config.classification``.

    Attributes:
      label_smoothing: ``eps`` in ``[0, 1)`` of the training loss (the evaluator's loss is the
        plain cross-entropy). Read from ``config.classification.label_smoothing``, else from
        ``config.train.label_smoothing``, where configs kept it before the section existed
        (``experiments/cifar10_resnet18.py``, older run folders); the section wins.
    """

    label_smoothing: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1); got {self.label_smoothing}")


class ClassificationTask:
    """The ``Task`` protocol for image classifiers.

    Args:
      model: a Linen module mapping images ``(B, H, W, C)`` to logits ``(B, K)``; it takes
        ``train=bool``, keeps BatchNorm statistics in ``batch_stats`` and uses the ``dropout``
        rng.
      settings: :class:`ClassificationSettings` (default: the class defaults).
      **overrides: fields of :class:`ClassificationSettings` replacing those of ``settings``
        (``label_smoothing=0.1``).
    """

    def __init__(
        self, model: nn.Module, settings: ClassificationSettings | None = None, **overrides: Any
    ):
        self.model = model
        self.settings = replace_settings(settings or ClassificationSettings(), overrides)

    @property
    def label_smoothing(self) -> float:
        """``settings.label_smoothing``."""
        return self.settings.label_smoothing

    def init_variables(self, rng: jax.Array, batch: dict[str, Any]) -> dict:
        """Initialise the model's variables from ``batch['image'] (B, H, W, C)``.

        Returns:
          ``{'params': ..., 'batch_stats': ...}`` (``batch_stats`` only for models with BatchNorm).
        """
        images = batch_images(batch)
        params_rng, dropout_rng = jax.random.split(rng)
        variables = self.model.init(
            {"params": params_rng, "dropout": dropout_rng}, images, train=False
        )
        return dict(variables)

    def _apply(self, variables, images, rng, train):
        if train:
            mutable = [k for k in variables if k != "params"]
            rngs = {"dropout": rng} if rng is not None else {}
            if mutable:
                return self.model.apply(variables, images, train=True, rngs=rngs, mutable=mutable)
            return self.model.apply(variables, images, train=True, rngs=rngs), {}
        return self.model.apply(variables, images, train=False), None

    def loss_fn(self, params, model_state, batch, rng, *, train: bool = True):
        """Mean softmax cross-entropy of ``batch`` and its metrics.

        Args:
          params: the ``params`` collection.
          model_state: the other collections (e.g. ``{'batch_stats': ...}``); may be empty.
          batch: ``image (B, H, W, C)``, ``label (B,)`` and optionally ``example_valid (B,)``
            (padded examples get zero weight).
          rng: dropout key.
          train: training mode (BatchNorm batch statistics, dropout on).

        Returns:
          ``(loss, (metrics, new_model_state))``: scalar float32 loss, metrics ``loss`` and
          ``accuracy`` (scalars), and the updated ``model_state`` (unchanged when not training).
        """
        images, labels = batch_images(batch), batch[types.LABEL]
        variables = {"params": params, **(model_state or {})}
        logits, updates = self._apply(variables, images, rng, train)
        _check_logits_labels(logits, labels)
        losses = softmax_cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        if types.EXAMPLE_VALID in batch:
            weights = batch[types.EXAMPLE_VALID].astype(jnp.float32)
        else:
            weights = jnp.ones_like(losses)
        denom = jnp.maximum(jnp.sum(weights), 1.0)
        # padded examples weigh 0 whatever their label (a NaN must not leak from them)
        loss = jnp.sum(jnp.where(weights > 0, losses, 0.0) * weights) / denom
        correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
        accuracy = jnp.sum(correct * weights) / denom
        new_model_state = dict(model_state or {})
        if train and updates:
            new_model_state.update(updates)
        return loss, ({"loss": loss, "accuracy": accuracy}, new_model_state)

    def predict_fn(self, variables: dict, batch: dict[str, Any]) -> dict[str, jax.Array]:
        """Inference on ``batch['image'] (B, H, W, C)``.

        Returns:
          ``logits (B, K)`` float32, ``probs (B, K)`` float32 softmax, ``pred_label (B,)`` int32.
        """
        images = batch_images(batch)
        logits = self.model.apply(variables, images, train=False).astype(jnp.float32)
        if logits.ndim != 2:
            raise ValueError(f"the model must return logits (B, K); got shape {logits.shape}")
        return {
            "logits": logits,
            "probs": jax.nn.softmax(logits, axis=-1),
            "pred_label": jnp.argmax(logits, axis=-1).astype(jnp.int32),
        }

    def make_evaluator(self) -> ClassificationEvaluator:
        """A fresh :class:`ClassificationEvaluator`."""
        return ClassificationEvaluator(num_classes=getattr(self.model, "num_classes", None))


class ClassificationEvaluator:
    """Accumulates classification metrics over an evaluation pass, on the host in float64.

    ``result()`` gives ``accuracy``, ``loss`` (mean plain cross-entropy), ``num_examples`` and,
    when ``K > 5``, ``top5_accuracy``. ``confusion_matrix`` is the ``(K, K)`` int64 count matrix,
    rows = true class, columns = predicted class.

    Args:
      num_classes: ``K``; when ``None`` it is taken from the first logits seen.
    """

    def __init__(self, num_classes: int | None = None):
        self.num_classes = num_classes
        self.confusion_matrix: np.ndarray | None = None
        self._loss_sum = 0.0
        self._top5 = 0
        self._count = 0

    def update(self, batch: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
        """Add one batch: ``batch['label'] (B,)``, optional ``batch['example_valid'] (B,)``, and
        ``outputs['logits'] (B, K)`` from :meth:`ClassificationTask.predict_fn`."""
        logits = np.asarray(outputs["logits"], dtype=np.float64)
        labels = np.asarray(batch[types.LABEL]).astype(np.int64)
        _check_logits_labels(logits, labels)
        if types.EXAMPLE_VALID in batch:
            keep = np.asarray(batch[types.EXAMPLE_VALID]).astype(bool)
            if keep.shape != labels.shape:
                raise ValueError(
                    f"example_valid must have shape {labels.shape}; got shape {keep.shape}"
                )
            logits, labels = logits[keep], labels[keep]
        num_classes = logits.shape[1]
        if self.num_classes is None:
            self.num_classes = num_classes
        if num_classes != self.num_classes:
            raise ValueError(f"expected logits (B, {self.num_classes}); got (B, {num_classes})")
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"labels must be in 0..{num_classes - 1}; got range "
                f"[{labels.min()}, {labels.max()}]"
            )
        if self.confusion_matrix is None:
            self.confusion_matrix = np.zeros((num_classes, num_classes), np.int64)
        if not labels.size:
            return
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        self._loss_sum += float(-log_probs[np.arange(labels.size), labels].sum())
        preds = logits.argmax(axis=1)
        np.add.at(self.confusion_matrix, (labels, preds), 1)
        true_logit = logits[np.arange(labels.size), labels][:, None]
        # Rank of the true class: how many classes score strictly higher (ties count as hits).
        rank = (logits > true_logit).sum(axis=1)
        self._top5 += int((rank < 5).sum())
        self._count += int(labels.size)

    def result(self) -> dict[str, float]:
        """``{'accuracy', 'loss', 'num_examples'[, 'top5_accuracy']}``; NaN when empty."""
        n = self._count
        correct = int(np.trace(self.confusion_matrix)) if self.confusion_matrix is not None else 0
        out = {
            "accuracy": correct / n if n else float("nan"),
            "loss": self._loss_sum / n if n else float("nan"),
            "num_examples": float(n),
        }
        if self.num_classes is not None and self.num_classes > 5:
            out["top5_accuracy"] = self._top5 / n if n else float("nan")
        return out


def task_from_config(config: Any, model: nn.Module) -> ClassificationTask:
    """The task of ``config.task == "classification"`` around ``model``, with its
    :class:`ClassificationSettings` from ``config.classification`` (``label_smoothing`` also
    from ``config.train``)."""
    settings = settings_from_config(
        ClassificationSettings, config, "classification", fallbacks={"label_smoothing": "train"}
    )
    return ClassificationTask(model, settings)
