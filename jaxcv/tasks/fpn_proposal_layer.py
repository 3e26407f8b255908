"""The RPN's proposal layer over a feature pyramid (torchvision's FPN Faster R-CNN).

The jitted, static-shape equivalent of torchvision's ``RegionProposalNetwork`` at test time
(``torchvision/models/detection/rpn.py``: ``forward`` then ``filter_proposals``), for the
levels ``"0".."3", "pool"`` of :class:`jaxcv.models.fpn.ResNetFPNBackbone`; the single-level
layer of the C4/VGG Faster R-CNN is :mod:`jaxcv.tasks.proposal_layer`. Per image:

1. per level, the ``min(pre_nms_top_n, N_l)`` anchors with the highest objectness logits
   (``lax.top_k``, descending; static count per level);
2. their deltas decoded on their anchors (weights ``(1, 1, 1, 1)``, the ``log(1000/16)``
   clamp), the levels concatenated in order;
3. clipped to the image's own size before padding (torchvision's ``image_sizes``), boxes with
   a side below ``min_size`` and objectness probabilities (sigmoid) below ``score_threshold``
   masked out (``valid=False``) instead of removed;
4. NMS at ``nms_threshold`` within each level (``batched_nms`` with the level as class), on the
   probabilities, equal scores in candidate order as torchvision's stable sort;
5. the first ``post_nms_top_n`` survivors, in descending probability order, with a ``valid``
   mask (torchvision returns fewer boxes when fewer survive).

Anchors (:func:`fpn_anchors`) are torchvision's ``AnchorGenerator`` with one size per level
(``((32,), (64,), (128,), (256,), (512,))``, aspect ratios ``(0.5, 1, 2)``) and per-level
strides ``padded_size // feature_size`` (integer division: 61, not 64, for the ``"pool"``
level of an 800-pixel-high input, as torchvision).
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcv.ops.anchors import make_anchors_numpy
from jaxcv.ops.boxes import clip_boxes, decode_boxes, small_boxes_mask
from jaxcv.ops.nms import batched_nms

Array = jax.Array

#: torchvision's ``_default_anchorgen``: one anchor size per FPN level, three aspect ratios.
FPN_ANCHOR_SIZES = ((32,), (64,), (128,), (256,), (512,))
FPN_ASPECT_RATIOS = (0.5, 1.0, 2.0)


def fpn_anchors(
    feature_sizes: Sequence[Sequence[int]],
    padded_size: Sequence[int],
    sizes: Sequence[Sequence[float]] = FPN_ANCHOR_SIZES,
    aspect_ratios: Sequence[float] = FPN_ASPECT_RATIOS,
) -> list[np.ndarray]:
    """torchvision's ``AnchorGenerator`` over a pyramid: one ``(h_l * w_l * A, 4)`` grid per level.

    Args:
      feature_sizes: static ``(h_l, w_l)`` of every level, finest first.
      padded_size: static ``(H, W)`` of the (padded) network input; level ``l``'s stride is
        ``(H // h_l, W // w_l)``.
      sizes: anchor sizes of each level (one tuple per level).
      aspect_ratios: height / width ratios, the same on every level.

    Returns:
      float32 NumPy grids, position-major then anchor (:func:`jaxcv.ops.make_anchors`).
    """
    if len(sizes) != len(feature_sizes):
        raise ValueError(
            f"one anchor-size tuple per level: got {len(sizes)} for {len(feature_sizes)} levels"
        )
    height, width = (int(s) for s in padded_size)
    return [
        make_anchors_numpy((h, w), (height // h, width // w), level_sizes, aspect_ratios)
        for (h, w), level_sizes in zip(feature_sizes, sizes, strict=True)
    ]


def _check(objectness, deltas, anchors, image_sizes) -> None:
    if not objectness or not (len(objectness) == len(deltas) == len(anchors)):
        raise ValueError(
            "objectness, deltas and anchors need one entry per level; got "
            f"{len(objectness)}, {len(deltas)} and {len(anchors)}"
        )
    batch = objectness[0].shape[0] if objectness[0].ndim == 2 else None
    for i, (o, d, a) in enumerate(zip(objectness, deltas, anchors, strict=True)):
        n = a.shape[0] if a.ndim == 2 else None
        if o.shape != (batch, n) or d.shape != (batch, n, 4) or a.shape != (n, 4):
            raise ValueError(
                f"level {i}: objectness must be (B, N), deltas (B, N, 4) and anchors (N, 4); "
                f"got {tuple(o.shape)}, {tuple(d.shape)} and {tuple(a.shape)}"
            )
    if image_sizes.shape not in ((2,), (batch, 2)):
        raise ValueError(
            f"image_sizes must be (B, 2) = ({batch}, 2) or (2,); got {tuple(image_sizes.shape)}"
        )


def generate_fpn_proposals(
    objectness: Sequence[Array],
    deltas: Sequence[Array],
    anchors: Sequence[Array],
    image_sizes: Array | Sequence[int],
    *,
    pre_nms_top_n: int = 1000,
    post_nms_top_n: int = 1000,
    nms_threshold: float = 0.7,
    min_size: float = 1e-3,
    score_threshold: float = 0.0,
) -> tuple[Array, Array, Array]:
    """Turn per-level RPN outputs into a fixed number of proposals per image.

    Args:
      objectness: per level ``(B, N_l)`` objectness logits (:class:`jaxcv.models.rpn.RPNHead`).
      deltas: per level ``(B, N_l, 4)`` box deltas.
      anchors: per level ``(N_l, 4)`` ``xyxy`` anchors (:func:`fpn_anchors`).
      image_sizes: ``(B, 2)`` (or one ``(2,)``) ``(H, W)`` of each image before padding; the
        proposals are clipped to it. May be traced.
      pre_nms_top_n: anchors kept per level and image before NMS (torchvision's test 1000).
      post_nms_top_n: proposals returned per image (static ``P``; torchvision's test 1000).
      nms_threshold: IoU above which a same-level, lower-scoring proposal is suppressed.
      min_size: proposals with a side below this are dropped.
      score_threshold: proposals whose probability is below this are dropped.

    Returns:
      ``boxes`` ``(B, P, 4)`` float32 ``xyxy`` (zeros in padding slots), ``scores`` ``(B, P)``
      objectness probabilities (0 in padding), ``valid`` ``(B, P)`` bool (a prefix), all under
      ``stop_gradient``: row ``b``'s valid entries equal torchvision's proposals of image ``b``.
    """
    objectness = [jnp.asarray(o) for o in objectness]
    deltas = [jnp.asarray(d) for d in deltas]
    anchors = [jnp.asarray(a, jnp.float32) for a in anchors]
    image_sizes = jnp.asarray(image_sizes)
    _check(objectness, deltas, anchors, image_sizes)
    if pre_nms_top_n < 1 or post_nms_top_n < 1:
        raise ValueError(
            f"pre_nms_top_n and post_nms_top_n must be >= 1; got {pre_nms_top_n}, {post_nms_top_n}"
        )
    batch = objectness[0].shape[0]
    sizes = jnp.broadcast_to(image_sizes.astype(jnp.float32), (batch, 2))
    objectness = [jax.lax.stop_gradient(o.astype(jnp.float32)) for o in objectness]
    deltas = [jax.lax.stop_gradient(d.astype(jnp.float32)) for d in deltas]

    def one_image(logits_per_level, deltas_per_level, size):
        logits, boxes, levels = [], [], []
        for level, (lg, dl, an) in enumerate(
            zip(logits_per_level, deltas_per_level, anchors, strict=True)
        ):
            top_logits, top = jax.lax.top_k(lg, min(int(pre_nms_top_n), lg.shape[0]))
            logits.append(top_logits)
            boxes.append(decode_boxes(dl[top], an[top]))
            levels.append(jnp.full(top.shape, level, jnp.int32))
        logits, boxes, levels = (jnp.concatenate(x) for x in (logits, boxes, levels))
        boxes = clip_boxes(boxes, size)
        probs = jax.nn.sigmoid(logits)
        keep = ~small_boxes_mask(boxes, min_size) & (probs >= score_threshold)
        keep &= jnp.all(jnp.isfinite(boxes), axis=-1) & jnp.isfinite(logits)
        idx, ok = batched_nms(boxes, probs, levels, nms_threshold, int(post_nms_top_n), valid=keep)
        return jnp.where(ok[:, None], boxes[idx], 0.0), jnp.where(ok, probs[idx], 0.0), ok

    return jax.vmap(one_image)(objectness, deltas, sizes)
