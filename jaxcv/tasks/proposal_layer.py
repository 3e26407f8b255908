"""The RPN's proposal layer: decode, clip, drop tiny boxes, top-k, NMS, top-k.

The jitted, static-shape equivalent of torchvision's
``RegionProposalNetwork.filter_proposals`` for one feature level: per image, the
``pre_nms_top_n`` anchors with the highest objectness logits are decoded (weights
``(1, 1, 1, 1)``, the ``log(1000/16)`` clamp), clipped to the image, boxes with a side below
``min_size`` (and, optionally, scores below ``score_threshold``) are masked out instead of
removed (they get a ``-inf`` score and ``valid=False``), NMS at ``nms_threshold`` runs, and
the first ``post_nms_top_n`` survivors are returned in descending score order with a
``valid`` mask. Proposals carry ``stop_gradient``: Faster R-CNN's approximate joint training
does not back-propagate through the proposal coordinates.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxcv.ops.boxes import clip_boxes, decode_boxes, small_boxes_mask
from jaxcv.ops.nms import nms

Array = jax.Array


def _check(objectness: Array, deltas: Array, anchors: Array) -> None:
    if objectness.ndim != 2:
        raise ValueError(f"objectness must be (B, N); got shape {objectness.shape}")
    if deltas.ndim != 3 or deltas.shape[-1] != 4 or deltas.shape[:2] != objectness.shape:
        raise ValueError(
            f"deltas must be (B, N, 4) = {(*objectness.shape, 4)}; got shape {deltas.shape}"
        )
    if anchors.ndim != 2 or anchors.shape != (objectness.shape[1], 4):
        raise ValueError(
            f"anchors must be (N, 4) = ({objectness.shape[1]}, 4); got shape {anchors.shape}"
        )


def generate_proposals(
    objectness: Array,
    deltas: Array,
    anchors: Array,
    image_size: Sequence[int],
    *,
    pre_nms_top_n: int,
    post_nms_top_n: int,
    nms_threshold: float = 0.7,
    min_size: float = 1e-3,
    score_threshold: float = 0.0,
) -> tuple[Array, Array, Array]:
    """Turn RPN outputs into a fixed number of proposals per image.

    Args:
      objectness: ``(B, N)`` objectness logits, one per anchor.
      deltas: ``(B, N, 4)`` predicted deltas for each anchor.
      anchors: ``(N, 4)`` ``xyxy`` anchors in input pixels (:func:`jaxcv.ops.make_anchors`).
      image_size: static ``(H, W)`` of the network input; boxes are clipped to it.
      pre_nms_top_n: anchors kept per image before NMS (clamped to ``N``).
      post_nms_top_n: proposals returned per image (static output size ``P``).
      nms_threshold: IoU above which a lower-scoring proposal is suppressed.
      min_size: proposals whose width or height is below this are dropped (torchvision: 1e-3).
      score_threshold: proposals whose objectness probability is below this are dropped.

    Returns:
      ``boxes``: ``(B, P, 4)`` float32 ``xyxy`` proposals, clipped, in descending score order
      (padding slots hold zeros); ``scores``: ``(B, P)`` objectness probabilities (0 for
      padding); ``valid``: ``(B, P)`` bool. All three are under ``stop_gradient``.
    """
    objectness, deltas, anchors = (jnp.asarray(a) for a in (objectness, deltas, anchors))
    _check(objectness, deltas, anchors)
    if pre_nms_top_n < 1 or post_nms_top_n < 1:
        raise ValueError(
            f"pre_nms_top_n and post_nms_top_n must be >= 1; got {pre_nms_top_n}, {post_nms_top_n}"
        )
    size = tuple(int(s) for s in image_size)
    if len(size) != 2:
        raise ValueError(f"image_size must be (H, W); got {image_size!r}")
    objectness = jax.lax.stop_gradient(objectness.astype(jnp.float32))
    deltas = jax.lax.stop_gradient(deltas.astype(jnp.float32))
    k = min(int(pre_nms_top_n), objectness.shape[1])

    def one_image(logits: Array, image_deltas: Array) -> tuple[Array, Array, Array]:
        top_logits, top = jax.lax.top_k(logits, k)
        boxes = decode_boxes(image_deltas[top], anchors[top])
        boxes = clip_boxes(boxes, size)
        probs = jax.nn.sigmoid(top_logits)
        keep = ~small_boxes_mask(boxes, min_size) & (probs >= score_threshold)
        keep &= jnp.all(jnp.isfinite(boxes), axis=-1) & jnp.isfinite(top_logits)
        ranked = jnp.where(keep, top_logits, -jnp.inf)
        idx, ok = nms(boxes, ranked, nms_threshold, int(post_nms_top_n), valid=keep)
        out_boxes = jnp.where(ok[:, None], boxes[idx], 0.0)
        out_scores = jnp.where(ok, probs[idx], 0.0)
        return out_boxes, out_scores, ok

    boxes, scores, valid = jax.vmap(one_image)(objectness, deltas)
    return boxes, scores, valid
