"""Sliding-window localization and detection: the naive baseline, Overfeat, box merging.

* :func:`extract_windows` / :func:`naive_sliding_window`: crop every window of an image (one
  gather, no Python loop over windows) and classify all crops in one batched call of the
  trained :class:`~jaxcv.models.localizer.Localizer`: "location 0 -> score 0.02, ...,
  location 4 -> score 0.8". :func:`best_window` takes the winning box.
* :func:`naive_multiscale` does that at several scales; :func:`jaxcv.models.overfeat.
  apply_multiscale` computes the same maps fully convolutionally.
* :func:`window_candidates` flattens per-scale maps into candidate boxes (each location's
  top class, its probability and its regressed box).
* :func:`merge_boxes`: greedy merging in the spirit of Overfeat: the highest-scoring unmerged
  box absorbs every unmerged box of its class that *matches* it (IoU ``>= iou_threshold``
  and centre distance ``<= center_threshold`` times the seed's size ``sqrt(w h)``); the merged
  box is the score-weighted mean of the members and its score the *sum* of their scores, so a
  location confirmed by many windows and scales outranks an isolated one.
* :func:`merge_boxes_paper`: the paper's merging (Sermanet et al. 2014, sec. 4.3): the pair of
  same-class boxes with the smallest *match score* (centre distance over the pair's mean size
  ``sqrt(w h)``, plus ``1 - IoU``; :func:`paper_match_scores`) is replaced by its merge (the
  mean of all the member boxes, the sum of their scores), repeatedly, until the best pair's
  match score is above ``match_threshold``.
* :func:`nms_boxes`: the per-class NMS alternative (:func:`jaxcv.ops.nms.batched_nms`).
* :func:`merge_candidates`: one of the three rules (:data:`METHODS`) on a batch of candidates;
  :func:`detect`: per-scale maps -> candidates -> detections for a batch, fixed count ``D``.

Boxes are xyxy pixels of the original image everywhere; classes are ``0..K-1``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxcv.models.localizer import Localizer
from jaxcv.models.overfeat import ScaleOutput, WindowGeometry, object_probs, scaled_size
from jaxcv.ops.boxes import box_iou, clip_boxes, decode_boxes
from jaxcv.ops.nms import batched_nms
from jaxcv.tasks.inputs import check_image_batch

__all__ = [
    "best_window",
    "detect",
    "extract_windows",
    "merge_boxes",
    "merge_boxes_paper",
    "merge_candidates",
    "naive_multiscale",
    "naive_sliding_window",
    "nms_boxes",
    "paper_match_scores",
    "window_candidates",
]

#: The merging rules of :func:`detect`: greedy merging (:func:`merge_boxes`), per-class NMS
#: (:func:`nms_boxes`) and the paper's pairwise merging (:func:`merge_boxes_paper`).
METHODS = ("merge", "nms", "paper_merge")
#: Sizes below this (pixels) count as this in the match score's denominator.
MIN_MATCH_SIZE = 1e-6


def extract_windows(
    images: jax.Array, window: Sequence[int], stride: int, num_windows: Sequence[int]
) -> jax.Array:
    """All ``window``-sized crops of ``images`` at ``stride``, by one gather.

    Args:
      images: ``(B, H, W, C)``.
      window: ``(h, w)`` crop size.
      stride: pixels between neighbouring crops.
      num_windows: ``(n_h, n_w)`` crops per column/row; crop ``(i, j)`` starts at
        ``(i * stride, j * stride)`` and must lie inside the image.

    Returns:
      ``(B, n_h, n_w, h, w, C)``.
    """
    check_image_batch(images, "images")
    (wh, ww), (nh, nw) = (tuple(int(s) for s in window), tuple(int(n) for n in num_windows))
    if (nh - 1) * stride + wh > images.shape[1] or (nw - 1) * stride + ww > images.shape[2]:
        raise ValueError(
            f"{(nh, nw)} windows of {(wh, ww)} at stride {stride} do not fit in images of "
            f"shape {images.shape}"
        )
    rows = stride * jnp.arange(nh)[:, None] + jnp.arange(wh)[None, :]  # (nh, wh)
    cols = stride * jnp.arange(nw)[:, None] + jnp.arange(ww)[None, :]  # (nw, ww)
    # images[b, rows[i, y], cols[j, x], c] -> (B, nh, wh, nw, ww, C) -> (B, nh, nw, wh, ww, C)
    crops = images[:, rows[:, :, None, None], cols[None, None, :, :], :]
    return crops.transpose(0, 1, 3, 2, 4, 5)


@functools.partial(jax.jit, static_argnames=("model", "geometry", "scale", "box_weights"))
def naive_sliding_window(
    model: Localizer,
    variables: dict,
    images: jax.Array,
    *,
    geometry: WindowGeometry,
    scale: float = 1.0,
    box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
) -> tuple[jax.Array, jax.Array]:
    """Classify and localise every window crop of ``images`` resized by ``scale``.

    All ``n_h * n_w`` crops of every image go through ``model`` as one batch.

    Args:
      model: the trained localizer (FC heads).
      variables: its variables.
      images: ``(B, H, W, C)``.
      geometry: window size and stride (e.g. from :func:`~jaxcv.models.overfeat.
        fully_convolutional`).
      scale: resize factor (bilinear) applied before cropping.
      box_weights: the delta encoding weights the model was trained with.

    Returns:
      ``probs (B, n_h, n_w, K)`` and ``boxes`` ``(B, n_h, n_w, 4)`` or ``(B, n_h, n_w, K, 4)``
      xyxy in original-image pixels, clipped to the image.
    """
    check_image_batch(images, "images")
    b, h, w, c = images.shape
    hs, ws = scaled_size((h, w), scale)
    resized = images if (hs, ws) == (h, w) else jax.image.resize(images, (b, hs, ws, c), "linear")
    nh, nw = geometry.num_windows((hs, ws))
    if min(nh, nw) < 1:
        raise ValueError(f"images resized to {(hs, ws)} hold no {geometry.window} window")
    crops = extract_windows(resized, geometry.window, geometry.stride, (nh, nw))
    flat = crops.reshape(b * nh * nw, *crops.shape[3:])
    out = model.apply(variables, flat, train=False)
    probs = object_probs(out["logits"], model.num_classes).reshape(b, nh, nw, -1)
    deltas = out["box_deltas"].reshape(b, nh, nw, *out["box_deltas"].shape[1:])
    crop_window = jnp.array([0.0, 0.0, geometry.window[1], geometry.window[0]], jnp.float32)
    local = decode_boxes(deltas, crop_window, box_weights)  # in crop pixels
    origin = jnp.asarray(geometry.window_boxes((nh, nw))[..., :2])  # (nh, nw, 2) x, y
    shift = jnp.concatenate([origin, origin], axis=-1)
    shift = shift[None, :, :, None, :] if local.ndim == 5 else shift[None]
    return probs, clip_boxes((local + shift) / scale, (h, w))


def naive_multiscale(
    model: Localizer,
    variables: dict,
    images: jax.Array,
    scales: Sequence[float],
    geometry: WindowGeometry,
    box_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
) -> list[ScaleOutput]:
    """:func:`naive_sliding_window` at each scale, as :class:`ScaleOutput` s.

    Returns the same structure as :func:`jaxcv.models.overfeat.apply_multiscale` (the maps
    cover the windows lying inside the resized image).
    """
    outputs = []
    h, w = images.shape[1:3]
    for scale in scales:
        probs, boxes = naive_sliding_window(
            model,
            variables,
            images,
            geometry=geometry,
            scale=float(scale),
            box_weights=tuple(float(v) for v in box_weights),
        )
        windows = geometry.window_boxes(probs.shape[1:3]) / float(scale)
        outputs.append(ScaleOutput(float(scale), scaled_size((h, w), scale), probs, boxes, windows))
    return outputs


def best_window(probs: jax.Array, boxes: jax.Array) -> dict[str, jax.Array]:
    """The single best-scoring location of each image ("take the winning box").

    Args:
      probs: ``(B, h, w, K)`` class probabilities per location.
      boxes: ``(B, h, w, 4)`` or ``(B, h, w, K, 4)`` boxes per location.

    Returns:
      ``label (B,)`` int32, ``score (B,)``, ``box (B, 4)``, ``index (B,)`` (flat location).
    """
    if probs.ndim != 4:
        raise ValueError(f"probs must be (B, h, w, K); got shape {probs.shape}")
    b, _, _, k = probs.shape
    flat = probs.reshape(b, -1)
    best = jnp.argmax(flat, axis=1)
    loc, label = best // k, (best % k).astype(jnp.int32)
    fb = boxes.reshape(b, -1, k, 4) if boxes.ndim == 5 else boxes.reshape(b, -1, 1, 4)
    cls = label if boxes.ndim == 5 else jnp.zeros_like(label)
    box = fb[jnp.arange(b), loc, cls]
    return {"label": label, "score": flat[jnp.arange(b), best], "box": box, "index": loc}


def window_candidates(outputs: Sequence[ScaleOutput], min_score: float = 0.0) -> dict:
    """Flatten per-scale maps into candidate boxes: each location's top class and its box.

    Args:
      outputs: per-scale :class:`ScaleOutput` (probs ``(B, h_s, w_s, K)``).
      min_score: candidates whose top probability is below it are marked invalid.

    Returns:
      ``boxes (B, N, 4)``, ``scores (B, N)``, ``classes (B, N)`` int32 in ``0..K-1``,
      ``valid (B, N)`` bool, ``scale_index (B, N)`` int32; ``N = sum_s h_s * w_s``.
    """
    if not outputs:
        raise ValueError("outputs must not be empty")
    parts = {"boxes": [], "scores": [], "classes": [], "scale_index": []}
    for i, out in enumerate(outputs):
        probs, boxes = out.probs, out.boxes
        if probs.ndim != 4:
            raise ValueError(f"probs must be (B, h, w, K); got shape {probs.shape}")
        b, _, _, k = probs.shape
        p = probs.reshape(b, -1, k)
        cls = jnp.argmax(p, axis=-1).astype(jnp.int32)
        if boxes.ndim == 5:
            box = jnp.take_along_axis(boxes.reshape(b, -1, k, 4), cls[..., None, None], 2)[:, :, 0]
        else:
            box = boxes.reshape(b, -1, 4)
        parts["boxes"].append(box)
        parts["scores"].append(jnp.max(p, axis=-1))
        parts["classes"].append(cls)
        parts["scale_index"].append(jnp.full(cls.shape, i, jnp.int32))
    out = {k: jnp.concatenate(v, axis=1) for k, v in parts.items()}
    out["valid"] = out["scores"] >= min_score
    return out


def _centers_sizes(boxes: jax.Array) -> tuple[jax.Array, jax.Array]:
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    centers = jnp.stack([boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h], axis=-1)
    return centers, jnp.sqrt(jnp.maximum(w, 0.0) * jnp.maximum(h, 0.0))


def _check_candidates(boxes, scores, classes, valid) -> None:
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be (N, 4); got shape {boxes.shape}")
    n = boxes.shape[0]
    for name, x in (("scores", scores), ("classes", classes), ("valid", valid)):
        if x is not None and tuple(x.shape) != (n,):
            raise ValueError(f"{name} must be ({n},); got shape {x.shape}")


@functools.partial(jax.jit, static_argnames=("max_output",))
def merge_boxes(
    boxes: jax.Array,
    scores: jax.Array,
    classes: jax.Array,
    valid: jax.Array | None = None,
    *,
    iou_threshold: float = 0.3,
    center_threshold: float = 0.5,
    max_output: int = 16,
) -> dict[str, jax.Array]:
    """Greedy Overfeat-style merging of one image's candidate boxes (static shapes).

    Repeatedly: the highest-scoring unmerged box is the seed; every unmerged box of its class
    with IoU ``>= iou_threshold`` with the seed and centre distance ``<= center_threshold *
    sqrt(w_seed * h_seed)`` joins it (the seed always does). The merged box is the
    score-weighted mean of the members' boxes; its score is the sum of their scores. The
    outputs are sorted by merged score.

    Args:
      boxes: ``(N, 4)`` xyxy pixels.
      scores: ``(N,)`` non-negative scores (e.g. class probabilities).
      classes: ``(N,)`` int classes.
      valid: optional ``(N,)`` bool; invalid candidates are ignored.
      iou_threshold: minimal overlap with the seed.
      center_threshold: maximal centre distance, in units of the seed's size.
      max_output: ``D``, static number of output slots.

    Returns:
      ``boxes (D, 4)``, ``scores (D,)``, ``classes (D,)`` int32, ``num_merged (D,)`` int32
      (members per output), ``valid (D,)`` bool (a prefix).
    """
    _check_candidates(boxes, scores, classes, valid)
    boxes = boxes.astype(jnp.float32)
    scores = scores.astype(jnp.float32)
    classes = classes.astype(jnp.int32)
    n = boxes.shape[0]
    if valid is None:
        valid = jnp.ones((n,), bool)
    centers, _ = _centers_sizes(boxes)

    def body(t, state):
        assigned, out_boxes, out_scores, out_classes, out_count, out_valid = state
        remaining = jnp.where(assigned, -jnp.inf, scores)
        seed = jnp.argmax(remaining)
        alive = jnp.isfinite(remaining[seed])
        seed_box = boxes[seed]
        iou = box_iou(seed_box[None], boxes)[0]
        _, seed_size = _centers_sizes(seed_box)
        dist = jnp.linalg.norm(centers - centers[seed], axis=-1)
        members = (
            ~assigned
            & (classes == classes[seed])
            & (iou >= iou_threshold)
            & (dist <= center_threshold * seed_size)
        )
        members = (members | (jnp.arange(n) == seed)) & alive
        weight = jnp.where(members, scores, 0.0)
        total = jnp.sum(weight)
        count = jnp.sum(members)
        # Score-weighted mean; a plain mean when all member scores are 0.
        mean = jnp.where(
            total > 0,
            jnp.sum(weight[:, None] * boxes, 0) / jnp.where(total > 0, total, 1.0),
            jnp.sum(jnp.where(members[:, None], boxes, 0.0), 0) / jnp.maximum(count, 1),
        )
        return (
            assigned | members,
            out_boxes.at[t].set(jnp.where(alive, mean, 0.0)),
            out_scores.at[t].set(jnp.where(alive, total, 0.0)),
            out_classes.at[t].set(jnp.where(alive, classes[seed], 0)),
            out_count.at[t].set(jnp.where(alive, count, 0).astype(jnp.int32)),
            out_valid.at[t].set(alive),
        )

    init = (
        ~valid.astype(bool),
        jnp.zeros((max_output, 4), jnp.float32),
        jnp.zeros((max_output,), jnp.float32),
        jnp.zeros((max_output,), jnp.int32),
        jnp.zeros((max_output,), jnp.int32),
        jnp.zeros((max_output,), bool),
    )
    _, ob, os_, oc, on, ov = jax.lax.fori_loop(0, max_output, body, init)
    order = jnp.argsort(jnp.where(ov, -os_, jnp.inf), stable=True)
    return {
        "boxes": ob[order],
        "scores": os_[order],
        "classes": oc[order],
        "num_merged": on[order],
        "valid": ov[order],
    }


@functools.partial(jax.jit, static_argnames=("max_output",))
def nms_boxes(
    boxes: jax.Array,
    scores: jax.Array,
    classes: jax.Array,
    valid: jax.Array | None = None,
    *,
    iou_threshold: float = 0.3,
    max_output: int = 16,
) -> dict[str, jax.Array]:
    """Per-class NMS of one image's candidates (the alternative to :func:`merge_boxes`).

    Args and returns as :func:`merge_boxes` (``num_merged`` is 1 for every kept box).
    """
    _check_candidates(boxes, scores, classes, valid)
    idx, ok = batched_nms(boxes, scores, classes, iou_threshold, max_output, valid=valid)
    return {
        "boxes": jnp.where(ok[:, None], boxes[idx], 0.0),
        "scores": jnp.where(ok, scores[idx], 0.0),
        "classes": jnp.where(ok, classes[idx], 0).astype(jnp.int32),
        "num_merged": ok.astype(jnp.int32),
        "valid": ok,
    }


def paper_match_scores(boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
    """The paper's match score of every pair of ``xyxy`` boxes: lower is a better match.

    ``|c1 - c2| / max(0.5 * (s1 + s2), MIN_MATCH_SIZE) + 1 - IoU``, with ``c`` a box's centre and
    ``s = sqrt(w h)`` its size: 0 for two equal boxes, 0.83 for two squares of one size offset
    by a third of their side (IoU 0.5), 2 for two such squares side by side, more farther
    apart.

    Args:
      boxes1: ``(N, 4)``; boxes2: ``(M, 4)`` xyxy pixels.

    Returns:
      ``(N, M)`` float32.
    """
    c1, s1 = _centers_sizes(boxes1)
    c2, s2 = _centers_sizes(boxes2)
    dist = jnp.sqrt(jnp.sum(jnp.square(c1[:, None, :] - c2[None, :, :]), axis=-1))
    scale = jnp.maximum(0.5 * (s1[:, None] + s2[None, :]), MIN_MATCH_SIZE)
    return dist / scale + 1.0 - box_iou(boxes1, boxes2)


def _sorted_slots(boxes, scores, classes, counts, alive, max_output: int) -> dict:
    """The ``alive`` entries by decreasing score in ``max_output`` slots (zeros after them)."""
    n = scores.shape[0]
    if max_output > n:
        pad = max_output - n
        boxes = jnp.pad(boxes, ((0, pad), (0, 0)))
        scores, classes, counts = (jnp.pad(x, (0, pad)) for x in (scores, classes, counts))
        alive = jnp.pad(alive, (0, pad))
    order = jnp.argsort(jnp.where(alive, -scores, jnp.inf), stable=True)[:max_output]
    ok = alive[order]
    return {
        "boxes": jnp.where(ok[:, None], boxes[order], 0.0),
        "scores": jnp.where(ok, scores[order], 0.0),
        "classes": jnp.where(ok, classes[order], 0).astype(jnp.int32),
        "num_merged": jnp.where(ok, counts[order], 0).astype(jnp.int32),
        "valid": ok,
    }


@functools.partial(jax.jit, static_argnames=("max_output",))
def merge_boxes_paper(
    boxes: jax.Array,
    scores: jax.Array,
    classes: jax.Array,
    valid: jax.Array | None = None,
    *,
    match_threshold: float = 1.0,
    max_output: int = 16,
) -> dict[str, jax.Array]:
    """The paper's box merging of one image's candidates (Sermanet et al. 2014, sec. 4.3).

    Every valid candidate starts as a group of one. Repeatedly, the two groups of one class
    whose boxes have the smallest :func:`paper_match_scores` are found; if that score is above
    ``match_threshold`` the merging stops, else the two are replaced by one group: its box the
    mean of all its members' boxes (the paper's "average of the bounding boxes' coordinates",
    so a group's box is weighted by its member count), its score the sum of their scores (a
    box confirmed by many windows and scales ranks high). Groups of different classes never
    merge. Ties go to the pair ``(i, j)``, ``i < j``, first in row-major order of the
    candidates, and a merged group keeps the smaller index.

    Static shapes: an ``N x N`` matrix of match scores and a ``jax.lax.while_loop`` of at most
    ``N - 1`` merges; each merge recomputes one row and column (``O(N)``) and finds the next
    pair (a min over the matrix, ``O(N^2)``).

    Args:
      boxes: ``(N, 4)`` xyxy pixels.
      scores: ``(N,)`` non-negative scores (e.g. class probabilities).
      classes: ``(N,)`` int classes.
      valid: optional ``(N,)`` bool; invalid candidates are ignored.
      match_threshold: the largest match score that still merges.
      max_output: ``D``, static number of output slots.

    Returns:
      ``boxes (D, 4)``, ``scores (D,)``, ``classes (D,)`` int32, ``num_merged (D,)`` int32
      (candidates per group), ``valid (D,)`` bool (a prefix), sorted by decreasing score.
    """
    _check_candidates(boxes, scores, classes, valid)
    boxes = boxes.astype(jnp.float32)
    classes = classes.astype(jnp.int32)
    n = boxes.shape[0]
    if n == 0:
        raise ValueError("merge_boxes_paper needs at least one candidate slot (N >= 1)")
    valid = jnp.ones((n,), bool) if valid is None else valid.astype(bool)
    scores = jnp.where(valid, scores.astype(jnp.float32), 0.0)
    index = jnp.arange(n)
    same = classes[:, None] == classes[None, :]
    pairs = same & (index[:, None] < index[None, :])  # each pair once, i < j
    inf = jnp.float32(jnp.inf)
    match = jnp.where(
        pairs & valid[:, None] & valid[None, :], paper_match_scores(boxes, boxes), inf
    )
    threshold = jnp.asarray(match_threshold, jnp.float32)

    def best(m):
        # The row-major first minimum: the best row, then its best column (an argmin over
        # the N x N matrix is about 20x slower on CPU than these three reductions).
        rows = jnp.min(m, axis=1)
        i = jnp.argmin(rows)
        return rows[i], i, jnp.argmin(m[i])

    def cond(state):
        *_, value, _, _, count = state
        return jnp.isfinite(value) & (value <= threshold) & (count < n - 1)

    def body(state):
        m, sums, counts, totals, alive, _, i, j, count = state
        sums = sums.at[i].add(sums[j]).at[j].set(0.0)
        counts = counts.at[i].add(counts[j]).at[j].set(0.0)
        totals = totals.at[i].add(totals[j]).at[j].set(0.0)
        alive = alive.at[j].set(False)
        means = sums / jnp.maximum(counts, 1.0)[:, None]
        row = paper_match_scores(means[i][None], means)[0]
        row = jnp.where(alive & same[i] & (index != i), row, inf)
        m = m.at[j, :].set(inf).at[:, j].set(inf)
        m = m.at[i, :].set(jnp.where(index > i, row, inf))
        m = m.at[:, i].set(jnp.where(index < i, row, inf))
        return m, sums, counts, totals, alive, *best(m), count + 1

    init = (
        match,
        jnp.where(valid[:, None], boxes, 0.0),
        valid.astype(jnp.float32),
        scores,
        valid,
        *best(match),
        jnp.int32(0),
    )
    _, sums, counts, totals, alive, *_ = jax.lax.while_loop(cond, body, init)
    means = sums / jnp.maximum(counts, 1.0)[:, None]
    return _sorted_slots(means, totals, classes, counts, alive, max_output)


@functools.partial(jax.jit, static_argnames=("method", "max_output", "max_candidates"))
def merge_candidates(
    candidates: dict[str, jax.Array],
    *,
    method: str = "merge",
    min_score: float = 0.0,
    iou_threshold: float = 0.3,
    center_threshold: float = 0.5,
    match_threshold: float = 1.0,
    max_output: int = 16,
    max_candidates: int | None = None,
) -> dict[str, jax.Array]:
    """A batch of candidates (:func:`window_candidates`) -> detections by one rule.

    The thresholds are traced (one compiled program for every value), so a grid of them
    reuses one program per ``method``.

    Args:
      candidates: ``boxes (B, N, 4)``, ``scores (B, N)``, ``classes (B, N)``, ``valid (B, N)``.
      method: one of :data:`METHODS`: ``"merge"`` (:func:`merge_boxes`), ``"nms"``
        (:func:`nms_boxes`) or ``"paper_merge"`` (:func:`merge_boxes_paper`).
      min_score: candidates scoring below it are dropped too.
      iou_threshold: ``"merge"``'s minimal IoU with the seed, ``"nms"``'s suppression IoU.
      center_threshold: ``"merge"``'s maximal centre distance (in seed sizes).
      match_threshold: ``"paper_merge"``'s largest merged match score.
      max_output: ``D`` detections per image.
      max_candidates: keep only this many best-scoring valid candidates per image before
        merging (None: all ``N``); the paper merge's cost grows as its square.

    Returns:
      ``boxes (B, D, 4)``, ``scores (B, D)``, ``classes (B, D)`` in ``0..K-1``,
      ``num_merged (B, D)``, ``valid (B, D)``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    boxes, scores, classes = candidates["boxes"], candidates["scores"], candidates["classes"]
    valid = candidates["valid"].astype(bool) & (scores >= min_score)
    if max_candidates is not None and max_candidates < scores.shape[1]:
        _, top = jax.lax.top_k(jnp.where(valid, scores, -jnp.inf), int(max_candidates))
        boxes = jnp.take_along_axis(boxes, top[..., None], axis=1)
        scores, classes, valid = (
            jnp.take_along_axis(x, top, axis=1) for x in (scores, classes, valid)
        )
    if method == "merge":
        fn = functools.partial(
            merge_boxes,
            iou_threshold=iou_threshold,
            center_threshold=center_threshold,
            max_output=max_output,
        )
    elif method == "nms":
        fn = functools.partial(nms_boxes, iou_threshold=iou_threshold, max_output=max_output)
    else:
        fn = functools.partial(
            merge_boxes_paper, match_threshold=match_threshold, max_output=max_output
        )
        # One image at a time: under vmap the while loop would run every image for as many
        # merges as the busiest one needs, selecting over all the B x N x N matrices each time.
        return jax.lax.map(lambda args: fn(*args), (boxes, scores, classes, valid))
    return jax.vmap(fn)(boxes, scores, classes, valid)


def detect(
    outputs: Sequence[ScaleOutput],
    *,
    method: str = "merge",
    min_score: float = 0.0,
    iou_threshold: float = 0.3,
    center_threshold: float = 0.5,
    match_threshold: float = 1.0,
    max_output: int = 16,
) -> dict[str, jax.Array]:
    """Final detections of a batch from per-scale maps (fully-convolutional or naive).

    Args:
      outputs: per-scale :class:`ScaleOutput` s of one batch of images.
      method: ``"merge"`` (:func:`merge_boxes`), ``"nms"`` (:func:`nms_boxes`) or
        ``"paper_merge"`` (:func:`merge_boxes_paper`).
      min_score: candidates below this top-class probability are dropped.
      iou_threshold, center_threshold: the matching thresholds (``center_threshold`` only for
        ``"merge"``).
      match_threshold: the largest match score ``"paper_merge"`` merges.
      max_output: ``D`` detections per image.

    Returns:
      ``boxes (B, D, 4)``, ``scores (B, D)``, ``classes (B, D)`` in ``0..K-1``,
      ``num_merged (B, D)``, ``valid (B, D)``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    cand = window_candidates(outputs, min_score)
    return merge_candidates(
        {k: cand[k] for k in ("boxes", "scores", "classes", "valid")},
        method=method,
        min_score=min_score,
        iou_threshold=iou_threshold,
        center_threshold=center_threshold,
        match_threshold=match_threshold,
        max_output=max_output,
    )
