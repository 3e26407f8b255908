"""Training targets and losses of Faster R-CNN's two stages, static-shape and per image.

* :func:`sanitize_ground_truth`: clip padded ground truth to the image and drop (``valid=False``)
  boxes that are degenerate, non-finite or of an out-of-range class; :func:`batch_ground_truth`
  does it for a batch dict (and drops the objects of padded evaluation examples).
* :func:`label_anchors` + :func:`rpn_loss`: the RPN's anchor labelling (IoU >= 0.7 positive,
  < 0.3 negative, the best anchors of each object positive: torchvision's ``Matcher`` with
  ``allow_low_quality_matches``), 256 sampled anchors per image with up to half positives,
  binary cross-entropy on the sampled anchors and smooth-L1 (beta 1/9) on the positive ones,
  both normalised by the number of sampled anchors in the batch (torchvision's
  ``RegionProposalNetwork.compute_loss``). With ``usable`` (:func:`inside_image`) the anchors
  that cross the image boundary take no part, as in the paper's training.
* :func:`sample_rois` + :func:`roi_loss`: the RoI head's sampling (proposals plus the ground
  truth boxes; IoU >= 0.5 foreground with the object's class, [0, 0.5) background; e.g. 512 per
  image with up to 25% foreground) and torchvision's ``fastrcnn_loss``: softmax cross-entropy
  over the sampled RoIs and smooth-L1 on the ground-truth class's deltas of the foreground RoIs,
  normalised by the number of sampled RoIs.

Regression targets of unmatched anchors/RoIs are set to 0 (never ``log(0)``), so masked-out
entries cannot leak NaN into the gradients.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxcv.ops.boxes import box_iou, clip_boxes, encode_boxes
from jaxcv.ops.losses import sigmoid_binary_cross_entropy, smooth_l1, softmax_cross_entropy
from jaxcv.ops.matching import MatchLabel, match_boxes, sample_balanced
from jaxcv.types import BOXES, CLASSES, EXAMPLE_VALID, VALID

Array = jax.Array

#: torchvision's box-coder weights of the Fast R-CNN head.
ROI_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def _check_gt(boxes: Array, classes: Array, valid: Array) -> None:
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be (B, M, 4); got shape {boxes.shape}")
    if classes.shape != boxes.shape[:2] or valid.shape != boxes.shape[:2]:
        raise ValueError(
            f"classes and valid must be (B, M) = {boxes.shape[:2]}; got {classes.shape} "
            f"and {valid.shape}"
        )


def sanitize_ground_truth(
    boxes: Array,
    classes: Array,
    valid: Array,
    image_size: Sequence[int],
    num_classes: int,
    min_size: float = 1.0,
) -> tuple[Array, Array, Array]:
    """Clip ground truth to the image and invalidate boxes no target can be built from.

    Args:
      boxes: ``(B, M, 4)`` ``xyxy`` ground truth in input pixels (padded).
      classes: ``(B, M)`` int classes in ``1..K`` (0 = padding).
      valid: ``(B, M)`` bool.
      image_size: static ``(H, W)`` of the network input.
      num_classes: ``K``.
      min_size: boxes narrower or lower than this after clipping are dropped.

    Returns:
      ``boxes``: ``(B, M, 4)`` clipped (non-finite coordinates replaced by 0); ``valid``:
      ``(B, M)`` bool, the input mask minus dropped boxes; ``dropped``: ``(B,)`` int32 count of
      boxes that were valid on input and got dropped (degenerate, out of the image, non-finite
      or with a class outside ``1..K``).
    """
    boxes = jnp.asarray(boxes, jnp.float32)
    classes, valid = jnp.asarray(classes), jnp.asarray(valid, bool)
    _check_gt(boxes, classes, valid)
    finite = jnp.all(jnp.isfinite(boxes), axis=-1)
    boxes = clip_boxes(jnp.where(finite[..., None], boxes, 0.0), tuple(image_size))
    wide = (boxes[..., 2] - boxes[..., 0]) >= min_size
    tall = (boxes[..., 3] - boxes[..., 1]) >= min_size
    good_class = (classes >= 1) & (classes <= num_classes)
    keep = valid & finite & wide & tall & good_class
    dropped = jnp.sum(valid & ~keep, axis=-1).astype(jnp.int32)
    return jnp.where(keep[..., None], boxes, 0.0), keep, dropped


def batch_ground_truth(
    batch: Mapping[str, Any], image_size: Sequence[int], num_classes: int, min_size: float = 1.0
) -> tuple[Array, Array, Array, Array]:
    """:func:`sanitize_ground_truth` of a batch's ``boxes``, ``classes`` and ``valid``.

    Objects of padded evaluation examples (``example_valid (B,)`` False) are invalid too.

    Returns:
      ``boxes (B, M, 4)``, ``classes (B, M)`` int32 (0 where invalid), ``valid (B, M)`` bool
      and ``dropped (B,)`` int32, as :func:`sanitize_ground_truth`.
    """
    boxes, valid, dropped = sanitize_ground_truth(
        batch[BOXES], batch[CLASSES], batch[VALID], image_size, num_classes, min_size
    )
    if EXAMPLE_VALID in batch:
        valid = valid & jnp.asarray(batch[EXAMPLE_VALID], bool)[:, None]
    classes = jnp.where(valid, jnp.asarray(batch[CLASSES], jnp.int32), 0)
    return boxes, classes, valid, dropped


def label_anchors(
    anchors: Array,
    gt_boxes: Array,
    gt_valid: Array,
    high_threshold: float = 0.7,
    low_threshold: float = 0.3,
    usable: Array | None = None,
) -> tuple[Array, Array]:
    """RPN anchor labels and regression targets for one image.

    Args:
      anchors: ``(N, 4)`` ``xyxy`` anchors.
      gt_boxes: ``(M, 4)`` ``xyxy`` ground truth (padded).
      gt_valid: ``(M,)`` bool.
      high_threshold: IoU for positives (0.7).
      low_threshold: IoU below which anchors are negative (0.3).
      usable: ``(N,)`` bool, the anchors that may take part (None: all). The others are
        ignored and never matched, not even as an object's best anchor (the paper's
        cross-boundary anchors, :func:`inside_image`).

    Returns:
      ``labels``: ``(N,)`` int32 :class:`jaxcv.ops.matching.MatchLabel` values (1 positive,
      0 negative, -1 ignored; all negative without valid ground truth);
      ``targets``: ``(N, 4)`` deltas (weights ``(1, 1, 1, 1)``) to the matched ground truth,
      0 for non-positive anchors.
    """
    iou = box_iou(anchors, gt_boxes)
    if usable is not None:
        iou = jnp.where(usable[:, None], iou, -1.0)
    matched, labels = match_boxes(iou, gt_valid, high_threshold, low_threshold, True)
    if usable is not None:
        labels = jnp.where(usable, labels, MatchLabel.IGNORE)
    positive = labels == MatchLabel.POSITIVE
    target_boxes = jnp.where(positive[:, None], gt_boxes[matched], anchors)
    targets = encode_boxes(target_boxes, anchors)
    return labels, jnp.where(positive[:, None], targets, 0.0)


def inside_image(anchors: Array, image_size: tuple[int, int], border: float = 0.0) -> Array:
    """``(N,)`` bool: the ``xyxy`` anchors that lie within the ``(H, W)`` image, up to
    ``border`` pixels outside it (py-faster-rcnn's ``allowed_border``)."""
    h, w = image_size
    x1, y1, x2, y2 = (anchors[:, i] for i in range(4))
    return (x1 >= -border) & (y1 >= -border) & (x2 <= w + border) & (y2 <= h + border)


def rpn_loss(
    key: Array,
    objectness: Array,
    deltas: Array,
    anchors: Array,
    gt_boxes: Array,
    gt_valid: Array,
    *,
    batch_size_per_image: int = 256,
    positive_fraction: float = 0.5,
    high_threshold: float = 0.7,
    low_threshold: float = 0.3,
    beta: float = 1.0 / 9.0,
    usable: Array | None = None,
) -> tuple[Array, Array, Array]:
    """The RPN loss of a batch (torchvision's ``compute_loss``).

    Args:
      key: PRNG key (split per image for the anchor sampling).
      objectness: ``(B, N)`` logits; deltas: ``(B, N, 4)``.
      anchors: ``(N, 4)`` anchors.
      gt_boxes: ``(B, M, 4)`` ground truth; gt_valid: ``(B, M)`` bool.
      batch_size_per_image: sampled anchors per image (256).
      positive_fraction: maximal fraction of positives among them (0.5).
      high_threshold, low_threshold: IoU thresholds of :func:`label_anchors`.
      beta: smooth-L1 transition (1/9).
      usable: ``(N,)`` bool anchors that take part (see :func:`label_anchors`), or None.

    Returns:
      ``cls_loss``: BCE averaged over all sampled anchors of the batch; ``box_loss``:
      smooth-L1 summed over sampled positives divided by the number of sampled anchors;
      ``num_pos``: the number of sampled positive anchors in the batch (float32).
    """
    if objectness.ndim != 2 or deltas.shape != (*objectness.shape, 4):
        raise ValueError(
            f"objectness must be (B, N) and deltas (B, N, 4); got {objectness.shape} and "
            f"{deltas.shape}"
        )
    keys = jax.random.split(key, objectness.shape[0])

    def sample(k, boxes, valid):
        labels, targets = label_anchors(
            anchors, boxes, valid, high_threshold, low_threshold, usable
        )
        idx, ok = sample_balanced(k, labels, batch_size_per_image, positive_fraction)
        return labels[idx], targets[idx], idx, ok

    labels, targets, idx, ok = jax.vmap(sample)(keys, gt_boxes, gt_valid)
    logits = jnp.take_along_axis(objectness, idx, axis=1)
    pred = jnp.take_along_axis(deltas, idx[..., None], axis=1)
    positive = ok & (labels == MatchLabel.POSITIVE)
    num_sampled = jnp.maximum(jnp.sum(ok), 1).astype(jnp.float32)
    cls_loss = sigmoid_binary_cross_entropy(
        logits, positive.astype(jnp.float32), weights=ok, reduction="sum"
    )
    box_loss = smooth_l1(pred, targets, beta, weights=positive[..., None], reduction="sum")
    return cls_loss / num_sampled, box_loss / num_sampled, jnp.sum(positive).astype(jnp.float32)


def sample_rois(
    key: Array,
    proposals: Array,
    proposal_valid: Array,
    gt_boxes: Array,
    gt_classes: Array,
    gt_valid: Array,
    *,
    batch_size_per_image: int = 512,
    positive_fraction: float = 0.25,
    fg_threshold: float = 0.5,
    bg_threshold: float = 0.5,
    bg_low: float = 0.0,
    add_gt_boxes: bool = True,
    weights: Sequence[float] = ROI_BOX_WEIGHTS,
) -> dict[str, Array]:
    """Sample training RoIs for the box head (torchvision's ``select_training_samples``).

    Args:
      key: PRNG key.
      proposals: ``(B, P, 4)`` proposals (under ``stop_gradient``); proposal_valid: ``(B, P)``.
      gt_boxes: ``(B, M, 4)``; gt_classes: ``(B, M)`` in ``1..K``; gt_valid: ``(B, M)``.
      batch_size_per_image: ``S``, sampled RoIs per image.
      positive_fraction: maximal fraction of foreground RoIs.
      fg_threshold: IoU for foreground (0.5); bg_threshold: background is
        ``[bg_low, bg_threshold)`` (0.5).
      bg_low: the background's lower bound (0: torchvision; Fast R-CNN's 0.1 leaves out the
        candidates that touch no object, its heuristic hard-example mining). An image without
        objects keeps all its candidates as background.
      add_gt_boxes: append the valid ground-truth boxes to the candidates (torchvision).
      weights: box-coder weights of the regression targets.

    Returns:
      ``rois``: ``(B, S, 4)``; ``labels``: ``(B, S)`` int32 classes (0 = background);
      ``targets``: ``(B, S, 4)`` deltas to the matched ground truth (0 for background);
      ``valid``: ``(B, S)`` bool (fewer candidates than ``S``); ``matched``: ``(B, S)`` int32
      index into the ``M`` ground-truth boxes of each RoI's best match (meaningful where
      ``labels > 0``; e.g. to crop the matched instance's mask).
    """
    candidates, cand_valid = jnp.asarray(proposals), jnp.asarray(proposal_valid, bool)
    if add_gt_boxes:
        candidates = jnp.concatenate([candidates, gt_boxes], axis=1)
        cand_valid = jnp.concatenate([cand_valid, gt_valid], axis=1)
    candidates = jax.lax.stop_gradient(candidates)
    keys = jax.random.split(key, candidates.shape[0])

    def one_image(k, cands, cvalid, boxes, classes, valid):
        iou = box_iou(cands, boxes)
        matched, match = match_boxes(iou, valid, fg_threshold, bg_threshold, False)
        if bg_low > 0:
            best = jnp.max(jnp.where(valid[None, :], iou, 0.0), axis=1)
            too_far = (match == MatchLabel.NEGATIVE) & (best < bg_low) & jnp.any(valid)
            match = jnp.where(too_far, MatchLabel.IGNORE, match)
        match = jnp.where(cvalid, match, MatchLabel.IGNORE)
        idx, ok = sample_balanced(k, match, batch_size_per_image, positive_fraction)
        rois = cands[idx]
        fg = ok & (match[idx] == MatchLabel.POSITIVE)
        labels = jnp.where(fg, classes[matched[idx]], 0).astype(jnp.int32)
        unit = jnp.array([0.0, 0.0, 1.0, 1.0], jnp.float32)
        safe_rois = jnp.where(fg[:, None], rois, unit)
        targets = encode_boxes(
            jnp.where(fg[:, None], boxes[matched[idx]], unit), safe_rois, weights
        )
        return (
            jnp.where(ok[:, None], rois, 0.0),
            labels,
            jnp.where(fg[:, None], targets, 0.0),
            ok,
            jnp.where(fg, matched[idx], 0).astype(jnp.int32),
        )

    rois, labels, targets, ok, matched = jax.vmap(one_image)(
        keys, candidates, cand_valid, gt_boxes, gt_classes, gt_valid
    )
    return {"rois": rois, "labels": labels, "targets": targets, "valid": ok, "matched": matched}


def roi_loss(
    class_logits: Array,
    box_deltas: Array,
    labels: Array,
    targets: Array,
    valid: Array,
    beta: float = 1.0 / 9.0,
) -> tuple[Array, Array]:
    """torchvision's ``fastrcnn_loss`` over a batch of sampled RoIs.

    Args:
      class_logits: ``(B, S, K + 1)``; box_deltas: ``(B, S, K + 1, 4)``.
      labels: ``(B, S)`` int32 (0 = background); targets: ``(B, S, 4)``; valid: ``(B, S)``.
      beta: smooth-L1 transition (torchvision uses 1/9 here too).

    Returns:
      ``cls_loss``: softmax cross-entropy averaged over valid RoIs; ``box_loss``: smooth-L1 of
      the ground-truth class's deltas summed over foreground RoIs, divided by the number of
      valid RoIs.
    """
    if class_logits.ndim != 3 or box_deltas.shape != (*class_logits.shape, 4):
        raise ValueError(
            f"class_logits must be (B, S, K + 1) and box_deltas (B, S, K + 1, 4); got "
            f"{class_logits.shape} and {box_deltas.shape}"
        )
    num = jnp.maximum(jnp.sum(valid), 1).astype(jnp.float32)
    cls_loss = softmax_cross_entropy(class_logits, labels, weights=valid, reduction="sum") / num
    pred = jnp.take_along_axis(box_deltas, labels[..., None, None], axis=2)[..., 0, :]
    fg = valid & (labels > 0)
    box_loss = smooth_l1(pred, targets, beta, weights=fg[..., None], reduction="sum") / num
    return cls_loss, box_loss
