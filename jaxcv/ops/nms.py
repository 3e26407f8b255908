"""Greedy non-maximum suppression with a fixed output size, class-aware and vmap-able.

The result equals ``torchvision.ops.nms`` (greedy, in descending score order, equal scores in
index order, a box suppressed when its IoU with a kept box is strictly above the threshold)
truncated to ``max_output``, returned as padded indices plus a ``valid`` mask.

Algorithm (no per-box Python loop, no host sync): boxes are sorted once (``lax.top_k``, which
puts equal scores in index order), then a ``lax.while_loop`` takes, at each step, the first
``block_size`` boxes still alive. Suppression inside that block is resolved by iterating
``keep = alive & ~any(keep_i & overlap_ij, i < j)`` to its fixed point: the dependency is
strictly triangular, so the fixed point is unique, equals the sequential greedy result, and is
reached in (longest suppression chain + 1) iterations, usually 2 or 3. The block's kept boxes
then suppress every later box with one ``(block, N)`` IoU matrix. The loop stops as soon as
``max_output`` boxes are kept or none is alive, so its cost scales with the kept boxes rather
than with ``N**2``.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcv.ops._checks import check_rank

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

_DEFAULT_BLOCK = 64


def _threshold_f32(iou_threshold: float | Array) -> Array:
    """float32 threshold ``t32`` such that ``iou > t32`` iff ``iou > iou_threshold`` exactly.

    torchvision compares the float32 IoU with the threshold as a double; rounding a Python
    float to float32 upwards would otherwise keep boxes torchvision suppresses.
    """
    if isinstance(iou_threshold, int | float | np.floating):
        t = float(iou_threshold)
        t32 = np.float32(t)
        if float(t32) > t:
            t32 = np.nextafter(t32, np.float32(-np.inf))
        return jnp.float32(t32)
    return jnp.asarray(iou_threshold, jnp.float32)


def _areas(boxes: Array) -> Array:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _pairwise_overlap(a: Array, area_a: Array, b: Array, area_b: Array, thr: Array) -> Array:
    """``(P, 4), (Q, 4) -> (P, Q)`` bool: IoU strictly above ``thr`` (torchvision's formula).

    The areas are passed in, computed outside the loop: fused into the union's addition, XLA
    CPU would contract ``area_a + dx * dy`` into an FMA, which rounds differently from
    torchvision and can flip a decision at the threshold.
    """
    w = jnp.maximum(
        jnp.minimum(a[:, None, 2], b[None, :, 2]) - jnp.maximum(a[:, None, 0], b[None, :, 0]), 0.0
    )
    h = jnp.maximum(
        jnp.minimum(a[:, None, 3], b[None, :, 3]) - jnp.maximum(a[:, None, 1], b[None, :, 1]), 0.0
    )
    inter = w * h
    iou = inter / (area_a[:, None] + area_b[None, :] - inter)
    # NaN (0 / 0 for two empty boxes) compares False: never suppresses, as in torchvision.
    return iou > thr


def _nms_sorted(
    boxes: Array,
    candidate: Array,
    groups: Array,
    thr: Array,
    max_output: int,
    block: int,
) -> tuple[Array, Array]:
    """Greedy NMS of boxes already sorted by score; returns (sorted positions, valid)."""
    n = boxes.shape[0]
    areas = _areas(boxes)
    positions = jnp.arange(n, dtype=jnp.int32)
    slots = jnp.arange(block, dtype=jnp.int32)
    triu = slots[:, None] < slots[None, :]

    def cond(state):
        alive, count, _ = state
        return jnp.any(alive) & (count < max_output)

    def body(state):
        alive, count, out_pos = state
        # The block: the first `block` boxes still alive, in score order. Every other alive box
        # comes after all of them, and none of them overlaps a box kept earlier.
        rank = jnp.cumsum(alive, dtype=jnp.int32) - 1
        dest = jnp.where(alive & (rank < block), rank, block)
        idx = jnp.zeros((block,), jnp.int32).at[dest].set(positions, mode="drop")
        in_block = slots < jnp.sum(alive, dtype=jnp.int32)
        bb, ba, bg = boxes[idx], areas[idx], groups[idx]
        # Suppression inside the block: fixed point of the triangular greedy recurrence.
        inner = _pairwise_overlap(bb, ba, bb, ba, thr) & triu & (bg[:, None] == bg[None, :])

        def step(carry):
            keep, _ = carry
            new = in_block & ~jnp.any(inner & keep[:, None], axis=0)
            return new, jnp.any(new != keep)

        keep, _ = lax.while_loop(lambda c: c[1], step, (in_block, jnp.array(True)))
        # Kept boxes suppress every later box; the whole block is done.
        hit = (
            _pairwise_overlap(bb, ba, boxes, areas, thr)
            & (bg[:, None] == groups[None, :])
            & keep[:, None]
        )
        alive = alive & ~jnp.any(hit, axis=0)
        alive = alive.at[jnp.where(in_block, idx, n)].set(False, mode="drop")
        # Append this block's kept boxes after the `count` already kept ones.
        out = jnp.where(keep, count + jnp.cumsum(keep, dtype=jnp.int32) - 1, max_output)
        out_pos = out_pos.at[out].set(idx, mode="drop")
        return alive, count + jnp.sum(keep, dtype=jnp.int32), out_pos

    init = (candidate, jnp.int32(0), jnp.zeros((max_output,), jnp.int32))
    _, count, out_pos = lax.while_loop(cond, body, init)
    return out_pos, jnp.arange(max_output) < count


def _check_inputs(boxes: ArrayLike, scores: ArrayLike, max_output: int) -> None:
    check_rank(boxes, 2, "boxes")
    check_rank(scores, 1, "scores")
    shape_b, shape_s = tuple(jnp.shape(boxes)), tuple(jnp.shape(scores))
    if shape_b[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got shape {shape_b}")
    if shape_s[0] != shape_b[0]:
        raise ValueError(f"scores must have shape (N,) = ({shape_b[0]},), got shape {shape_s}")
    if not isinstance(max_output, int | np.integer) or max_output < 0:
        raise ValueError(f"max_output must be a non-negative int, got {max_output!r}")


def _nms_impl(boxes, scores, groups, valid, iou_threshold, max_output, block_size):
    boxes = jnp.asarray(boxes, jnp.float32)
    scores = jnp.asarray(scores)
    n = boxes.shape[0]
    if valid is None:
        valid = jnp.ones((n,), bool)
    else:
        valid = jnp.asarray(valid, bool)
        if valid.shape != (n,):
            raise ValueError(f"valid must have shape (N,) = ({n},), got shape {valid.shape}")
    if n == 0 or max_output == 0:
        return jnp.zeros((max_output,), jnp.int32), jnp.zeros((max_output,), bool)
    # Descending order, equal scores in index order (torchvision's CPU kernel sorts stably).
    # Invalid boxes get -inf; they are never alive, wherever they land.
    key = jnp.where(valid, scores.astype(jnp.float32), -jnp.inf)
    order = lax.top_k(key, n)[1].astype(jnp.int32)
    block = max(1, min(block_size, n))
    pos, ok = _nms_sorted(
        boxes[order],
        valid[order],
        groups[order],
        _threshold_f32(iou_threshold),
        int(max_output),
        block,
    )
    return jnp.where(ok, order[pos], 0).astype(jnp.int32), ok


def nms(
    boxes: ArrayLike,
    scores: ArrayLike,
    iou_threshold: float,
    max_output: int,
    *,
    valid: ArrayLike | None = None,
    block_size: int = _DEFAULT_BLOCK,
) -> tuple[Array, Array]:
    """Greedy non-maximum suppression with a fixed number of outputs.

    Args:
      boxes: ``(N, 4)`` ``xyxy`` boxes in pixels.
      scores: ``(N,)`` scores; higher is kept first, ties by lower index.
      iou_threshold: a box is dropped when its IoU with a kept box is ``> iou_threshold``.
      max_output: static number of output slots.
      valid: optional ``(N,)`` bool; invalid boxes (padding, removed small boxes) are never kept
        and never suppress others.
      block_size: boxes processed per loop iteration (a speed knob; results do not depend on it).

    Returns:
      ``indices``: ``(max_output,)`` int32 indices into ``boxes`` of the kept boxes in
      descending score order, equal to ``torchvision.ops.nms(boxes, scores, iou_threshold)
      [:max_output]``; padding slots hold 0.
      ``valid``: ``(max_output,)`` bool, True for the real entries (a prefix).

    ``jit`` with ``max_output`` (and ``block_size``) static; ``vmap`` over a batch of images.
    """
    _check_inputs(boxes, scores, max_output)
    groups = jnp.zeros((jnp.shape(boxes)[0],), jnp.int32)
    return _nms_impl(boxes, scores, groups, valid, iou_threshold, max_output, block_size)


def batched_nms(
    boxes: ArrayLike,
    scores: ArrayLike,
    classes: ArrayLike,
    iou_threshold: float,
    max_output: int,
    *,
    valid: ArrayLike | None = None,
    block_size: int = _DEFAULT_BLOCK,
) -> tuple[Array, Array]:
    """Class-aware NMS: boxes only suppress boxes of the same class.

    Equal to ``torchvision.ops.batched_nms(boxes, scores, classes, iou_threshold)
    [:max_output]``, computed exactly by masking the overlap matrix with ``class_i == class_j``
    (no coordinate offsets, so no rounding differences).

    Args:
      boxes: ``(N, 4)`` ``xyxy`` boxes in pixels.
      scores: ``(N,)`` scores.
      classes: ``(N,)`` integer class (or any group) ids.
      iou_threshold: IoU above which a same-class box is suppressed.
      max_output: static number of output slots.
      valid: optional ``(N,)`` bool mask of real boxes.
      block_size: boxes processed per loop iteration.

    Returns:
      ``indices``: ``(max_output,)`` int32 into ``boxes``, in descending score order (over all
      classes); ``valid``: ``(max_output,)`` bool.
    """
    _check_inputs(boxes, scores, max_output)
    check_rank(classes, 1, "classes")
    if tuple(jnp.shape(classes)) != (jnp.shape(boxes)[0],):
        raise ValueError(
            f"classes must have shape (N,) = ({jnp.shape(boxes)[0]},), "
            f"got shape {tuple(jnp.shape(classes))}"
        )
    groups = jnp.asarray(classes).astype(jnp.int32)
    return _nms_impl(boxes, scores, groups, valid, iou_threshold, max_output, block_size)
