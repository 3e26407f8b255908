"""Classification + localization: softmax loss on the class, L2 or smooth-L1 on the box.

:class:`LocalizationTask` implements the ``Task`` protocol of :mod:`jaxcv.tasks.base` for a
:class:`~jaxcv.models.localizer.Localizer` (``apply(...) -> {"logits": (B, K), "box_deltas":
(B, 4) | (B, K, 4)}``). The box target of an image is its first valid ground-truth box
(``boxes (B, M, 4)`` xyxy pixels, ``valid (B, M)``), encoded as R-CNN deltas
(:func:`jaxcv.ops.boxes.encode_boxes`, weights ``box_weights``) relative to the ``(0, 0, W, H)``
window of the input. Class-specific regression trains the ground-truth class's box and
predicts the predicted class's box.

With ``window=(h, w)`` the network sees ``h x w`` windows of larger scenes: training samples
object and background windows from each scene (:mod:`jaxcv.tasks.window_sampling`; a model
with ``background=True`` learns a class ``K`` for "no object", the detector's way to reject
the many empty windows of a sliding-window scan), and evaluation resizes the whole scene to
the window, then maps the predicted box back to the scene's pixels.

:class:`LocalizationEvaluator` reports, on the host in float64:

* ``accuracy``: top-1 classification accuracy;
* ``localization_accuracy``: the ImageNet definition, the predicted class is right *and* the
  predicted box has IoU ``>= 0.5`` with a ground-truth box of the image's class (any valid box
  when the batch has no ``classes``);
* ``mean_iou``: mean over images of the best IoU of the predicted box with such a box;
* ``loss`` (plain cross-entropy), ``num_examples``, ``num_with_box``.

Images without any valid ground-truth box count for ``accuracy`` and as localization failures.
Datasets without an image-level ``label`` (e.g. VOC) use the first valid object's class
(:func:`image_labels`); images without objects are then left out.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcv import types
from jaxcv.ops.boxes import clip_boxes, decode_boxes, elementwise_box_iou, encode_boxes
from jaxcv.ops.losses import smooth_l1, softmax_cross_entropy
from jaxcv.tasks.inputs import batch_images, check_image_batch
from jaxcv.tasks.settings import replace_settings, settings_from_config
from jaxcv.tasks.window_sampling import WindowLabel, WindowSampling, training_windows

__all__ = [
    "LOCALIZATION_KEYS",
    "LocalizationEvaluator",
    "LocalizationSettings",
    "LocalizationTask",
    "image_labels",
    "localization_metrics",
    "task_from_config",
]

BOX_LOSSES = ("smooth_l1", "l2")
#: The batch keys the task needs (``label`` is used too when the dataset has it).
LOCALIZATION_KEYS = (types.IMAGE, types.BOXES, types.CLASSES, types.VALID)


def _check_batch(batch: dict[str, Any]) -> None:
    images = batch[types.IMAGE]
    check_image_batch(images)
    b = images.shape[0]
    if types.LABEL in batch and tuple(batch[types.LABEL].shape) != (b,):
        raise ValueError(f"batch['label'] must be ({b},); got shape {batch[types.LABEL].shape}")
    boxes, valid = batch[types.BOXES], batch[types.VALID]
    if boxes.ndim != 3 or boxes.shape[0] != b or boxes.shape[-1] != 4:
        raise ValueError(f"batch['boxes'] must be ({b}, M, 4); got shape {boxes.shape}")
    if tuple(valid.shape) != tuple(boxes.shape[:2]):
        raise ValueError(f"batch['valid'] must be {boxes.shape[:2]}; got shape {valid.shape}")


def target_boxes(boxes: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The first valid box of positive size of each image.

    Args:
      boxes: ``(B, M, 4)`` xyxy pixels.
      valid: ``(B, M)`` bool.

    Returns:
      ``(B, 4)`` boxes (zeros where none is valid) and ``(B,)`` bool ``has_box``.
    """
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be (B, M, 4); got shape {boxes.shape}")
    # Degenerate boxes (zero or negative width/height) cannot be regression targets.
    usable = valid.astype(bool) & (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
    first = jnp.argmax(usable, axis=1)
    has_box = jnp.any(usable, axis=1)
    box = jnp.take_along_axis(boxes, first[:, None, None], axis=1)[:, 0]
    return jnp.where(has_box[:, None], box, 0.0), has_box


def image_labels(batch: dict[str, Any], xp=jnp) -> tuple[Any, Any]:
    """The image-level class of each image and whether it is known.

    ``batch['label'] (B,)`` when present (all known); otherwise, ImageNet-style, the class of
    the first valid object, ``classes - 1`` in ``0..K-1``, known only for images with a valid
    object (``classes (B, M)`` 1-based, ``valid (B, M)``). ``xp`` is ``jnp`` or ``np``.

    Returns:
      ``(B,)`` int32 labels (0 where unknown) and ``(B,)`` bool ``known``.
    """
    if types.LABEL in batch:
        labels = xp.asarray(batch[types.LABEL]).astype(xp.int32)
        return labels, xp.ones(labels.shape, bool)
    valid = xp.asarray(batch[types.VALID]).astype(bool)
    first = xp.argmax(valid, axis=1)
    classes = xp.take_along_axis(xp.asarray(batch[types.CLASSES]), first[:, None], axis=1)[:, 0]
    known = valid.any(axis=1)
    return xp.where(known, classes - 1, 0).astype(xp.int32), known


def _select(deltas: jax.Array, classes: jax.Array) -> jax.Array:
    """``(B, 4)`` class-agnostic deltas as they are, or row ``classes`` of ``(B, K, 4)``."""
    if deltas.ndim == 2:
        return deltas
    return jnp.take_along_axis(deltas, classes[:, None, None], axis=1)[:, 0]


@dataclasses.dataclass(frozen=True)
class LocalizationSettings:
    """Hyperparameters of :class:`LocalizationTask`, from ``config.localization``.

    Attributes:
      box_loss: ``"smooth_l1"`` or ``"l2"`` (``0.5 * x**2``), summed over the 4 deltas.
      box_loss_weight: weight of the box loss against the class loss.
      box_weights: ``(wx, wy, ww, wh)`` of the delta encoding.
      smooth_l1_beta: the smooth-L1 transition point.
      label_smoothing: label smoothing of the class loss. Read from
        ``config.localization.label_smoothing``, else from ``config.train.label_smoothing``,
        where configs kept it before (``experiments/shapes_localize.py``); the section wins.
      window: ``(h, w)`` network input for scenes of another size, or None (the input is the
        whole image). With a window, training samples ``R`` windows per scene
        (:func:`jaxcv.tasks.window_sampling.training_windows`: object windows, background
        windows with class ``K``, windows in between ignored), and evaluation resizes the
        whole scene to the window and maps the predicted box back to the scene's pixels.
      sampling: the window sampling settings (``config.localization.sampling`` holds the
        fields of :class:`WindowSampling`).
    """

    box_loss: str = "smooth_l1"
    box_loss_weight: float = 1.0
    box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    smooth_l1_beta: float = 1.0
    label_smoothing: float = 0.0
    window: tuple[int, int] | None = None
    sampling: WindowSampling = dataclasses.field(default_factory=WindowSampling)

    def __post_init__(self):
        if self.box_loss not in BOX_LOSSES:
            raise ValueError(f"box_loss must be one of {BOX_LOSSES}; got {self.box_loss!r}")
        if self.box_loss_weight < 0:
            raise ValueError(f"box_loss_weight must be >= 0; got {self.box_loss_weight}")
        if min(self.box_weights) <= 0:
            raise ValueError(f"box_weights must be 4 positive numbers; got {self.box_weights!r}")
        if self.window is not None and min(self.window) < 1:
            raise ValueError(f"window must be (h, w) positive or None; got {self.window!r}")


class LocalizationTask:
    """The ``Task`` protocol for classification + localization.

    Args:
      model: a module returning ``{"logits": (B, K) | (B, K + 1), "box_deltas": (B, 4) |
        (B, K, 4)}`` with ``num_classes`` (``K``) and ``background`` (whether the last logit
        is a background class) attributes, like :class:`~jaxcv.models.localizer.Localizer`.
      settings: :class:`LocalizationSettings` (default: the class defaults).
      **overrides: fields of :class:`LocalizationSettings` replacing those of ``settings``
        (``sampling=None`` means the default :class:`WindowSampling`).
    """

    def __init__(
        self, model: nn.Module, settings: LocalizationSettings | None = None, **overrides: Any
    ):
        if overrides.get("sampling", WindowSampling()) is None:
            overrides.pop("sampling")
        self.settings = s = replace_settings(settings or LocalizationSettings(), overrides)
        self.model = model
        self.num_classes = int(model.num_classes)
        self.background = bool(getattr(model, "background", False))
        self.box_loss = s.box_loss
        self.box_loss_weight = s.box_loss_weight
        self.box_weights = s.box_weights
        self.smooth_l1_beta = s.smooth_l1_beta
        self.label_smoothing = s.label_smoothing
        self.window = s.window
        self.sampling = s.sampling

    def init_variables(self, rng: jax.Array, batch: dict[str, Any]) -> dict:
        """Initialise from ``batch['image'] (B, H, W, C)`` (a window-sized input with
        ``window``): ``{'params', 'batch_stats'?}``."""
        images = batch_images(batch)
        if self.window is not None:
            images = jnp.zeros((1, *self.window, images.shape[-1]), images.dtype)
        params_rng, dropout_rng = jax.random.split(rng)
        return dict(
            self.model.init({"params": params_rng, "dropout": dropout_rng}, images, train=False)
        )

    def _window(self, images: jax.Array) -> jax.Array:
        h, w = images.shape[1:3]
        return jnp.array([0.0, 0.0, float(w), float(h)], jnp.float32)

    def _to_window(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Whole scenes resized to the window, and ``(4,)`` scene pixels per window pixel."""
        if self.window is None or tuple(images.shape[1:3]) == self.window:
            return images, jnp.ones((4,), jnp.float32)
        b, h, w, c = images.shape
        resized = jax.image.resize(images.astype(jnp.float32), (b, *self.window, c), "linear")
        sx, sy = w / self.window[1], h / self.window[0]
        return resized, jnp.array([sx, sy, sx, sy], jnp.float32)

    def _examples(self, batch, rng, train: bool) -> tuple[dict[str, jax.Array], jax.Array]:
        """The network inputs with their class/box targets and weights, all ``(N, ...)``."""
        images = batch[types.IMAGE]
        labels, known = image_labels(batch)
        weights = jnp.ones(labels.shape, jnp.float32)
        if types.EXAMPLE_VALID in batch:
            weights = batch[types.EXAMPLE_VALID].astype(jnp.float32)
        weights = weights * known.astype(jnp.float32)
        if self.window is not None and train:
            if rng is None:
                raise ValueError("training with a window needs an rng to sample windows")
            rng, key = jax.random.split(rng)
            ex = training_windows(
                key,
                images,
                batch[types.BOXES],
                batch[types.CLASSES],
                batch[types.VALID],
                self.window,
                self.sampling,
                num_classes=self.num_classes,
                background=self.background,
            )
            n = ex["class_target"].size
            flat = {
                "inputs": ex["images"].reshape(n, *ex["images"].shape[2:]),
                "class_target": ex["class_target"].reshape(n),
                "class_weight": (ex["class_weight"] * weights[:, None]).reshape(n),
                "box_target": ex["box_target"].reshape(n, 4),
                "box_weight": (ex["box_weight"] * weights[:, None]).reshape(n),
                "background": (ex["label"] == int(WindowLabel.BACKGROUND)).reshape(n),
            }
            return flat, rng
        inputs, per_pixel = self._to_window(images)
        gt_box, has_box = target_boxes(batch[types.BOXES], batch[types.VALID])
        # Images without a box get a dummy target (the window) and zero weight.
        box = jnp.where(has_box[:, None], gt_box / per_pixel, self._window(inputs))
        return {
            "inputs": inputs,
            "class_target": labels,
            "class_weight": weights,
            "box_target": box,
            "box_weight": weights * has_box.astype(jnp.float32),
            "background": jnp.zeros(labels.shape, bool),
        }, rng

    def loss_fn(self, params, model_state, batch, rng, *, train: bool = True):
        """Class cross-entropy plus ``box_loss_weight`` times the box loss, means over the
        trained examples (images, or with ``window`` the sampled windows when training).

        Args:
          params, model_state: the model's collections.
          batch: ``image (B, H, W, C)``, ``boxes (B, M, 4)`` xyxy pixels, ``valid (B, M)``,
            ``label (B,)`` or ``classes (B, M)`` (see :func:`image_labels`; ``classes`` is
            needed with ``window``), optionally ``example_valid (B,)``.
          rng: dropout key (and window sampling key with ``window``).
          train: training mode.

        Returns:
          ``(loss, (metrics, new_model_state))``; metrics ``loss``, ``cls_loss``,
          ``box_loss``, ``accuracy`` (over examples with a class target, background
          included), ``mean_iou`` and ``localization_accuracy`` (over examples with a box),
          ``background_fraction`` (of the class-trained examples).
        """
        _check_batch(batch)
        ex, rng = self._examples(batch, rng, train)
        inputs = ex["inputs"]
        variables = {"params": params, **(model_state or {})}
        mutable = [k for k in variables if k != "params"]
        if train:
            rngs = {"dropout": rng} if rng is not None else {}
            if mutable:
                out, updates = self.model.apply(
                    variables, inputs, train=True, rngs=rngs, mutable=mutable
                )
            else:
                out, updates = self.model.apply(variables, inputs, train=True, rngs=rngs), {}
        else:
            out, updates = self.model.apply(variables, inputs, train=False), {}
        logits = out["logits"].astype(jnp.float32)
        k = self.num_classes
        cls_w, box_w = ex["class_weight"], ex["box_weight"]
        cls_loss = softmax_cross_entropy(
            logits, ex["class_target"], cls_w, label_smoothing=self.label_smoothing
        )
        window = self._window(inputs)
        targets = encode_boxes(ex["box_target"], window, self.box_weights)
        all_deltas = out["box_deltas"].astype(jnp.float32)
        deltas = _select(all_deltas, jnp.minimum(ex["class_target"], k - 1))
        if self.box_loss == "smooth_l1":
            per_coord = smooth_l1(deltas, targets, self.smooth_l1_beta, reduction="none")
        else:
            per_coord = 0.5 * jnp.square(deltas - targets)
        per_example = jnp.sum(per_coord, axis=-1)
        box_norm = jnp.maximum(jnp.sum(box_w), 1.0)
        box_loss = jnp.sum(per_example * box_w) / box_norm
        loss = cls_loss + self.box_loss_weight * box_loss
        pred = jnp.argmax(logits, axis=-1)
        pred_obj = jnp.argmax(logits[:, :k], axis=-1)
        pred_box = clip_boxes(
            decode_boxes(_select(all_deltas, pred_obj), window, self.box_weights),
            inputs.shape[1:3],
        )
        iou = elementwise_box_iou(pred_box, ex["box_target"])
        correct = (pred == ex["class_target"]).astype(jnp.float32)
        cls_norm = jnp.maximum(jnp.sum(cls_w), 1.0)
        metrics = {
            "loss": loss,
            "cls_loss": cls_loss,
            "box_loss": box_loss,
            "accuracy": jnp.sum(correct * cls_w) / cls_norm,
            "mean_iou": jnp.sum(iou * box_w) / box_norm,
            "localization_accuracy": jnp.sum(correct * (iou >= 0.5) * box_w) / box_norm,
            "background_fraction": jnp.sum(ex["background"] * cls_w) / cls_norm,
        }
        new_model_state = dict(model_state or {})
        if train and updates:
            new_model_state.update(updates)
        return loss, (metrics, new_model_state)

    def predict_fn(self, variables: dict, batch: dict[str, Any]) -> dict[str, jax.Array]:
        """Inference on ``batch['image'] (B, H, W, C)`` (resized to ``window`` when set).

        Returns:
          ``logits (B, K)`` (the object classes' logits), ``probs (B, K)`` (their softmax),
          ``pred_label (B,)`` int32 and ``pred_boxes (B, 4)`` xyxy pixels of the input image,
          clipped to it (the predicted class's box when the regression is class-specific);
          with a background class also ``background_prob (B,)`` (of the ``K + 1``-way softmax).
        """
        images = batch_images(batch)
        inputs, per_pixel = self._to_window(images)
        out = self.model.apply(variables, inputs, train=False)
        all_logits = out["logits"].astype(jnp.float32)
        logits = all_logits[:, : self.num_classes]
        pred = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        deltas = _select(out["box_deltas"].astype(jnp.float32), pred)
        boxes = decode_boxes(deltas, self._window(inputs), self.box_weights) * per_pixel
        outputs = {
            "logits": logits,
            "probs": jax.nn.softmax(logits, axis=-1),
            "pred_label": pred,
            "pred_boxes": clip_boxes(boxes, images.shape[1:3]),
        }
        if self.background:
            outputs["background_prob"] = jax.nn.softmax(all_logits, axis=-1)[:, -1]
        return outputs

    def make_evaluator(self) -> LocalizationEvaluator:
        """A fresh :class:`LocalizationEvaluator`."""
        return LocalizationEvaluator()


def _best_iou(pred_boxes: np.ndarray, boxes: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``(N,)`` best IoU of ``pred_boxes (N, 4)`` with the valid ``boxes (N, M, 4)``."""
    p = pred_boxes[:, None, :]
    iw = np.clip(
        np.minimum(p[..., 2], boxes[..., 2]) - np.maximum(p[..., 0], boxes[..., 0]), 0, None
    )
    ih = np.clip(
        np.minimum(p[..., 3], boxes[..., 3]) - np.maximum(p[..., 1], boxes[..., 1]), 0, None
    )
    inter = iw * ih

    def area(b):
        return np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)

    union = area(p) + area(boxes) - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return np.where(valid, iou, 0.0).max(axis=1, initial=0.0)


def localization_metrics(
    logits: np.ndarray,
    pred_boxes: np.ndarray,
    labels: np.ndarray,
    boxes: np.ndarray,
    valid: np.ndarray,
    iou_threshold: float = 0.5,
) -> dict[str, np.ndarray]:
    """Per-example localization figures (float64 NumPy).

    Args:
      logits: ``(N, K)`` class scores.
      pred_boxes: ``(N, 4)`` predicted xyxy boxes.
      labels: ``(N,)`` true classes in ``0..K-1``.
      boxes: ``(N, M, 4)`` ground-truth xyxy boxes.
      valid: ``(N, M)`` bool.
      iou_threshold: the localization IoU threshold (ImageNet: 0.5).

    Returns:
      ``correct (N,)``, ``iou (N,)`` (best IoU with a valid ground-truth box, 0 without one),
      ``localized (N,)`` (class right and ``iou >= iou_threshold``), ``has_box (N,)``.
    """
    logits = np.asarray(logits, np.float64)
    pred_boxes = np.asarray(pred_boxes, np.float64)
    boxes = np.asarray(boxes, np.float64)
    labels = np.asarray(labels).astype(np.int64)
    valid = np.asarray(valid).astype(bool)
    n = labels.shape[0]
    if logits.ndim != 2 or logits.shape[0] != n:
        raise ValueError(f"logits must be ({n}, K); got shape {logits.shape}")
    if pred_boxes.shape != (n, 4):
        raise ValueError(f"pred_boxes must be ({n}, 4); got shape {pred_boxes.shape}")
    if boxes.ndim != 3 or boxes.shape[0] != n or boxes.shape[2] != 4:
        raise ValueError(f"boxes must be ({n}, M, 4); got shape {boxes.shape}")
    if valid.shape != boxes.shape[:2]:
        raise ValueError(f"valid must be {boxes.shape[:2]}; got shape {valid.shape}")
    correct = logits.argmax(axis=1) == labels
    iou = _best_iou(pred_boxes, boxes, valid)
    return {
        "correct": correct,
        "iou": iou,
        "localized": correct & (iou >= iou_threshold),
        "has_box": valid.any(axis=1),
    }


class LocalizationEvaluator:
    """Accumulates localization metrics over an evaluation pass (see the module docstring)."""

    def __init__(self, iou_threshold: float = 0.5):
        self.iou_threshold = float(iou_threshold)
        self._sums = {"correct": 0.0, "localized": 0.0, "iou": 0.0, "loss": 0.0}
        self._count = 0
        self._with_box = 0

    def update(self, batch: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
        """Add one batch.

        Args:
          batch: ``label (B,)`` (or ``classes (B, M)``), ``boxes (B, M, 4)``, ``valid (B, M)``,
            optional ``example_valid (B,)``.
          outputs: ``logits (B, K)`` and ``pred_boxes (B, 4)`` from
            :meth:`LocalizationTask.predict_fn`.
        """
        labels, keep = image_labels(batch, np)
        if types.EXAMPLE_VALID in batch:
            keep = keep & np.asarray(batch[types.EXAMPLE_VALID]).astype(bool)
        logits = np.asarray(outputs["logits"], np.float64)[keep]
        labels = labels.astype(np.int64)[keep]
        valid = np.asarray(batch[types.VALID]).astype(bool)[keep]
        if types.CLASSES in batch:
            # ImageNet: the box must match a ground-truth box *of the image's class*.
            valid = valid & (np.asarray(batch[types.CLASSES])[keep] == labels[:, None] + 1)
        m = localization_metrics(
            logits,
            np.asarray(outputs["pred_boxes"])[keep],
            labels,
            np.asarray(batch[types.BOXES])[keep],
            valid,
            self.iou_threshold,
        )
        if labels.size:
            shifted = logits - logits.max(axis=1, keepdims=True)
            log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            self._sums["loss"] -= float(log_probs[np.arange(labels.size), labels].sum())
        self._sums["correct"] += float(m["correct"].sum())
        self._sums["localized"] += float(m["localized"].sum())
        self._sums["iou"] += float(m["iou"][m["has_box"]].sum())
        self._count += int(labels.size)
        self._with_box += int(m["has_box"].sum())

    def result(self) -> dict[str, float]:
        """``accuracy``, ``localization_accuracy``, ``mean_iou``, ``loss``, ``num_examples``,
        ``num_with_box``; NaN when empty."""
        n, nb = self._count, self._with_box
        nan = float("nan")
        return {
            "accuracy": self._sums["correct"] / n if n else nan,
            "localization_accuracy": self._sums["localized"] / n if n else nan,
            "mean_iou": self._sums["iou"] / nb if nb else nan,
            "loss": self._sums["loss"] / n if n else nan,
            "num_examples": float(n),
            "num_with_box": float(nb),
        }


def task_from_config(config: Any, model: nn.Module) -> LocalizationTask:
    """The task of ``config.task == "localization"`` around ``model``, with its
    :class:`LocalizationSettings` from ``config.localization`` (``label_smoothing`` also from
    ``config.train``)."""
    settings = settings_from_config(
        LocalizationSettings, config, "localization", fallbacks={"label_smoothing": "train"}
    )
    return LocalizationTask(model, settings)
