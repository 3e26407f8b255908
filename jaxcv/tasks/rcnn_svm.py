"""R-CNN's per-class linear SVMs and ridge box regressors, fitted after fine-tuning.

Girshick, Donahue, Darrell and Malik, "Rich feature hierarchies for accurate object detection
and semantic segmentation" (CVPR 2014): sec. 2.3 (one linear SVM per class on ``fc7``, hard
negative mining), appendix B (which windows are positives and negatives) and appendix C
(class-specific ridge regression of the box from ``pool5``). :mod:`jaxcv.tasks.rcnn` uses the
fine-tuned softmax instead; this module fits the paper's classifiers on the features of the
fine-tuned network (:meth:`jaxcv.models.rcnn.RCNN.features`) so both can be reported.

:func:`fit_svms` ``(task, variables, batches, settings) -> (svm_tree, stats)``:

1. :func:`extract_training_set`: for ``settings.num_images`` training images, the ``pool5``
   and ``fc7`` features of every ground-truth box and valid proposal (one jitted function,
   proposals in chunks of the task's ``test_chunk_size``), labelled by :func:`svm_labels`:
   for class ``c``, positives are the ground-truth boxes of ``c`` only; negatives the windows
   (proposals, and ground-truth boxes of other classes) whose IoU with every ground-truth box
   of ``c`` is below ``negative_iou`` (0.3); the windows in between are not used. Regression
   examples: the windows whose best-overlapping ground-truth box (any class) has IoU >=
   ``ridge_iou`` (0.6), for that box's class, target: that box.
2. ``fc7`` and ``pool5`` are each scaled so that their mean L2 norm over the training windows
   is ``feature_norm`` (20); the scales are kept and applied at test time.
3. Per class, :func:`mine_hard_negatives`: ``sklearn.svm.LinearSVC`` (liblinear, L2-regularised
   hinge loss, ``C`` = 0.001, positive class weight 2, intercept feature ``bias_scale`` = 10)
   on the positives and a random subset of the negatives (at most
   ``max_negatives_per_image`` per image), then rounds that add every negative scoring above
   ``hard_threshold`` (-1: inside the margin) and refit, until no negative is added or
   ``hard_negative_rounds`` refits.
4. Per class, :func:`fit_ridge`: ``sklearn.linear_model.Ridge`` (``ridge_alpha`` = 1000) from
   the scaled ``pool5`` features to the box-coder deltas
   (:func:`jaxcv.ops.boxes.encode_boxes` with
   :data:`~jaxcv.tasks.rcnn_targets.ROI_BOX_WEIGHTS`), so the regressor is decoded by the same
   code as the network's ``bbox_pred``.

The result is a plain pytree of float32 arrays (``F5``, ``F7``: ``pool5`` and ``fc7`` widths,
``K`` classes)::

    {"svm_w": (F7, K), "svm_b": (K,), "feature_scale": (),
     "ridge_w": (F5, K, 4), "ridge_b": (K, 4), "pool5_scale": ()}

kept as the extra collection ``variables["svm"]`` (:data:`SVM_COLLECTION`) that
:class:`RCNNSVMTask` reads: ``predict_fn`` scores every proposal with the SVMs, regresses it
with the ridge regressors, then per-class NMS (``box_nms_threshold``, 0.3) through
:func:`~jaxcv.tasks.detection.postprocess_detections` with ``class_scores=True``. SVM scores
are margins, not probabilities: they are thresholded at ``SVMSettings.score_threshold``
(-inf: the top ``detections_per_image`` after NMS are kept, whatever their score).

Departures from the paper:

* Mining runs over the whole training set in rounds (random first-round negatives, then every
  hard negative of all images at once, never evicted), where the paper streamed the images
  once, retraining whenever enough new hard negatives had been cached and dropping easy ones
  (score < -1.2) from the cache. Both stop at an SVM for which no left-out negative is inside
  the margin, which is the SVM of all negatives (hinge loss: left-out examples with margin
  >= 1 have no loss and no gradient).
* The ridge intercept is not penalised (``sklearn.linear_model.Ridge``).
* The regression targets are multiplied by the box-coder weights ``(10, 10, 5, 5)``; ridge
  regression is linear in its targets, so the decoded boxes are those of unweighted targets.
* No score threshold by default (the paper kept every window after NMS for its evaluation).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcv import types
from jaxcv.models.rcnn import RCNN
from jaxcv.ops.boxes import box_iou, encode_boxes
from jaxcv.tasks.fast_rcnn import ProposalDetectionSettings, map_roi_chunks
from jaxcv.tasks.rcnn import RCNNTask
from jaxcv.tasks.rcnn_targets import ROI_BOX_WEIGHTS, batch_ground_truth
from jaxcv.tasks.settings import settings_from_config

__all__ = [
    "SVM_COLLECTION",
    "SVM_KEYS",
    "RCNNSVMTask",
    "SVMSettings",
    "SVMTrainingSet",
    "extract_training_set",
    "fit_ridge",
    "fit_svms",
    "mine_hard_negatives",
    "svm_labels",
    "svm_outputs",
    "svm_settings_from_config",
]

Array = jax.Array

#: The variables collection that holds the fitted SVMs and regressors.
SVM_COLLECTION = "svm"
#: The keys of a fitted tree (see the module docstring for shapes).
SVM_KEYS = ("svm_w", "svm_b", "feature_scale", "ridge_w", "ridge_b", "pool5_scale")


@dataclasses.dataclass(frozen=True)
class SVMSettings:
    """The paper's SVM and ridge hyperparameters (sec. 2.3, appendices B and C).

    SVMs: ``C``, ``positive_weight`` (class weight of the positives), ``bias_scale``
    (liblinear's ``intercept_scaling``, the paper's B), ``max_iter`` (liblinear's iteration
    cap). Features: ``feature_norm``, the mean L2 norm the training features are scaled to.
    Labels: ``negative_iou`` (negatives: IoU with every ground-truth box of the class below
    it). Mining: ``max_negatives_per_image`` random negatives per image in the first round,
    then at most ``hard_negative_rounds`` refits, each adding the negatives scoring above
    ``hard_threshold``. Regression: ``ridge_alpha``, ``ridge_iou`` (examples: best IoU with a
    ground-truth box >= it). ``num_images``: training images whose features are extracted (0:
    every image of the batches, which must then be finite). ``seed``: the first-round subset
    and liblinear's coordinate order. ``score_threshold``: test-time detections keep SVM scores
    above it.
    """

    C: float = 0.001
    positive_weight: float = 2.0
    bias_scale: float = 10.0
    max_iter: int = 10_000
    feature_norm: float = 20.0
    negative_iou: float = 0.3
    hard_negative_rounds: int = 3
    hard_threshold: float = -1.0
    max_negatives_per_image: int = 64
    ridge_alpha: float = 1000.0
    ridge_iou: float = 0.6
    num_images: int = 500
    seed: int = 0
    score_threshold: float = -math.inf

    def __post_init__(self) -> None:
        positive = ("C", "positive_weight", "bias_scale", "feature_norm", "max_iter")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"SVMSettings.{name} must be > 0; got {getattr(self, name)!r}")
        for name in ("negative_iou", "ridge_iou"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"SVMSettings.{name} must be in (0, 1]; got {getattr(self, name)}")
        if self.ridge_alpha < 0:
            raise ValueError(f"SVMSettings.ridge_alpha must be >= 0; got {self.ridge_alpha}")
        if self.max_negatives_per_image < 1:
            raise ValueError(
                f"SVMSettings.max_negatives_per_image must be >= 1; got "
                f"{self.max_negatives_per_image}"
            )
        for name in ("hard_negative_rounds", "num_images"):
            if getattr(self, name) < 0:
                raise ValueError(f"SVMSettings.{name} must be >= 0; got {getattr(self, name)}")


def svm_settings_from_config(config) -> SVMSettings:
    """:class:`SVMSettings` from ``config.svm`` (absent: the paper's defaults)."""
    return settings_from_config(SVMSettings, config, "svm")


# --------------------------------------------------------------------------------------------
# Labels


def _windows(proposals: Array, gt_boxes: Array) -> Array:
    """The windows features are extracted from: ``(B, M + P, 4)``, ground truth first."""
    return jnp.concatenate([gt_boxes, proposals], axis=1)


@functools.partial(jax.jit, static_argnames=("num_classes", "negative_iou", "ridge_iou"))
def _label_windows(
    proposals: Array,
    proposal_valid: Array,
    gt_boxes: Array,
    gt_classes: Array,
    gt_valid: Array,
    *,
    num_classes: int,
    negative_iou: float,
    ridge_iou: float,
) -> dict[str, Array]:
    """:func:`svm_labels` of a padded batch: the windows are :func:`_windows`, ``R = M + P``.

    Returns ``positive``, ``negative`` ``(B, R, K)`` bool, ``regression_class`` ``(B, R)``
    int32 (0: no regression example), ``regression_target`` ``(B, R, 4)`` and ``valid``
    ``(B, R)`` bool.
    """
    windows = _windows(proposals, gt_boxes)
    valid = jnp.concatenate([gt_valid, proposal_valid], axis=1)
    iou = box_iou(windows, gt_boxes)  # (B, R, M)
    classes = jnp.arange(1, num_classes + 1)
    of_class = gt_valid[..., None] & (gt_classes[..., None] == classes)  # (B, M, K)
    class_iou = jnp.max(jnp.where(of_class[:, None], iou[..., None], 0.0), axis=2)  # (B, R, K)
    pad = ((0, 0), (0, proposals.shape[1]), (0, 0))
    positive = jnp.pad(of_class, pad)  # only the ground-truth windows of the class
    negative = valid[..., None] & (class_iou < negative_iou) & ~positive
    matched = jnp.where(gt_valid[:, None, :], iou, -1.0)
    best = jnp.argmax(matched, axis=-1)  # (B, R)
    regress = valid & (jnp.max(matched, axis=-1) >= ridge_iou)
    unit = jnp.array([0.0, 0.0, 1.0, 1.0], jnp.float32)  # keeps masked-out log() finite
    target_box = jnp.take_along_axis(gt_boxes, best[..., None], axis=1)
    targets = encode_boxes(
        jnp.where(regress[..., None], target_box, unit),
        jnp.where(regress[..., None], windows, unit),
        ROI_BOX_WEIGHTS,
    )
    regression_class = jnp.where(regress, jnp.take_along_axis(gt_classes, best, axis=1), 0)
    return {
        "positive": positive,
        "negative": negative,
        "regression_class": regression_class.astype(jnp.int32),
        "regression_target": jnp.where(regress[..., None], targets, 0.0),
        "valid": valid,
    }


def svm_labels(
    proposals: Any,
    gt_boxes: Any,
    gt_classes: Any,
    num_classes: int,
    settings: SVMSettings | None = None,
) -> dict[str, np.ndarray]:
    """The SVM and ridge examples of one image (appendices B and C of the paper).

    The windows are the ground-truth boxes followed by the proposals. For class ``c``: the
    positives are the ground-truth boxes of class ``c`` (never a proposal, however close);
    the negatives are the windows whose IoU with every ground-truth box of class ``c`` is below
    ``negative_iou`` (so ground-truth boxes of other classes and proposals that overlap only
    other classes' objects too). A window whose best-overlapping ground-truth box has IoU >=
    ``ridge_iou`` is a regression example of that box's class, its target the box's deltas.

    Args:
      proposals: ``(P, 4)`` ``xyxy`` proposals (all valid).
      gt_boxes: ``(M, 4)`` ``xyxy`` ground truth; gt_classes: ``(M,)`` in ``1..K``.
      num_classes: ``K``.
      settings: :class:`SVMSettings` (``negative_iou``, ``ridge_iou``; None: the defaults).

    Returns:
      ``windows (M + P, 4)``; ``positive``, ``negative`` ``(M + P, K)`` bool (column ``k``:
      class ``k + 1``); ``regression_class (M + P,)`` int32 (0: none) and
      ``regression_target (M + P, 4)`` float32 (weights ``ROI_BOX_WEIGHTS``, 0 where none).
    """
    s = settings or SVMSettings()
    proposals = np.asarray(proposals, np.float32).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
    gt_classes = np.asarray(gt_classes, np.int32).reshape(-1)
    if gt_classes.shape[0] != gt_boxes.shape[0]:
        raise ValueError(
            f"gt_classes must be (M,) = ({gt_boxes.shape[0]},); got shape {gt_classes.shape}"
        )
    if gt_classes.size and not (1 <= gt_classes.min() and gt_classes.max() <= num_classes):
        raise ValueError(f"gt_classes must be in 1..{num_classes}; got {sorted(set(gt_classes))}")
    out = _label_windows(
        proposals[None],
        np.ones((1, len(proposals)), bool),
        gt_boxes[None],
        gt_classes[None],
        np.ones((1, len(gt_boxes)), bool),
        num_classes=num_classes,
        negative_iou=s.negative_iou,
        ridge_iou=s.ridge_iou,
    )
    labels = {k: np.asarray(v[0]) for k, v in out.items() if k != "valid"}
    labels["windows"] = np.concatenate([gt_boxes, proposals])
    return labels


# --------------------------------------------------------------------------------------------
# Fitting


def _svc(settings: SVMSettings):
    from sklearn.svm import LinearSVC

    return LinearSVC(
        C=settings.C,
        loss="hinge",  # the paper's liblinear -s 3: L2-regularised L1-loss (hinge) SVM, dual
        dual=True,
        class_weight={1: settings.positive_weight, -1: 1.0},
        intercept_scaling=settings.bias_scale,
        max_iter=settings.max_iter,
        random_state=settings.seed,
    )


def _fit_svc(positives: np.ndarray, negatives: np.ndarray, settings: SVMSettings):
    """``(w (F,), b)`` of the liblinear SVM of ``positives`` vs ``negatives``."""
    x = np.concatenate([positives, negatives])
    y = np.concatenate([np.ones(len(positives)), -np.ones(len(negatives))])
    svc = _svc(settings).fit(x, y)
    return svc.coef_[0].astype(np.float64), float(svc.intercept_[0])


def _first_negatives(
    negatives: np.ndarray, groups: np.ndarray, cap: int, rng: np.random.Generator
) -> np.ndarray:
    """At most ``cap`` random entries of ``negatives`` per group (image), sorted."""
    shuffled = negatives[rng.permutation(len(negatives))]
    ordered = shuffled[np.argsort(groups[shuffled], kind="stable")]
    group = groups[ordered]
    rank = np.arange(len(ordered)) - np.searchsorted(group, group, side="left")
    return np.sort(ordered[rank < cap])


def _decision(
    features: np.ndarray, rows: np.ndarray, w: np.ndarray, b: float, chunk: int = 65536
) -> np.ndarray:
    """``features[rows] @ w + b`` in float64, a chunk of rows at a time (no full copy)."""
    out = np.empty(len(rows), np.float64)
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        out[start : start + chunk] = features[part].astype(np.float64) @ w + b
    return out


def mine_hard_negatives(
    features: np.ndarray,
    positives: np.ndarray,
    negatives: np.ndarray,
    groups: np.ndarray,
    settings: SVMSettings,
    rng: np.random.Generator,
) -> tuple[np.ndarray, float, dict[str, Any]]:
    """One class's linear SVM with hard-negative mining (sec. 2.3 of the paper).

    First fit: the positives and at most ``max_negatives_per_image`` random negatives per
    group; then, at most ``hard_negative_rounds`` times, every negative not yet used whose
    score is above ``hard_threshold`` is added and the SVM refitted; it stops early when a fit
    leaves no such negative (the SVM is then the one of all negatives, up to liblinear's
    tolerance).

    Args:
      features: ``(N, F)`` (scaled) features of every window.
      positives: ``(Np,)`` int indices into ``features``; negatives: ``(Nn,)`` likewise.
      groups: ``(N,)`` int image index of every window (for the first-round cap).
      settings: :class:`SVMSettings`.
      rng: the first-round subset's generator.

    Returns:
      ``w (F,)`` float64, ``b`` float and the record ``{"positives", "negatives" (used in the
      last fit), "negative_candidates", "rounds" (fits), "hard_added" (per refit), "hard_left"
      (hard negatives left out of the last fit: 0 when converged)}``.
    """
    positives, negatives = np.asarray(positives), np.asarray(negatives)
    if len(positives) == 0 or len(negatives) == 0:
        raise ValueError(
            f"an SVM needs positives and negatives; got {len(positives)} and {len(negatives)}"
        )
    used = np.zeros(len(negatives), bool)
    first = _first_negatives(
        np.arange(len(negatives)), groups[negatives], settings.max_negatives_per_image, rng
    )
    used[first] = True
    pos_features = features[positives]
    added: list[int] = []
    rounds = 0
    while True:
        w, b = _fit_svc(pos_features, features[negatives[used]], settings)
        rounds += 1
        hard = ~used & (_decision(features, negatives, w, b) > settings.hard_threshold)
        if not hard.any() or rounds > settings.hard_negative_rounds:
            break
        used |= hard
        added.append(int(hard.sum()))
    record = {
        "positives": len(positives),
        "negatives": int(used.sum()),
        "negative_candidates": len(negatives),
        "rounds": rounds,
        "hard_added": added,
        "hard_left": int(hard.sum()),
    }
    return w, b, record


def fit_ridge(
    features: np.ndarray, targets: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression with an unpenalised intercept (``sklearn.linear_model.Ridge``).

    Args:
      features: ``(n, F)``; targets: ``(n, T)``; alpha: the L2 penalty of the weights.

    Returns:
      ``w (F, T)`` and ``b (T,)`` float64 minimising
      ``||features @ w + b - targets||^2 + alpha ||w||^2``.
    """
    from sklearn.linear_model import Ridge

    ridge = Ridge(alpha=alpha, fit_intercept=True)
    ridge.fit(np.asarray(features, np.float64), np.asarray(targets, np.float64))
    return ridge.coef_.T.copy(), np.asarray(ridge.intercept_, np.float64)


@dataclasses.dataclass
class SVMTrainingSet:
    """Features and labels of the training windows, kept on the host.

    Attributes:
      fc7: ``(N, F7)`` float32, every valid window of every image (ground truth first).
      positive, negative: ``(N, K)`` bool, :func:`svm_labels`.
      image: ``(N,)`` int32 index of each window's image.
      pool5: ``(n, F5)`` float32, the regression examples only; regression_class: ``(n,)``
        int32 in ``1..K``; regression_target: ``(n, 4)`` float32 deltas.
      fc7_norm, pool5_norm: mean L2 norms over all ``N`` windows.
      num_images: images used.
    """

    fc7: np.ndarray
    positive: np.ndarray
    negative: np.ndarray
    image: np.ndarray
    pool5: np.ndarray
    regression_class: np.ndarray
    regression_target: np.ndarray
    fc7_norm: float
    pool5_norm: float
    num_images: int


def _check_rcnn(task) -> RCNN:
    model = getattr(task, "model", None)
    if not isinstance(model, RCNN):
        raise ValueError(
            f"the SVMs need an R-CNN model (jaxcv.models.rcnn.RCNN); got {type(model).__name__}"
        )
    return model


def _model_variables(variables: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in variables.items() if k != SVM_COLLECTION}


def _feature_fn(model: RCNN, chunk: int):
    """Jitted ``(variables, images, rois) -> {"pool5", "fc7"}``, rois in chunks."""

    def run(variables, images, rois):
        return map_roi_chunks(
            lambda r: model.apply(variables, images, r, method=RCNN.features), rois, chunk
        )

    return jax.jit(run)


def extract_training_set(
    task: RCNNTask,
    variables: Mapping[str, Any],
    batches: Iterable[Mapping[str, Any]],
    settings: SVMSettings,
) -> SVMTrainingSet:
    """Features and labels of the first ``settings.num_images`` images of ``batches``.

    Args:
      task: an :class:`~jaxcv.tasks.rcnn.RCNNTask` (its ``model`` an
        :class:`~jaxcv.models.rcnn.RCNN`; its ``test_chunk_size`` and ``min_gt_size`` used).
      variables: the fine-tuned model's variables (an ``svm`` collection is ignored).
      batches: NumPy batches with ``image (B, H, W, 3)``, ``proposals (B, P, 4)``,
        ``proposal_valid (B, P)``, ``boxes (B, M, 4)`` xyxy input pixels, ``classes (B, M)``
        in ``1..K``, ``valid (B, M)`` and optionally ``example_valid (B,)``.
      settings: :class:`SVMSettings`.

    Returns:
      :class:`SVMTrainingSet`.
    """
    model = _check_rcnn(task)
    model_variables = _model_variables(variables)
    features = _feature_fn(model, task.settings.test_chunk_size)
    fc7, positive, negative, image = [], [], [], []
    pool5, reg_class, reg_target = [], [], []
    fc7_norm = pool5_norm = 0.0
    num_images = 0
    limit = settings.num_images or math.inf
    for batch in batches:
        if num_images >= limit:
            break
        images, proposals, proposal_valid = task._inputs(batch)
        gt_boxes, gt_classes, gt_valid, _ = batch_ground_truth(
            batch, images.shape[1:3], model.num_classes, task.settings.min_gt_size
        )
        labels = _label_windows(
            proposals,
            proposal_valid,
            gt_boxes,
            gt_classes,
            gt_valid,
            num_classes=model.num_classes,
            negative_iou=settings.negative_iou,
            ridge_iou=settings.ridge_iou,
        )
        out = features(model_variables, images, _windows(proposals, gt_boxes))
        labels = {k: np.asarray(v) for k, v in labels.items()}
        batch_pool5, batch_fc7 = np.asarray(out["pool5"]), np.asarray(out["fc7"])
        example_valid = np.asarray(batch.get(types.EXAMPLE_VALID, np.ones(len(images), bool)))
        for i in np.flatnonzero(example_valid):
            if num_images >= limit:
                break
            rows = labels["valid"][i]
            f7, f5 = batch_fc7[i][rows], batch_pool5[i][rows]
            fc7.append(f7)
            fc7_norm += float(np.linalg.norm(f7, axis=1).sum())
            pool5_norm += float(np.linalg.norm(f5, axis=1).sum())
            positive.append(labels["positive"][i][rows])
            negative.append(labels["negative"][i][rows])
            image.append(np.full(len(f7), num_images, np.int32))
            regress = labels["regression_class"][i][rows] > 0
            pool5.append(f5[regress])
            reg_class.append(labels["regression_class"][i][rows][regress])
            reg_target.append(labels["regression_target"][i][rows][regress])
            num_images += 1
    if num_images == 0:
        raise ValueError(
            "no training images: the batches are empty (or every example_valid is False)"
        )
    count = sum(len(f) for f in fc7)
    return SVMTrainingSet(
        fc7=np.concatenate(fc7),
        positive=np.concatenate(positive),
        negative=np.concatenate(negative),
        image=np.concatenate(image),
        pool5=np.concatenate(pool5),
        regression_class=np.concatenate(reg_class),
        regression_target=np.concatenate(reg_target),
        fc7_norm=fc7_norm / max(count, 1),
        pool5_norm=pool5_norm / max(count, 1),
        num_images=num_images,
    )


def _scale(norm: float, settings: SVMSettings, name: str) -> float:
    if not norm > 0 or not math.isfinite(norm):
        raise ValueError(
            f"the training {name} features have mean norm {norm}: they cannot be scaled to "
            f"feature_norm = {settings.feature_norm}"
        )
    return settings.feature_norm / norm


def fit_svms(
    task: RCNNTask,
    variables: Mapping[str, Any],
    batches: Iterable[Mapping[str, Any]],
    settings: SVMSettings | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Fit the paper's per-class SVMs and ridge box regressors on a fine-tuned R-CNN.

    Args:
      task: an :class:`~jaxcv.tasks.rcnn.RCNNTask` around an
        :class:`~jaxcv.models.rcnn.RCNN` (see :func:`extract_training_set`).
      variables: the fine-tuned model's variables.
      batches: training batches (see :func:`extract_training_set`); the first
        ``settings.num_images`` images are used.
      settings: :class:`SVMSettings` (None: the paper's defaults).

    Returns:
      ``svm_tree``: float32 NumPy arrays ``svm_w (F7, K)``, ``svm_b (K,)``,
      ``feature_scale ()``, ``ridge_w (F5, K, 4)``, ``ridge_b (K, 4)``, ``pool5_scale ()``
      (``variables["svm"]`` of :class:`RCNNSVMTask`); ``stats``: ``num_images``,
      ``num_windows``, ``feature_scale``, ``pool5_scale``, ``classes`` (one dict per class
      ``1..K``: ``class``, ``positives``, ``negatives``, ``negative_candidates``, ``rounds``,
      ``hard_added``, ``hard_left``, ``regression_examples``) and ``seconds``
      (``features``, ``svm``, ``ridge``, ``total``).

    Raises:
      ValueError: a class without positives (or negatives, or regression examples) among the
        training images, a model that is not an R-CNN, or a malformed batch.
    """
    s = settings or SVMSettings()
    start = time.perf_counter()
    data = extract_training_set(task, variables, batches, s)
    t_features = time.perf_counter() - start
    num_classes = task.model.num_classes
    for c in range(1, num_classes + 1):
        for what, mask in (("positives", data.positive), ("negatives", data.negative)):
            if not mask[:, c - 1].any():
                raise ValueError(
                    f"class {c} has no SVM {what} among the {data.num_images} training images "
                    f"(svm.num_images = {s.num_images})"
                )
        if not (data.regression_class == c).any():
            raise ValueError(
                f"class {c} has no regression example among the {data.num_images} training images"
            )
    feature_scale = _scale(data.fc7_norm, s, "fc7")
    pool5_scale = _scale(data.pool5_norm, s, "pool5")
    fc7 = data.fc7
    fc7 *= feature_scale  # in place: the set can be large
    svm_w = np.zeros((fc7.shape[1], num_classes), np.float32)
    svm_b = np.zeros((num_classes,), np.float32)
    records = []
    t0 = time.perf_counter()
    for c in range(num_classes):
        w, b, record = mine_hard_negatives(
            fc7,
            np.flatnonzero(data.positive[:, c]),
            np.flatnonzero(data.negative[:, c]),
            data.image,
            s,
            np.random.default_rng([s.seed, c + 1]),
        )
        svm_w[:, c], svm_b[c] = w, b
        records.append({"class": c + 1, **record})
    t_svm = time.perf_counter() - t0
    t0 = time.perf_counter()
    ridge_w = np.zeros((data.pool5.shape[1], num_classes, 4), np.float32)
    ridge_b = np.zeros((num_classes, 4), np.float32)
    for c in range(num_classes):
        rows = data.regression_class == c + 1
        w, b = fit_ridge(
            data.pool5[rows] * pool5_scale, data.regression_target[rows], s.ridge_alpha
        )
        ridge_w[:, c], ridge_b[c] = w, b
        records[c]["regression_examples"] = int(rows.sum())
    t_ridge = time.perf_counter() - t0
    tree = {
        "svm_w": svm_w,
        "svm_b": svm_b,
        "feature_scale": np.float32(feature_scale),
        "ridge_w": ridge_w,
        "ridge_b": ridge_b,
        "pool5_scale": np.float32(pool5_scale),
    }
    tree = {k: np.asarray(v, np.float32) for k, v in tree.items()}
    stats = {
        "num_images": data.num_images,
        "num_windows": len(fc7),
        "feature_scale": float(feature_scale),
        "pool5_scale": float(pool5_scale),
        "classes": records,
        "seconds": {
            "features": t_features,
            "svm": t_svm,
            "ridge": t_ridge,
            "total": time.perf_counter() - start,
        },
    }
    return tree, stats


# --------------------------------------------------------------------------------------------
# Inference


def _check_tree(tree: Any, num_classes: int) -> None:
    if not isinstance(tree, Mapping) or set(tree) != set(SVM_KEYS):
        keys = sorted(tree) if isinstance(tree, Mapping) else type(tree).__name__
        raise ValueError(f"variables['svm'] must have the keys {list(SVM_KEYS)}; got {keys}")
    f7, f5 = np.shape(tree["svm_w"])[0], np.shape(tree["ridge_w"])[0]
    want = {
        "svm_w": (f7, num_classes),
        "svm_b": (num_classes,),
        "feature_scale": (),
        "ridge_w": (f5, num_classes, 4),
        "ridge_b": (num_classes, 4),
        "pool5_scale": (),
    }
    for key, shape in want.items():
        if np.shape(tree[key]) != shape:
            raise ValueError(
                f"variables['svm']['{key}'] must be {shape} for K = {num_classes}; got "
                f"{np.shape(tree[key])}"
            )


def svm_outputs(tree: Mapping[str, Array], pool5: Array, fc7: Array) -> tuple[Array, Array]:
    """SVM scores and ridge deltas of windows from their features.

    Args:
      tree: the fitted arrays (:func:`fit_svms`).
      pool5: ``(..., F5)``; fc7: ``(..., F7)`` (unscaled, as :meth:`RCNN.features` gives).

    Returns:
      ``scores (..., K)`` float32 and ``deltas (..., K, 4)`` float32 (weights
      :data:`~jaxcv.tasks.rcnn_targets.ROI_BOX_WEIGHTS`).
    """
    hi = jax.lax.Precision.HIGHEST
    scores = jnp.matmul(fc7 * tree["feature_scale"], tree["svm_w"], precision=hi) + tree["svm_b"]
    deltas = (
        jnp.einsum("...f,fkd->...kd", pool5 * tree["pool5_scale"], tree["ridge_w"], precision=hi)
        + tree["ridge_b"]
    )
    return scores.astype(jnp.float32), deltas.astype(jnp.float32)


class RCNNSVMTask(RCNNTask):
    """R-CNN with the paper's per-class SVMs and ridge regressors at test time.

    Training (``init_variables``, ``loss_fn``) is :class:`~jaxcv.tasks.rcnn.RCNNTask`'s;
    the SVMs are fitted afterwards by :func:`fit_svms` and put in ``variables["svm"]``.

    Args:
      model: an :class:`~jaxcv.models.rcnn.RCNN`.
      settings: :class:`~jaxcv.tasks.fast_rcnn.ProposalDetectionSettings` (R-CNN's defaults).
      svm_settings: :class:`SVMSettings` (``score_threshold`` is the test-time threshold).
      **overrides: fields of ``settings``.
    """

    def __init__(
        self,
        model,
        settings: ProposalDetectionSettings | None = None,
        svm_settings: SVMSettings | None = None,
        **overrides,
    ):
        super().__init__(model, settings, **overrides)
        _check_rcnn(self)
        self.svm_settings = svm_settings or SVMSettings()

    def svm_scores(self, variables: Mapping[str, Any], images: Array, proposals: Array):
        """SVM scores and ridge deltas of every proposal, ``test_chunk_size`` per call.

        Args:
          variables: the model's variables with the ``svm`` collection.
          images: ``(B, H, W, 3)``; proposals: ``(B, P, 4)``.

        Returns:
          ``scores (B, P, K)`` and ``deltas (B, P, K, 4)``.
        """
        if SVM_COLLECTION not in variables:
            raise ValueError(
                "variables has no 'svm' collection: fit it with jaxcv.tasks.rcnn_svm.fit_svms "
                "and set variables['svm'] to the tree it returns"
            )
        tree = variables[SVM_COLLECTION]
        _check_tree(tree, self.model.num_classes)
        model_variables = _model_variables(variables)

        def run(rois):
            out = self.model.apply(model_variables, images, rois, method=RCNN.features)
            return svm_outputs(tree, out["pool5"], out["fc7"])

        return map_roi_chunks(run, proposals, self.settings.test_chunk_size)

    def predict_fn(self, variables: dict, batch: dict[str, Any]) -> dict[str, Array]:
        """Detections from the SVM scores and ridge boxes of every proposal.

        Args:
          variables: ``{"params", ..., "svm": tree}`` (:func:`fit_svms`).
          batch: ``image (B, H, W, 3)``, ``proposals (B, P, 4)``, ``proposal_valid (B, P)``,
            optionally ``original_size (B, 2)``.

        Returns:
          :func:`~jaxcv.tasks.detection.detection_outputs`: ``pred_boxes (B, D, 4)``,
          ``pred_input_boxes (B, D, 4)``, ``pred_scores (B, D)`` (SVM scores),
          ``pred_classes (B, D)`` int32 in ``1..K``, ``pred_valid (B, D)``,
          ``D = detections_per_image``.
        """
        images, proposals, _ = self._inputs(batch)
        scores, deltas = self.svm_scores(variables, images, proposals)
        threshold = self.svm_settings.score_threshold
        return self.detections(batch, scores, deltas, threshold, class_scores=True)
