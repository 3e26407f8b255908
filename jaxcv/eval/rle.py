"""COCO mask encodings without pycocotools: run-length encoding (RLE) and polygons.

A COCO RLE is ``{"size": [H, W], "counts": ...}`` over the mask in column-major (Fortran) order,
runs alternating 0s and 1s starting with 0s. ``counts`` is either a list of ints (uncompressed,
used for crowd annotations) or the compressed string of the COCO API (``rleToString``: each run,
minus the run two before it from the fourth on, in 5-bit groups with a continuation bit, offset
by ASCII 48). Polygons are rasterised as ``rleFrPoly`` does (5x upsampled boundary, pixel centre
test), so masks equal pycocotools' ``annToMask``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def _runs(mask: np.ndarray) -> np.ndarray:
    flat = np.asarray(mask, bool).ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.r_[0, change, flat.size]
    runs = np.diff(bounds)
    if flat.size and flat[0]:
        runs = np.r_[0, runs]
    return runs.astype(np.int64)


def _to_string(counts: np.ndarray) -> str:
    out = []
    for i, c in enumerate(counts.tolist()):
        x = c - counts[i - 2] if i > 2 else c
        x = int(x)
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = (x != -1) if (ch & 0x10) else (x != 0)
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def _from_string(s: str) -> np.ndarray:
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return np.asarray(counts, np.int64)


def encode(mask: np.ndarray) -> dict:
    """``(H, W)`` bool mask -> compressed COCO RLE ``{"size": [H, W], "counts": str}``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got {mask.shape}")
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": _to_string(_runs(mask))}


def counts(rle: Mapping) -> np.ndarray:
    """The run lengths ``(m,)`` of a compressed or uncompressed RLE."""
    c = rle["counts"]
    if isinstance(c, bytes):
        c = c.decode("ascii")
    return _from_string(c) if isinstance(c, str) else np.asarray(c, np.int64)


def decode(rle: Mapping) -> np.ndarray:
    """COCO RLE (compressed or uncompressed) -> ``(H, W)`` bool mask."""
    h, w = (int(v) for v in rle["size"])
    runs = counts(rle)
    if runs.sum() != h * w:
        raise ValueError(f"RLE counts sum to {runs.sum()}, expected H * W = {h * w}")
    values = np.arange(len(runs)) % 2 == 1
    return np.repeat(values, runs).reshape((h, w), order="F")


def area(rle: Mapping) -> int:
    """Number of foreground pixels of a COCO RLE."""
    return int(counts(rle)[1::2].sum())


def _polygon_rle_counts(xy: Sequence[float], h: int, w: int) -> list[int]:
    """Port of the COCO API's ``rleFrPoly``: a polygon ``[x0, y0, x1, y1, ...]`` -> runs."""
    scale = 5.0
    k = len(xy) // 2
    x = [int(scale * xy[2 * j] + 0.5) for j in range(k)]
    y = [int(scale * xy[2 * j + 1] + 0.5) for j in range(k)]
    x.append(x[0])
    y.append(y[0])
    u: list[int] = []
    v: list[int] = []
    for j in range(k):
        xs, xe, ys, ye = x[j], x[j + 1], y[j], y[j + 1]
        dx, dy = abs(xe - xs), abs(ys - ye)
        flip = (dx >= dy and xs > xe) or (dx < dy and ys > ye)
        if flip:
            xs, xe, ys, ye = xe, xs, ye, ys
        if dx >= dy:
            s = (ye - ys) / dx if dx else 0.0
            for d in range(dx + 1):
                t = dx - d if flip else d
                u.append(t + xs)
                v.append(int(ys + s * t + 0.5))
        else:
            s = (xe - xs) / dy
            for d in range(dy + 1):
                t = dy - d if flip else d
                v.append(t + ys)
                u.append(int(xs + s * t + 0.5))
    bx: list[int] = []
    by: list[int] = []
    for j in range(1, len(u)):
        if u[j] == u[j - 1]:
            continue
        xd = float(u[j] if u[j] < u[j - 1] else u[j] - 1)
        xd = (xd + 0.5) / scale - 0.5
        if math.floor(xd) != xd or xd < 0 or xd > w - 1:
            continue
        yd = float(v[j] if v[j] < v[j - 1] else v[j - 1])
        yd = (yd + 0.5) / scale - 0.5
        yd = 0.0 if yd < 0 else (float(h) if yd > h else yd)
        bx.append(int(xd))
        by.append(math.ceil(yd))
    a = sorted([bx[j] * h + by[j] for j in range(len(bx))] + [h * w])
    diffs, prev = [], 0
    for t in a:
        diffs.append(t - prev)
        prev = t
    out = [diffs[0]]
    j = 1
    while j < len(diffs):
        if diffs[j] > 0:
            out.append(diffs[j])
            j += 1
        else:
            j += 1
            if j < len(diffs):
                out[-1] += diffs[j]
                j += 1
    return out


def from_polygons(polygons: Sequence[Sequence[float]], h: int, w: int) -> np.ndarray:
    """COCO polygons (a list of flat ``[x0, y0, x1, y1, ...]``) -> ``(h, w)`` bool union mask."""
    mask = np.zeros((h, w), bool)
    for poly in polygons:
        if len(poly) < 6 or len(poly) % 2:
            raise ValueError(f"a polygon needs >= 3 (x, y) pairs, got {len(poly)} numbers")
        mask |= decode({"size": [h, w], "counts": _polygon_rle_counts(poly, h, w)})
    return mask


def segmentation_to_mask(segmentation, h: int, w: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, uncompressed or compressed RLE) -> ``(h, w)`` bool."""
    if isinstance(segmentation, Mapping):
        mask = decode(segmentation)
        if mask.shape != (h, w):
            raise ValueError(f"RLE size {mask.shape} differs from the image size {(h, w)}")
        return mask
    return from_polygons(segmentation, h, w)
