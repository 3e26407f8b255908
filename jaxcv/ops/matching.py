"""IoU assignment of anchors/proposals to ground truth, and fixed-count balanced sampling.

Both are static-shape: padded ground truth is handled through a ``gt_valid`` mask, and the
sampler returns a fixed number of indices with a ``valid`` mask (chosen by sorting random
priorities, never by boolean indexing), so a jitted detector compiles once.
"""

import enum

import jax
import jax.numpy as jnp

from jaxcv.ops._checks import check_rank, check_same_shape

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


class MatchLabel(enum.IntEnum):
    """Label of an anchor/proposal after matching (the values torchvision's sampler expects).

    ``IGNORE``: IoU between the thresholds; takes no part in the loss.
    ``NEGATIVE``: background (best IoU below the low threshold, or no valid ground truth).
    ``POSITIVE``: foreground, matched to ``matched_gt_index``.
    """

    IGNORE = -1
    NEGATIVE = 0
    POSITIVE = 1


def match_boxes(
    iou: ArrayLike,
    gt_valid: ArrayLike,
    high_threshold: float,
    low_threshold: float,
    allow_low_quality: bool = True,
) -> tuple[Array, Array]:
    """Assign each anchor (row of ``iou``) to a ground-truth box (column), torchvision-style.

    Semantics of torchvision's ``Matcher(high, low, allow_low_quality_matches)``:

    * best IoU ``>= high_threshold``: ``POSITIVE``, matched to the arg-max ground truth;
    * best IoU in ``[low_threshold, high_threshold)``: ``IGNORE``;
    * best IoU ``< low_threshold``: ``NEGATIVE``;
    * with ``allow_low_quality``, for every valid ground truth, each anchor that reaches that
      ground truth's highest IoU (ties included) becomes ``POSITIVE``, matched to *its own*
      arg-max ground truth (as torchvision does).

    Differences from torchvision, both for static shapes and robustness: padded ground truth
    (``gt_valid`` False) is never matched; an image without valid ground truth gives all
    ``NEGATIVE`` (torchvision raises); and a ground truth whose highest IoU is 0 (e.g. a
    zero-area box) yields no low-quality matches, where torchvision would turn every anchor
    with zero overlap into a positive.

    Args:
      iou: ``(N, M)`` IoU of N anchors against M (padded) ground-truth boxes.
      gt_valid: ``(M,)`` bool, which ground-truth columns are real.
      high_threshold: positive threshold (e.g. 0.7 for the RPN, 0.5 for RoI heads).
      low_threshold: negative threshold (e.g. 0.3); must be ``<= high_threshold``.
      allow_low_quality: make the best anchor(s) of each ground truth positive.

    Returns:
      ``matched_gt_index``: ``(N,)`` int32 in ``[0, M)``; meaningful for ``POSITIVE`` anchors
      (for the others it is the arg-max column, safe to gather with, or 0 when ``M == 0``).
      ``labels``: ``(N,)`` int32 :class:`MatchLabel` values.
    """
    check_rank(iou, 2, "iou")
    check_rank(gt_valid, 1, "gt_valid")
    iou = jnp.asarray(iou)
    gt_valid = jnp.asarray(gt_valid, dtype=bool)
    if gt_valid.shape[0] != iou.shape[1]:
        raise ValueError(
            f"gt_valid must have shape (M,) = ({iou.shape[1]},) to match iou {iou.shape}, "
            f"got {gt_valid.shape}"
        )
    if low_threshold > high_threshold:
        raise ValueError(
            f"low_threshold must be <= high_threshold, got {low_threshold} > {high_threshold}"
        )
    num_anchors, num_gt = iou.shape
    if num_gt == 0:
        return (
            jnp.zeros((num_anchors,), jnp.int32),
            jnp.full((num_anchors,), MatchLabel.NEGATIVE, jnp.int32),
        )
    # Invalid columns can never win an arg-max nor reach a threshold.
    quality = jnp.where(gt_valid[None, :], iou, -1.0)
    matched = jnp.argmax(quality, axis=1).astype(jnp.int32)
    best = jnp.max(quality, axis=1)
    labels = jnp.where(
        best >= high_threshold,
        MatchLabel.POSITIVE,
        jnp.where(best >= low_threshold, MatchLabel.IGNORE, MatchLabel.NEGATIVE),
    ).astype(jnp.int32)
    if allow_low_quality:
        best_per_gt = jnp.max(quality, axis=0)  # (M,)
        is_best = (quality == best_per_gt[None, :]) & gt_valid[None, :] & (best_per_gt > 0)
        labels = jnp.where(jnp.any(is_best, axis=1), MatchLabel.POSITIVE, labels)
    no_gt = ~jnp.any(gt_valid)
    labels = jnp.where(no_gt, MatchLabel.NEGATIVE, labels).astype(jnp.int32)
    return matched, labels


def sample_balanced(
    key: Array,
    labels: ArrayLike,
    num_samples: int,
    positive_fraction: float,
) -> tuple[Array, Array]:
    """Choose a fixed number of anchors with at most a fixed fraction of positives.

    The counts of torchvision's ``BalancedPositiveNegativeSampler``:
    ``num_pos = min(#positive, int(num_samples * positive_fraction))`` and
    ``num_neg = min(#negative, num_samples - num_pos)``; each set is a uniform random subset,
    chosen by sorting random priorities (``lax.top_k``), so shapes stay static.

    Args:
      key: PRNG key.
      labels: ``(N,)`` :class:`MatchLabel` values (``IGNORE`` entries are never sampled).
      num_samples: static number of slots, e.g. 256 anchors or 512 RoIs per image.
      positive_fraction: e.g. 0.5 for the RPN, 0.25 for the RoI head.

    Returns:
      ``indices``: ``(num_samples,)`` int32 into ``labels``: the sampled positives first, then
      the sampled negatives, then padding (index 0).
      ``valid``: ``(num_samples,)`` bool, False for padding slots (too few candidates).
    """
    check_rank(labels, 1, "labels")
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
    labels = jnp.asarray(labels)
    n = labels.shape[0]
    max_pos = int(num_samples * positive_fraction)
    if n == 0 or num_samples == 0:
        return jnp.zeros((num_samples,), jnp.int32), jnp.zeros((num_samples,), bool)
    is_pos = labels == MatchLabel.POSITIVE
    is_neg = labels == MatchLabel.NEGATIVE
    key_pos, key_neg = jax.random.split(key)

    def top(key: Array, candidate: Array, k: int) -> tuple[Array, Array]:
        # Candidates get priorities in [0, 1), the rest -1: the top k are random candidates.
        priority = jnp.where(candidate, jax.random.uniform(key, (n,)), -1.0)
        k_eff = min(k, n)
        values, idx = jax.lax.top_k(priority, k_eff)
        pad = k - k_eff
        idx = jnp.pad(idx.astype(jnp.int32), (0, pad))
        ok = jnp.pad(values >= 0, (0, pad))
        return idx, ok

    pos_idx, _ = top(key_pos, is_pos, max(max_pos, 1))
    neg_idx, _ = top(key_neg, is_neg, num_samples)
    num_pos = jnp.minimum(jnp.sum(is_pos), max_pos).astype(jnp.int32)
    num_neg = jnp.minimum(jnp.sum(is_neg), num_samples - num_pos).astype(jnp.int32)
    slot = jnp.arange(num_samples, dtype=jnp.int32)
    from_pos = slot < num_pos
    neg_slot = jnp.clip(slot - num_pos, 0, num_samples - 1)
    indices = jnp.where(
        from_pos, pos_idx[jnp.clip(slot, 0, pos_idx.shape[0] - 1)], neg_idx[neg_slot]
    )
    valid = slot < num_pos + num_neg
    return jnp.where(valid, indices, 0).astype(jnp.int32), valid


def indices_to_mask(indices: ArrayLike, valid: ArrayLike, size: int) -> Array:
    """Turn sampled ``(S,)`` ``indices`` with ``(S,)`` ``valid`` into a ``(size,)`` bool mask."""
    check_rank(indices, 1, "indices")
    check_same_shape(indices, valid, "indices", "valid")
    return jnp.zeros((size,), bool).at[jnp.asarray(indices)].max(jnp.asarray(valid, bool))
