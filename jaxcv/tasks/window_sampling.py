"""Training windows for a sliding-window localizer: object windows, background windows, crops.

An Overfeat detector scores every ``h x w`` window of a scene at several scales; most windows
hold no object, some a part of one. A localizer trained only on crops that each contain one
object has no way to say "nothing here" and gives every window a confident class. This module
samples, inside the jitted train step and with static shapes, the windows a
:class:`~jaxcv.tasks.localization.LocalizationTask` trains on from full scenes:

* :func:`sample_windows`: per image, ``num_object`` windows around a randomly chosen object
  (the object's longer side a log-uniform fraction ``relative_size`` of the window's, its
  position in the window uniform, shifted by up to ``jitter`` of the object size so that some
  are cut) and ``num_random`` windows of random size and position (mostly background);
* :func:`label_windows`: a window is ``POSITIVE`` for the object it covers when it contains at
  least ``positive_coverage`` of the object's box and the object's relative size is in
  ``relative_size``; ``BACKGROUND`` when it contains less than ``background_coverage`` of every
  object's box; ``IGNORE`` in between (a large part of an object, or an object of the wrong
  size: such windows are neither clean examples of the object nor of the background);
* :func:`crop_windows`: bilinear, antialiased crop-and-resize of every window to ``h x w``
  (:func:`jax.image.scale_and_translate`, the same resampling as :func:`jax.image.resize`, which
  the fully-convolutional evaluation uses to rescale scenes);
* :func:`window_targets`: the positive object's box in the resized window's pixels;
* :func:`training_windows`: all of it for a batch of scenes, with the settings of a
  :class:`WindowSampling`: the network inputs, class targets (background = class ``K``) and box
  targets with their weights.

Windows are ``(B, R, 4)`` float32 xyxy pixels of the scene; ``R = num_object + num_random``;
windows always lie inside the scene (as the windows of the sliding-window evaluation do).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxcv.ops.boxes import elementwise_box_intersection

__all__ = [
    "WindowLabel",
    "WindowSampling",
    "box_coverage",
    "crop_windows",
    "label_windows",
    "sample_windows",
    "training_windows",
    "window_targets",
]


class WindowLabel(enum.IntEnum):
    """What a training window shows (values stored in int32 arrays).

    ``IGNORE``: neither a clean object window nor background; no loss.
    ``BACKGROUND``: no object (less than ``background_coverage`` of any object's box inside).
    ``POSITIVE``: one object, whole enough and of the trained size; class and box are trained.
    """

    IGNORE = -1
    BACKGROUND = 0
    POSITIVE = 1


def _check(name: str, x: jax.Array, rank: int, last: int | None = None, shape: str = "") -> None:
    if x.ndim != rank or (last is not None and x.shape[-1] != last):
        raise ValueError(f"{name} must be {shape}; got shape {x.shape}")


def _log_uniform(key: jax.Array, shape: tuple[int, ...], low: float, high: float) -> jax.Array:
    u = jax.random.uniform(key, shape)
    return jnp.exp(jnp.log(low) + u * (jnp.log(high) - jnp.log(low)))


def box_coverage(windows: jax.Array, boxes: jax.Array) -> jax.Array:
    """Fraction of each box's area inside each window.

    Args:
      windows: ``(B, R, 4)`` xyxy.
      boxes: ``(B, M, 4)`` xyxy.

    Returns:
      ``(B, R, M)`` ``area(window & box) / area(box)``, 0 for boxes of no area.
    """
    _check("windows", windows, 3, 4, "(B, R, 4)")
    _check("boxes", boxes, 3, 4, "(B, M, 4)")
    b = boxes[:, None, :, :]
    inter = elementwise_box_intersection(windows[:, :, None, :], b)
    area = jnp.maximum(b[..., 2] - b[..., 0], 0.0) * jnp.maximum(b[..., 3] - b[..., 1], 0.0)
    return jnp.where(area > 0, inter / jnp.where(area > 0, area, 1.0), 0.0)


def _relative_size(windows: jax.Array, boxes: jax.Array) -> jax.Array:
    """``(B, R, M)``: the box's longer side relative to the window (per axis, the max)."""
    ww = (windows[..., 2] - windows[..., 0])[:, :, None]
    wh = (windows[..., 3] - windows[..., 1])[:, :, None]
    bw = (boxes[..., 2] - boxes[..., 0])[:, None, :]
    bh = (boxes[..., 3] - boxes[..., 1])[:, None, :]
    return jnp.maximum(bw / jnp.maximum(ww, 1e-6), bh / jnp.maximum(wh, 1e-6))


def sample_windows(
    key: jax.Array,
    boxes: jax.Array,
    valid: jax.Array,
    image_hw: Sequence[int],
    window: Sequence[int],
    *,
    num_object: int,
    num_random: int,
    relative_size: Sequence[float] = (0.25, 0.75),
    random_scale: Sequence[float] = (0.75, 2.0),
    jitter: float = 0.2,
) -> jax.Array:
    """Sample ``R = num_object + num_random`` windows per scene (see the module docstring).

    Args:
      key: PRNG key.
      boxes: ``(B, M, 4)`` ground-truth xyxy pixels; valid: ``(B, M)`` bool.
      image_hw: ``(H, W)`` of the scenes.
      window: ``(h, w)`` of the network input; every window has this aspect ratio.
      num_object: windows around an object per scene (random windows where a scene has none).
      num_random: windows of random size and position per scene.
      relative_size: ``(lo, hi)``: an object window makes the object's longer side (relative to
        the window's side on that axis) log-uniform in this range (less when the window would
        not fit in the scene).
      random_scale: ``(lo, hi)``: random windows are ``f * (h, w)`` with ``f`` log-uniform.
      jitter: object windows may cut up to this fraction of the object's width/height.

    Returns:
      ``(B, R, 4)`` float32 xyxy windows inside the scene; the first ``num_object`` of each
      scene are the object windows.
    """
    _check("boxes", boxes, 3, 4, "(B, M, 4)")
    if valid.shape != boxes.shape[:2]:
        raise ValueError(f"valid must be {boxes.shape[:2]}; got shape {valid.shape}")
    lo, hi = (float(v) for v in relative_size)
    if not 0 < lo <= hi:
        raise ValueError(f"relative_size must be 0 < lo <= hi; got {relative_size}")
    s_lo, s_hi = (float(v) for v in random_scale)
    if not 0 < s_lo <= s_hi:
        raise ValueError(f"random_scale must be 0 < lo <= hi; got {random_scale}")
    b = boxes.shape[0]
    img_h, img_w = (float(s) for s in image_hw)
    win_h, win_w = (float(s) for s in window)
    max_f = min(img_h / win_h, img_w / win_w)  # largest window that fits
    k_obj, k_rel, k_pos, k_rs, k_rp = jax.random.split(key, 5)
    size = (b, num_object)

    # Object windows: pick a valid object, a relative size, then a position holding it.
    logits = jnp.where(valid.astype(bool), 0.0, -jnp.inf)
    has_obj = jnp.any(valid.astype(bool), axis=1)
    pick = jax.random.categorical(k_obj, jnp.where(has_obj[:, None], logits, 0.0), shape=size[::-1])
    obj = jnp.take_along_axis(boxes, pick.T[:, :, None], axis=1)  # (B, n, 4)
    ow, oh = obj[..., 2] - obj[..., 0], obj[..., 3] - obj[..., 1]
    rel = _log_uniform(k_rel, size, lo, hi)
    f_obj = jnp.clip(jnp.maximum(ow / win_w, oh / win_h) / rel, 1e-3, max_f)
    u = jax.random.uniform(k_pos, (*size, 2))

    def place(start, end, extent, span, limit, t):
        # Window [x0, x0 + span] holds [start + cut, end - cut] (cut = jitter * extent).
        first = jnp.maximum(end - jitter * extent - span, 0.0)
        last = jnp.minimum(start + jitter * extent, limit - span)
        return jnp.clip(first + t * jnp.maximum(last - first, 0.0), 0.0, limit - span)

    x0 = place(obj[..., 0], obj[..., 2], ow, f_obj * win_w, img_w, u[..., 0])
    y0 = place(obj[..., 1], obj[..., 3], oh, f_obj * win_h, img_h, u[..., 1])
    obj_windows = jnp.stack([x0, y0, x0 + f_obj * win_w, y0 + f_obj * win_h], axis=-1)

    # Random windows (also where a scene has no object to centre on).
    n_rand = num_object + num_random
    f_rand = jnp.minimum(_log_uniform(k_rs, (b, n_rand), s_lo, s_hi), max_f)
    t = jax.random.uniform(k_rp, (b, n_rand, 2))
    rx = t[..., 0] * (img_w - f_rand * win_w)
    ry = t[..., 1] * (img_h - f_rand * win_h)
    rand_windows = jnp.stack([rx, ry, rx + f_rand * win_w, ry + f_rand * win_h], axis=-1)
    obj_windows = jnp.where(has_obj[:, None, None], obj_windows, rand_windows[:, :num_object])
    return jnp.concatenate([obj_windows, rand_windows[:, num_object:]], axis=1)


def label_windows(
    windows: jax.Array,
    boxes: jax.Array,
    valid: jax.Array,
    *,
    positive_coverage: float = 0.8,
    background_coverage: float = 0.3,
    relative_size: Sequence[float] = (0.25, 0.75),
) -> tuple[jax.Array, jax.Array]:
    """Label windows by what they cover (see the module docstring).

    Among the objects a window is positive for, the largest box is its target.

    Args:
      windows: ``(B, R, 4)`` xyxy; boxes: ``(B, M, 4)`` xyxy; valid: ``(B, M)`` bool.
      positive_coverage: minimal fraction of the object's box inside a positive window.
      background_coverage: a background window holds less than this of every object's box.
      relative_size: ``(lo, hi)`` object size relative to a positive window.

    Returns:
      ``label (B, R)`` int32 :class:`WindowLabel` values and ``target (B, R)`` int32 index into
      ``M`` of the positive object (0 elsewhere).
    """
    _check("windows", windows, 3, 4, "(B, R, 4)")
    _check("boxes", boxes, 3, 4, "(B, M, 4)")
    if valid.shape != boxes.shape[:2]:
        raise ValueError(f"valid must be {boxes.shape[:2]}; got shape {valid.shape}")
    if not 0 <= background_coverage <= positive_coverage <= 1:
        raise ValueError(
            "need 0 <= background_coverage <= positive_coverage <= 1; got "
            f"{background_coverage}, {positive_coverage}"
        )
    lo, hi = (float(v) for v in relative_size)
    valid = valid.astype(bool)[:, None, :]
    cov = jnp.where(valid, box_coverage(windows, boxes), 0.0)  # (B, R, M)
    rel = _relative_size(windows, boxes)
    ok = valid & (cov >= positive_coverage) & (rel >= lo) & (rel <= hi)
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    target = jnp.argmax(jnp.where(ok, area[:, None, :], -jnp.inf), axis=-1).astype(jnp.int32)
    positive = jnp.any(ok, axis=-1)
    background = jnp.all(cov < background_coverage, axis=-1)
    label = jnp.where(
        positive,
        int(WindowLabel.POSITIVE),
        jnp.where(background, int(WindowLabel.BACKGROUND), int(WindowLabel.IGNORE)),
    ).astype(jnp.int32)
    return label, jnp.where(positive, target, 0)


def crop_windows(images: jax.Array, windows: jax.Array, out_hw: Sequence[int]) -> jax.Array:
    """Crop every window and resize it to ``out_hw`` (bilinear, antialiased when shrinking).

    Args:
      images: ``(B, H, W, C)``.
      windows: ``(B, R, 4)`` xyxy pixels (continuous; pixel ``i`` spans ``[i, i + 1)``).
      out_hw: ``(h, w)``.

    Returns:
      ``(B, R, h, w, C)`` float32; output pixel ``(y, x)`` samples the scene at
      ``(y1 + (y + 0.5) * dh / h, x1 + (x + 0.5) * dw / w)`` (pixel centres), as
      :func:`jax.image.resize` does for a whole image.
    """
    _check("images", images, 4, None, "(B, H, W, C)")
    _check("windows", windows, 3, 4, "(B, R, 4)")
    if windows.shape[0] != images.shape[0]:
        raise ValueError(f"windows must be ({images.shape[0]}, R, 4); got shape {windows.shape}")
    h, w = (int(s) for s in out_hw)
    c = images.shape[-1]
    scale = jnp.stack(
        [h / (windows[..., 3] - windows[..., 1]), w / (windows[..., 2] - windows[..., 0])], -1
    )  # (B, R, 2)
    translation = -windows[..., jnp.array([1, 0])] * scale

    def one(image, s, t):
        return jax.image.scale_and_translate(
            image.astype(jnp.float32), (h, w, c), (0, 1), s, t, method="linear", antialias=True
        )

    per_image = jax.vmap(one, in_axes=(None, 0, 0))
    return jax.vmap(per_image)(images, scale, translation)


def window_targets(
    windows: jax.Array, boxes: jax.Array, target: jax.Array, out_hw: Sequence[int]
) -> jax.Array:
    """The target object's box in the pixels of its resized ``out_hw`` window.

    Args:
      windows: ``(B, R, 4)`` xyxy scene pixels; boxes: ``(B, M, 4)``; target: ``(B, R)`` index.
      out_hw: ``(h, w)`` of the resized windows.

    Returns:
      ``(B, R, 4)`` xyxy in window pixels (may extend past the window when it cuts the object).
    """
    _check("windows", windows, 3, 4, "(B, R, 4)")
    box = jnp.take_along_axis(boxes, target[..., None].astype(jnp.int32), axis=1)  # (B, R, 4)
    h, w = (float(s) for s in out_hw)
    sx = w / (windows[..., 2] - windows[..., 0])
    sy = h / (windows[..., 3] - windows[..., 1])
    scale = jnp.stack([sx, sy, sx, sy], -1)
    origin = jnp.concatenate([windows[..., :2], windows[..., :2]], -1)
    return (box - origin) * scale


@dataclasses.dataclass(frozen=True)
class WindowSampling:
    """How a localization task samples training windows from scenes (module docstring).

    Attributes:
      num_object, num_random, relative_size, random_scale, jitter: see :func:`sample_windows`.
      positive_coverage, background_coverage: see :func:`label_windows` (``relative_size`` is
        shared by the sampling and the labelling).
    """

    num_object: int = 2
    num_random: int = 2
    relative_size: tuple[float, float] = (0.25, 0.75)
    random_scale: tuple[float, float] = (0.75, 2.0)
    jitter: float = 0.2
    positive_coverage: float = 0.8
    background_coverage: float = 0.3

    def __post_init__(self):
        if self.num_object < 0 or self.num_random < 0 or self.num_object + self.num_random < 1:
            raise ValueError(
                f"need num_object, num_random >= 0 and at least one window; got "
                f"{self.num_object}, {self.num_random}"
            )
        if not 0 <= self.jitter < 0.5:
            raise ValueError(f"jitter must be in [0, 0.5); got {self.jitter}")

    @property
    def windows_per_image(self) -> int:
        """``R``."""
        return self.num_object + self.num_random


def training_windows(
    key: jax.Array,
    images: jax.Array,
    boxes: jax.Array,
    classes: jax.Array,
    valid: jax.Array,
    window: Sequence[int],
    sampling: WindowSampling,
    *,
    num_classes: int,
    background: bool,
) -> dict[str, jax.Array]:
    """Sample, label and crop the training windows of a batch of scenes.

    Args:
      key: PRNG key.
      images: ``(B, H, W, C)`` scenes; boxes: ``(B, M, 4)`` xyxy pixels; classes: ``(B, M)``
        1-based (0 = padding); valid: ``(B, M)`` bool.
      window: ``(h, w)`` network input.
      sampling: the sampling settings.
      num_classes: ``K``.
      background: whether the classifier has a background class (index ``K``); without one,
        background windows get no weight.

    Returns:
      ``(B, R, ...)`` arrays: ``windows (B, R, 4)`` scene pixels, ``images (B, R, h, w, C)``,
      ``label`` (:class:`WindowLabel`), ``class_target`` int32 in ``0..K`` (``K`` =
      background), ``class_weight`` float32, ``box_target (B, R, 4)`` xyxy window pixels,
      ``box_weight`` float32 (1 on positives).
    """
    _check("images", images, 4, None, "(B, H, W, C)")
    usable = valid.astype(bool) & (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
    windows = sample_windows(
        key,
        boxes,
        usable,
        images.shape[1:3],
        window,
        num_object=sampling.num_object,
        num_random=sampling.num_random,
        relative_size=sampling.relative_size,
        random_scale=sampling.random_scale,
        jitter=sampling.jitter,
    )
    label, target = label_windows(
        windows,
        boxes,
        usable,
        positive_coverage=sampling.positive_coverage,
        background_coverage=sampling.background_coverage,
        relative_size=sampling.relative_size,
    )
    positive = label == int(WindowLabel.POSITIVE)
    negative = label == int(WindowLabel.BACKGROUND)
    obj_class = jnp.take_along_axis(classes.astype(jnp.int32), target, axis=1) - 1
    k = int(num_classes)
    class_target = jnp.where(positive, jnp.clip(obj_class, 0, k - 1), k if background else 0)
    class_weight = positive | (negative & background)
    return {
        "windows": windows,
        "images": crop_windows(images, windows, window),
        "label": label,
        "class_target": class_target.astype(jnp.int32),
        "class_weight": class_weight.astype(jnp.float32),
        "box_target": window_targets(windows, boxes, target, window),
        "box_weight": positive.astype(jnp.float32),
    }
