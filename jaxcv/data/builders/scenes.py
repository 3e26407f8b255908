"""Procedural scene rendering for the built-in ``shapes`` dataset (host-side NumPy, no tf).

A scene is a textured, noisy RGB background with solid-coloured shapes drawn in order, later
shapes over earlier ones. Each object keeps the mask of the pixels that stay *visible*, and its
box is the tight box of that visible mask in the pixel-edge convention (a mask covering columns
10..19 has ``x1 = 10`` and ``x2 = 20``). An object left with less than ``min_visible_fraction``
of its own area visible (or fewer than ``min_visible_pixels`` pixels) is removed from the scene
and the scene is redrawn without it, until every remaining object passes; the top-most object is
always fully visible, so a scene never ends empty.

Colours are drawn independently of the class, so only the outline tells the classes apart.
Every scene is a pure function of its ``numpy.random.Generator``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
"""Object class names; class id ``k`` (0-based) is ``CLASS_NAMES[k]``."""


@dataclasses.dataclass(frozen=True)
class SceneSpec:
    """How scenes are sampled.

    Attributes:
      image_size: side ``S`` of the square ``(S, S, 3)`` image.
      min_objects, max_objects: the number of objects drawn before occlusion culling is uniform
        in ``[min_objects, max_objects]``.
      min_size, max_size: object size (circle radius; other shapes comparable) as a fraction
        of ``S``, uniform in ``[min_size, max_size]``.
      min_visible_fraction: objects with less of their own area visible are dropped.
      min_visible_pixels: objects with fewer visible pixels are dropped.
      min_color_distance: minimal RGB (0..255) distance between an object's colour and the
        background's base colour and the colours of the objects placed before it.
    """

    image_size: int = 128
    min_objects: int = 1
    max_objects: int = 5
    min_size: float = 0.06
    max_size: float = 0.2
    min_visible_fraction: float = 0.3
    min_visible_pixels: int = 16
    min_color_distance: float = 80.0


@dataclasses.dataclass(frozen=True)
class Scene:
    """One rendered scene with ``N >= 1`` visible objects.

    Attributes:
      image: ``(S, S, 3)`` uint8.
      boxes: ``(N, 4)`` float32 xyxy pixels, tight around ``masks``.
      labels: ``(N,)`` int64 class ids in ``0..K-1`` (index into :data:`CLASS_NAMES`).
      masks: ``(N, S, S)`` uint8 in {0, 1}, visible pixels only (pairwise disjoint).
      segmentation: ``(S, S)`` uint8, 0 = background, ``labels[i] + 1`` where ``masks[i]``.
      visible_fraction: ``(N,)`` float32, visible pixels over the shape's full pixels.
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    segmentation: np.ndarray
    visible_fraction: np.ndarray


def tight_box(mask: np.ndarray) -> np.ndarray:
    """Tight xyxy box of a binary mask, pixel-edge convention.

    Args:
      mask: ``(H, W)`` array, non-zero inside; must not be empty.

    Returns:
      ``(4,)`` float32 ``[x1, y1, x2, y2]`` with ``x2 = last column + 1``.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {mask.shape}")
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    if cols.size == 0:
        raise ValueError("tight_box of an empty mask")
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


def _shape_mask(kind: int, size: float, cx: float, cy: float, angle: float, s: int) -> np.ndarray:
    """Full (un-occluded) ``(S, S)`` bool mask of one shape, sampled at pixel centres."""
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
    dx, dy = xx - cx, yy - cy
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy  # coordinates in the shape's frame
    name = CLASS_NAMES[kind]
    if name == "circle":
        return dx * dx + dy * dy <= size * size
    if name == "square":
        half = 0.85 * size
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if name == "triangle":
        r = 1.2 * size  # circumradius of an equilateral triangle; inradius r / 2
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            theta = angle + np.pi / 2 + 2 * np.pi * k / 3
            inside &= np.cos(theta) * dx + np.sin(theta) * dy <= r / 2
        return inside
    if name == "cross":
        arm, width = size, 0.32 * size
        return ((np.abs(u) <= arm) & (np.abs(v) <= width)) | (
            (np.abs(u) <= width) & (np.abs(v) <= arm)
        )
    raise ValueError(f"unknown shape kind {kind}")


def _background(rng: np.random.Generator, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Textured background ``(S, S, 3)`` float32 in 0..255 and its base colour ``(3,)``."""
    base = rng.uniform(40.0, 215.0, size=3).astype(np.float32)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    direction = rng.uniform(0.0, 2 * np.pi)
    ramp = np.cos(direction) * (xx - 0.5) + np.sin(direction) * (yy - 0.5)
    image = base + ramp[..., None] * rng.uniform(-60.0, 60.0, size=3).astype(np.float32)
    for _ in range(2):  # two sinusoidal textures of random frequency and orientation
        period = rng.uniform(6.0, 40.0) / s
        theta = rng.uniform(0.0, np.pi)
        phase = rng.uniform(0.0, 2 * np.pi)
        wave = np.sin((np.cos(theta) * xx + np.sin(theta) * yy) * 2 * np.pi / period + phase)
        image = image + wave[..., None] * rng.uniform(-18.0, 18.0, size=3).astype(np.float32)
    return image, base


def _sample_color(
    rng: np.random.Generator, avoid: list[np.ndarray], min_distance: float
) -> np.ndarray:
    """A colour at least ``min_distance`` from each colour in ``avoid`` (best of 50 tries)."""
    best, best_distance = None, -1.0
    for _ in range(50):
        color = rng.uniform(0.0, 255.0, size=3).astype(np.float32)
        distance = min((float(np.linalg.norm(color - a)) for a in avoid), default=np.inf)
        if distance >= min_distance:
            return color
        if distance > best_distance:
            best, best_distance = color, distance
    return best


def _visible(full_masks: list[np.ndarray]) -> list[np.ndarray]:
    """Visible part of each mask when later masks are drawn over earlier ones."""
    covered = np.zeros_like(full_masks[0])
    visible = [None] * len(full_masks)
    for i in range(len(full_masks) - 1, -1, -1):
        visible[i] = full_masks[i] & ~covered
        covered |= full_masks[i]
    return visible


def render_scene(rng: np.random.Generator, spec: SceneSpec) -> Scene:
    """Samples and renders one scene.

    Args:
      rng: the only source of randomness (seed it per example for reproducibility).
      spec: sampling parameters.

    Returns:
      A :class:`Scene` with ``N >= 1`` objects, ``N <= spec.max_objects``.
    """
    s = spec.image_size
    image, base = _background(rng, s)
    count = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    kinds, full_masks, colors = [], [], []
    for _ in range(count):
        kind = int(rng.integers(len(CLASS_NAMES)))
        size = rng.uniform(spec.min_size, spec.max_size) * s
        margin = 1.25 * size
        cx, cy = rng.uniform(margin, s - margin, size=2)
        angle = rng.uniform(0.0, 2 * np.pi)
        kinds.append(kind)
        full_masks.append(_shape_mask(kind, size, cx, cy, angle, s))
        colors.append(_sample_color(rng, [base, *colors], spec.min_color_distance))

    keep = list(range(count))
    while True:  # drop (nearly) hidden objects until every remaining one is visible enough
        visible = _visible([full_masks[i] for i in keep])
        ok = [
            v.sum() >= max(spec.min_visible_pixels, spec.min_visible_fraction * full_masks[i].sum())
            for i, v in zip(keep, visible, strict=True)
        ]
        if all(ok):
            break
        keep = [i for i, good in zip(keep, ok, strict=True) if good]

    segmentation = np.zeros((s, s), np.uint8)
    for i, v in zip(keep, visible, strict=True):
        shade = rng.uniform(-20.0, 20.0)  # a little shading inside the object
        image[v] = colors[i] + shade
        segmentation[v] = kinds[i] + 1
    image = image + rng.normal(0.0, rng.uniform(3.0, 12.0), size=image.shape)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)

    masks = np.stack(visible).astype(np.uint8)
    boxes = np.stack([tight_box(m) for m in masks]).astype(np.float32)
    labels = np.array([kinds[i] for i in keep], np.int64)
    fraction = np.array(
        [v.sum() / full_masks[i].sum() for i, v in zip(keep, visible, strict=True)], np.float32
    )
    return Scene(
        image=image,
        boxes=boxes,
        labels=labels,
        masks=masks,
        segmentation=segmentation,
        visible_fraction=fraction,
    )
