"""Per-example tf ops that keep image, boxes, masks and segmentation consistent.

An *example* is a dict with (a subset of) the keys of :mod:`jaxcv.types`, before batching:
``image (H, W, C)`` (uint8 or float32 in 0..255 before :func:`normalize`), ``label ()`` int32,
``boxes (N, 4)`` float32 xyxy pixels, ``classes (N,)`` int32 in 1..K, ``masks (N, H, W)``
uint8, ``segmentation (H, W)`` int32, ``ignore (N,)`` bool and ``original_size (2,)`` int32;
external ``proposals (P, 4)`` float32 xyxy pixels are moved by :func:`resize` and
:func:`random_flip` like boxes (never filtered; crops do not support them).
``N`` varies per example until :func:`pad_objects` pads it to ``max_objects``.

Policies:
  * When ``masks`` are present, geometric transforms recompute each box as the tight box of its
    transformed mask (pixel-edge convention: columns 10..19 give x1=10, x2=20), so boxes and
    masks always agree; otherwise boxes are transformed (scaled, shifted, clipped) directly.
  * Crops drop objects keeping less than ``min_visible_fraction`` of their mask pixels (or of
    their box area, without masks); resizes drop objects whose mask vanishes.
  * Randomness is stateless: every random op takes a ``seed`` of shape ``(2,)`` int.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from jaxcv.types import BOXES, CLASSES, IGNORE, IMAGE, MASKS, PROPOSALS, SEGMENTATION, VALID

OBJECT_KEYS = (BOXES, CLASSES, MASKS, IGNORE)


def _check_rank(x: tf.Tensor, rank: int, name: str, shape: str) -> None:
    if x.shape.rank is not None and x.shape.rank != rank:
        raise ValueError(f"{name} must have shape {shape}, got {x.shape}")


def _hw(example: dict) -> tuple[tf.Tensor, tf.Tensor]:
    image = example[IMAGE]
    _check_rank(image, 3, "image", "(H, W, C)")
    shape = tf.shape(image)
    return shape[0], shape[1]


def tight_boxes(masks: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Tight xyxy boxes of binary masks.

    Args:
      masks: ``(N, H, W)`` any numeric dtype, non-zero inside.

    Returns:
      ``boxes (N, 4)`` float32 pixel-edge xyxy (zeros for empty masks) and
      ``nonempty (N,)`` bool.
    """
    _check_rank(masks, 3, "masks", "(N, H, W)")
    inside = masks > 0
    cols = tf.reduce_any(inside, axis=1)  # (N, W)
    rows = tf.reduce_any(inside, axis=2)  # (N, H)
    nonempty = tf.reduce_any(cols, axis=1)
    w = tf.shape(cols, out_type=tf.int64)[1]
    h = tf.shape(rows, out_type=tf.int64)[1]
    x1 = tf.argmax(tf.cast(cols, tf.int32), axis=1)
    x2 = w - tf.argmax(tf.cast(tf.reverse(cols, [1]), tf.int32), axis=1)
    y1 = tf.argmax(tf.cast(rows, tf.int32), axis=1)
    y2 = h - tf.argmax(tf.cast(tf.reverse(rows, [1]), tf.int32), axis=1)
    boxes = tf.cast(tf.stack([x1, y1, x2, y2], axis=1), tf.float32)
    return tf.where(nonempty[:, None], boxes, tf.zeros_like(boxes)), nonempty


def filter_objects(example: dict, keep: tf.Tensor) -> dict:
    """Keeps only the objects where ``keep (N,)`` bool is true (in order)."""
    out = dict(example)
    for key in OBJECT_KEYS:
        if key in out:
            out[key] = tf.boolean_mask(out[key], keep)
    return out


def _boxes_from_masks(example: dict) -> dict:
    """Recomputes boxes from masks and drops objects with empty masks."""
    if MASKS not in example:
        return example
    out = dict(example)
    boxes, nonempty = tight_boxes(out[MASKS])
    out[BOXES] = boxes
    return filter_objects(out, nonempty)


def resize(example: dict, size: Sequence[int] | tf.Tensor) -> dict:
    """Resizes to ``size = (H', W')``: image bilinear (anti-aliased, float32), masks and
    segmentation nearest; boxes scaled (or recomputed from masks)."""
    if not isinstance(size, tf.Tensor):
        if len(size) != 2:
            raise ValueError(f"size must be (H, W), got {size}")
        size = [int(size[0]), int(size[1])]
    static = [None, None] if isinstance(size, tf.Tensor) else size
    h, w = _hw(example)
    out = dict(example)
    out[IMAGE] = tf.image.resize(example[IMAGE], size, method="bilinear", antialias=True)
    if SEGMENTATION in out:
        seg = tf.image.resize(out[SEGMENTATION][..., None], size, method="nearest")
        out[SEGMENTATION] = seg[..., 0]
    if BOXES in out and MASKS not in out:
        sx = tf.cast(size[1], tf.float32) / tf.cast(w, tf.float32)
        sy = tf.cast(size[0], tf.float32) / tf.cast(h, tf.float32)
        out[BOXES] = out[BOXES] * tf.stack([sx, sy, sx, sy])
    if PROPOSALS in out:
        sx = tf.cast(size[1], tf.float32) / tf.cast(w, tf.float32)
        sy = tf.cast(size[0], tf.float32) / tf.cast(h, tf.float32)
        out[PROPOSALS] = out[PROPOSALS] * tf.stack([sx, sy, sx, sy])
    if MASKS in out:
        masks = tf.image.resize(out[MASKS][..., None], size, method="nearest")[..., 0]
        out[MASKS] = tf.ensure_shape(masks, [None, *static])
        out = _boxes_from_masks(out)
    return out


def random_flip(example: dict, seed: tf.Tensor) -> dict:
    """Mirrors left-right with probability 1/2 (``x -> W - x`` for box edges)."""
    h, w = _hw(example)
    del h
    flip = tf.random.stateless_uniform([], seed) < 0.5
    out = dict(example)
    out[IMAGE] = tf.cond(flip, lambda: tf.reverse(example[IMAGE], [1]), lambda: example[IMAGE])
    if SEGMENTATION in out:
        seg = out[SEGMENTATION]
        out[SEGMENTATION] = tf.cond(flip, lambda: tf.reverse(seg, [1]), lambda: seg)
    if MASKS in out:
        masks = out[MASKS]
        out[MASKS] = tf.cond(flip, lambda: tf.reverse(masks, [2]), lambda: masks)
    wf = tf.cast(w, tf.float32)
    for key in (BOXES, PROPOSALS):
        if key in out:
            out[key] = _flip_boxes(out[key], wf, flip)
    return out


def _flip_boxes(boxes: tf.Tensor, width: tf.Tensor, flip: tf.Tensor) -> tf.Tensor:
    flipped = tf.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)
    return tf.where(flip, flipped, boxes)


def crop(example: dict, y0, x0, h, w, min_visible_fraction: float = 0.25) -> dict:
    """Crops the window ``[y0, y0 + h) x [x0, x0 + w)`` (inside the image).

    Boxes are shifted and clipped (or recomputed from the cropped masks); objects keeping less
    than ``min_visible_fraction`` of their pixels (box area without masks) are dropped.
    """
    out = dict(example)
    out[IMAGE] = example[IMAGE][y0 : y0 + h, x0 : x0 + w]
    if SEGMENTATION in out:
        out[SEGMENTATION] = out[SEGMENTATION][y0 : y0 + h, x0 : x0 + w]
    if MASKS in out:
        masks = out[MASKS]
        before = tf.reduce_sum(tf.cast(masks > 0, tf.float32), axis=[1, 2])
        out[MASKS] = masks[:, y0 : y0 + h, x0 : x0 + w]
        after = tf.reduce_sum(tf.cast(out[MASKS] > 0, tf.float32), axis=[1, 2])
        boxes, nonempty = tight_boxes(out[MASKS])
        out[BOXES] = boxes
        return filter_objects(out, nonempty & (after >= min_visible_fraction * before))
    if BOXES in out:
        boxes = out[BOXES]
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        offset = tf.cast(tf.stack([x0, y0, x0, y0]), tf.float32)
        limit = tf.cast(tf.stack([w, h, w, h]), tf.float32)
        clipped = tf.clip_by_value(boxes - offset, 0.0, limit)
        cw, ch = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
        keep = (cw > 0) & (ch > 0) & (cw * ch >= min_visible_fraction * area)
        out[BOXES] = clipped
        return filter_objects(out, keep)
    return out


def random_resized_crop(
    example: dict,
    seed: tf.Tensor,
    min_scale: float = 0.6,
    min_visible_fraction: float = 0.25,
    out_size: Sequence[int] | None = None,
) -> dict:
    """Crops a random window with sides ``s * (H, W)``, ``s ~ U[min_scale, 1]``, then resizes
    it to ``out_size`` (default: back to ``(H, W)``); see :func:`crop` for the object policy."""
    if not 0.0 < min_scale <= 1.0:
        raise ValueError(f"min_scale must be in (0, 1], got {min_scale}")
    h, w = _hw(example)
    seeds = tf.random.experimental.stateless_split(seed, 3)
    scale = tf.random.stateless_uniform([], seeds[0], min_scale, 1.0)
    ch = tf.maximum(1, tf.cast(tf.round(scale * tf.cast(h, tf.float32)), tf.int32))
    cw = tf.maximum(1, tf.cast(tf.round(scale * tf.cast(w, tf.float32)), tf.int32))
    y0 = tf.random.stateless_uniform([], seeds[1], 0, h - ch + 1, dtype=tf.int32)
    x0 = tf.random.stateless_uniform([], seeds[2], 0, w - cw + 1, dtype=tf.int32)
    out = crop(example, y0, x0, ch, cw, min_visible_fraction)
    if out_size is not None:
        return resize(out, out_size)
    static = example[IMAGE].shape[:2]
    if static.is_fully_defined():
        return resize(out, static.as_list())
    return resize(out, tf.stack([h, w]))


def random_translate(example: dict, seed: tf.Tensor, pad: int) -> dict:
    """Zero-pads by ``pad`` on each side, then crops a random ``(H, W)`` window (a random shift
    of up to ``pad`` pixels; CIFAR-style augmentation)."""
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    h, w = _hw(example)
    out = dict(example)
    out[IMAGE] = tf.pad(example[IMAGE], [[pad, pad], [pad, pad], [0, 0]])
    if SEGMENTATION in out:
        out[SEGMENTATION] = tf.pad(out[SEGMENTATION], [[pad, pad], [pad, pad]])
    if MASKS in out:
        out[MASKS] = tf.pad(out[MASKS], [[0, 0], [pad, pad], [pad, pad]])
    if BOXES in out:
        out[BOXES] = out[BOXES] + float(pad)
    offsets = tf.random.stateless_uniform([2], seed, 0, 2 * pad + 1, dtype=tf.int32)
    out = crop(out, offsets[0], offsets[1], h, w)
    out[IMAGE] = tf.ensure_shape(out[IMAGE], example[IMAGE].shape)
    if SEGMENTATION in out:
        out[SEGMENTATION] = tf.ensure_shape(out[SEGMENTATION], example[SEGMENTATION].shape)
    if MASKS in out:
        out[MASKS] = tf.ensure_shape(out[MASKS], [None, *example[MASKS].shape[1:]])
    return out


def normalize(example: dict, mean: Sequence[float], std: Sequence[float]) -> dict:
    """``image = (image / 255 - mean) / std`` as float32; ``mean``/``std`` per channel (0..1)."""
    out = dict(example)
    image = tf.cast(example[IMAGE], tf.float32) / 255.0
    out[IMAGE] = (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
    return out


def grayscale_to_rgb(example: dict) -> dict:
    """Repeats a single channel three times (``(H, W, 1) -> (H, W, 3)``)."""
    image = example[IMAGE]
    if image.shape[-1] != 1:
        raise ValueError(f"grayscale_to_rgb needs (H, W, 1) images, got {image.shape}")
    return {**example, IMAGE: tf.repeat(image, 3, axis=-1)}


def pad_objects(example: dict, max_objects: int) -> dict:
    """Pads the ``N`` objects to ``M = max_objects`` and adds ``valid (M,)`` bool.

    Truncation policy: with ``N > M`` objects, the ``M`` largest boxes (by area; ties keep the
    earlier object) are kept, in their original order.
    """
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1, got {max_objects}")
    if BOXES not in example:
        raise ValueError(f"pad_objects needs boxes, got keys {sorted(example)}")
    boxes = example[BOXES]
    _check_rank(boxes, 2, "boxes", "(N, 4)")
    n = tf.shape(boxes)[0]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    _, top = tf.math.top_k(area, k=tf.minimum(n, max_objects), sorted=True)
    keep = tf.sort(top)
    count = tf.shape(keep)[0]
    out = dict(example)
    for key in OBJECT_KEYS:
        if key not in out:
            continue
        value = tf.gather(out[key], keep)
        rank = value.shape.rank
        value = tf.pad(value, [[0, max_objects - count]] + [[0, 0]] * (rank - 1))
        out[key] = tf.ensure_shape(value, [max_objects, *value.shape[1:]])
    out[VALID] = tf.range(max_objects) < count
    return out


def pad_to_size(
    example: dict, size: Sequence[int], *, ignore_label: int = 255, image_fill: float = 0.0
) -> dict:
    """Fits an example into a fixed ``(H', W')`` canvas without distorting it.

    An image larger than the canvas is first scaled down by ``min(H'/H, W'/W)`` (aspect ratio
    kept; see :func:`resize` for the policy), a smaller one is never upscaled; then everything
    is padded at the bottom/right: ``image`` with ``image_fill`` (call after :func:`normalize`
    with 0: the dataset's mean colour, as a mean-subtracted input zero-padded by a conv),
    ``segmentation`` with ``ignore_label`` (padded pixels count in neither the loss nor the
    metrics), ``masks`` with 0. Boxes and proposals keep their coordinates (the padding is
    bottom/right). The static shapes become ``(H', W', C)``, ``(H', W')``, ``(N, H', W')``.

    Args:
      example: ``image (H, W, C)`` and optionally the other keys of the module docstring.
      size: ``(H', W')`` positive ints.
      ignore_label: segmentation value of padded pixels.
      image_fill: image value of padded pixels.

    Returns:
      The example with a float32 image.
    """
    if len(size) != 2 or min(int(s) for s in size) < 1:
        raise ValueError(f"size must be (H, W) positive, got {size}")
    out_h, out_w = int(size[0]), int(size[1])
    h, w = _hw(example)
    example = {**example, IMAGE: tf.cast(example[IMAGE], tf.float32)}  # as resize returns it
    scale = tf.minimum(
        tf.cast(out_h, tf.float32) / tf.cast(h, tf.float32),
        tf.cast(out_w, tf.float32) / tf.cast(w, tf.float32),
    )
    fit_h = tf.clip_by_value(tf.cast(tf.round(scale * tf.cast(h, tf.float32)), tf.int32), 1, out_h)
    fit_w = tf.clip_by_value(tf.cast(tf.round(scale * tf.cast(w, tf.float32)), tf.int32), 1, out_w)
    if tuple(example[IMAGE].shape[:2]) != (out_h, out_w):  # statically equal: nothing to do
        out = tf.cond(
            scale < 1.0,
            lambda: resize(example, tf.stack([fit_h, fit_w])),
            lambda: dict(example),
        )
    else:
        out = dict(example)
    h, w = _hw(out)
    pad_h, pad_w = out_h - h, out_w - w
    channels = example[IMAGE].shape[-1]
    image = tf.pad(out[IMAGE], [[0, pad_h], [0, pad_w], [0, 0]], constant_values=image_fill)
    out[IMAGE] = tf.ensure_shape(image, [out_h, out_w, channels])
    if SEGMENTATION in out:
        seg = tf.pad(out[SEGMENTATION], [[0, pad_h], [0, pad_w]], constant_values=ignore_label)
        out[SEGMENTATION] = tf.ensure_shape(seg, [out_h, out_w])
    if MASKS in out:
        masks = tf.pad(out[MASKS], [[0, 0], [0, pad_h], [0, pad_w]])
        out[MASKS] = tf.ensure_shape(masks, [None, out_h, out_w])
    return out
