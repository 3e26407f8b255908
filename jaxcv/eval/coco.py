"""COCO detection metrics (box and mask AP/AR), equal to pycocotools' ``COCOeval``.

Host-side NumPy; no pycocotools at run time. :func:`evaluate` reproduces ``COCOeval.evaluate``,
``accumulate`` and ``summarize`` for ``iouType`` ``"bbox"`` and ``"segm"``:

* per image and category, detections are ranked by a stable (merge) sort of ``-score`` and cut
  to the largest ``max_dets``; ground truth is matched greedily in that order at each IoU
  threshold, non-ignored ground truth before ignored (crowd or outside the area range); among
  equal IoUs the later ground truth wins, exactly as in ``COCOeval.evaluateImg``;
* a crowd region matches a detection by ``intersection / detection area`` and may be matched
  any number of times; matches to ignored ground truth, and unmatched detections whose area is
  outside the area range, are ignored (neither true nor false positives);
* precision is made monotone (envelope) and read at 101 recall thresholds by
  ``searchsorted(side="left")``; settings without any non-ignored ground truth stay ``-1`` and
  the summary averages only values ``> -1`` (``-1`` when nothing is defined).

Areas (what the small/medium/large ranges are applied to) are defined as pycocotools sees them
when fed the JSON written by :mod:`jaxcv.eval.formats`:

* ground truth: the ``area`` entry if given, else the mask pixel count if ``masks`` are given
  (COCO annotations store the segment area), else the box area ``(x2 - x1) * (y2 - y1)``;
* detections: the box area for ``iou_type="bbox"`` (as ``loadRes`` computes ``w * h``); for
  ``"segm"`` it depends on the results' form, ``detection_area``: ``"mask"`` (the default) is
  the mask pixel count, as ``loadRes`` computes for results without a ``bbox`` (torchvision's
  ``prepare_for_coco_segmentation``); ``"box"`` is the box area, as ``loadRes`` computes for
  results that carry a ``bbox`` beside the ``segmentation`` (detectron2's
  ``instances_to_coco_json``): their ``APs``/``APm``/``APl`` and ``AR`` by size differ.

Boxes are ``xyxy`` pixels, converted to float64 ``xywh`` (``w = x2 - x1``) and intersected with
the same floating-point operations as pycocotools' ``bbIou``. Mask IoU is computed from bit-packed
binary masks (AND + popcount); the integer counts equal pycocotools' RLE counts.

Categories are the classes occurring in the ground truth or the detections; a category without
non-ignored ground truth is ``-1`` and left out, so the result equals pycocotools run with any
category list covering the ground-truth classes. Images are evaluated in list order (COCO image
ids ``1..N``), which decides the order of equal scores across images. Matching is vectorised:
(image, category) pairs are padded into power-of-two size buckets and processed one detection
rank at a time, over all pairs of a bucket and all (area range, IoU threshold) lanes at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from jaxcv.eval._inputs import Detections, GroundTruth, check_detections, check_ground_truth

IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = (1, 10, 100)
AREA_RANGES: Mapping[str, tuple[float, float]] = {
    "all": (0.0**2, 1e5**2),
    "small": (0.0**2, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e5**2),
}
_AREA_SUFFIX = {"small": "s", "medium": "m", "large": "l"}


@dataclass(frozen=True)
class CocoResult:
    """Everything ``COCOeval.accumulate`` produces, plus the summary.

    Attributes:
      stats: summary metrics (see :func:`evaluate`).
      precision: ``(T, R, K, A, M)`` interpolated precision, ``-1`` where undefined.
      recall: ``(T, K, A, M)`` final recall, ``-1`` where undefined.
      class_ids: ``(K,)`` the classes in ``precision``'s K axis (sorted).
      iou_thresholds: ``(T,)``; recall_thresholds: ``(R,)``.
      area_names: the A area-range names; max_dets: the M (sorted) detection limits.
    """

    stats: dict[str, float]
    precision: np.ndarray
    recall: np.ndarray
    class_ids: np.ndarray
    iou_thresholds: np.ndarray
    recall_thresholds: np.ndarray
    area_names: tuple[str, ...]
    max_dets: tuple[int, ...]

    def per_class_ap(self, iou_threshold: float | None = None) -> dict[int, float]:
        """AP per class over all areas at the largest ``max_dets`` (``-1`` if undefined).

        ``iou_threshold`` None averages over all thresholds (COCO AP), else picks one (0.5 for
        AP50).
        """
        s = self.precision[..., self.area_names.index("all"), len(self.max_dets) - 1]
        if iou_threshold is not None:
            s = s[np.isclose(self.iou_thresholds, iou_threshold)]
        out = {}
        for k, c in enumerate(self.class_ids):
            v = s[:, :, k]
            out[int(c)] = float(np.mean(v[v > -1])) if np.any(v > -1) else -1.0
        return out


def evaluate(
    ground_truth: Sequence[Mapping[str, np.ndarray]],
    detections: Sequence[Mapping[str, np.ndarray]],
    iou_type: str = "bbox",
    max_dets: Sequence[int] = MAX_DETS,
    area_ranges: Mapping[str, tuple[float, float]] = AREA_RANGES,
    detection_area: str = "mask",
) -> dict[str, float]:
    """COCO AP/AR of ``detections`` against ``ground_truth``, equal to pycocotools.

    Args:
      ground_truth: one dict per image: ``boxes (G, 4)`` xyxy pixels, ``classes (G,)`` int,
        optional ``iscrowd (G,)`` bool, ``area (G,)``, ``masks (G, H, W)`` bool (required for
        ``"segm"``), ``valid (G,)`` bool (padding rows dropped).
      detections: one dict per image, same order: ``boxes (D, 4)`` (required for ``"bbox"``),
        ``scores (D,)``, ``classes (D,)``, ``masks (D, H, W)`` bool (required for ``"segm"``,
        same H, W as the image's ground truth), optional ``valid (D,)``.
      iou_type: ``"bbox"`` or ``"segm"``.
      max_dets: detections kept per image and class (sorted, like ``Params.maxDets``).
      area_ranges: ordered name -> ``(lo, hi)`` (inclusive) area ranges; must contain
        ``"all"``.
      detection_area: for ``"segm"``, the detections' area of the size ranges: ``"mask"``
        (results without ``bbox``) or ``"box"`` (results with one; ``boxes`` required); see
        the module docstring.

    Returns:
      ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
      "ARl"}`` as floats, ``COCOeval.stats`` in that order for the defaults (``-1`` when
      undefined). AP and area metrics use the largest ``max_dets``; ``AR{m}`` exists for each
      ``m``; ranges not named small/medium/large are reported as ``AP_name``/``AR_name``.
    """
    return evaluate_detailed(
        ground_truth, detections, iou_type, max_dets, area_ranges, detection_area
    ).stats


def evaluate_detailed(
    ground_truth: Sequence[Mapping[str, np.ndarray]],
    detections: Sequence[Mapping[str, np.ndarray]],
    iou_type: str = "bbox",
    max_dets: Sequence[int] = MAX_DETS,
    area_ranges: Mapping[str, tuple[float, float]] = AREA_RANGES,
    detection_area: str = "mask",
) -> CocoResult:
    """Like :func:`evaluate`, returning the precision/recall arrays too (:class:`CocoResult`)."""
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    if detection_area not in ("mask", "box"):
        raise ValueError(f"detection_area must be 'mask' or 'box', got {detection_area!r}")
    by_box = iou_type == "bbox" or detection_area == "box"
    if by_box and any("boxes" not in d for d in detections):
        raise ValueError(
            f"detection_area={detection_area!r} needs every detection dict's 'boxes' (D, 4)"
        )
    if len(ground_truth) != len(detections):
        raise ValueError(
            f"ground_truth has {len(ground_truth)} images but detections has {len(detections)}"
        )
    if "all" not in area_ranges:
        raise ValueError(f"area_ranges must contain 'all', got {list(area_ranges)}")
    max_dets = tuple(sorted(int(m) for m in max_dets))
    if not max_dets or max_dets[0] < 1:
        raise ValueError(f"max_dets must be positive integers, got {max_dets}")
    segm = iou_type == "segm"
    gts = [check_ground_truth(g, i, need_masks=segm) for i, g in enumerate(ground_truth)]
    dts = [check_detections(d, i, need_masks=segm) for i, d in enumerate(detections)]
    ranges = np.asarray([area_ranges[n] for n in area_ranges], np.float64).reshape(-1, 2)
    thr = IOU_THRESHOLDS
    flat = _evaluate_images(gts, dts, segm, not by_box, max_dets[-1], ranges, thr)
    precision, recall, class_ids = _accumulate(flat, max_dets, thr, RECALL_THRESHOLDS)
    names = tuple(area_ranges)
    stats = _summarize(precision, recall, thr, names, max_dets)
    return CocoResult(stats, precision, recall, class_ids, thr, RECALL_THRESHOLDS, names, max_dets)


# ----------------------------------------------------------------------------- IoU


def box_iou_coco(dt: np.ndarray, gt: np.ndarray, iscrowd: np.ndarray) -> np.ndarray:
    """pycocotools ``bbIou`` on xyxy boxes: ``(D, 4)``, ``(G, 4)``, ``(G,)`` -> ``(D, G)`` f64.

    Boxes go to float64 ``xywh`` first; crowd columns use ``intersection / detection area``.
    """
    d = np.asarray(dt, np.float64)
    g = np.asarray(gt, np.float64)
    dx, dy, dw, dh = d[:, 0], d[:, 1], d[:, 2] - d[:, 0], d[:, 3] - d[:, 1]
    gx, gy, gw, gh = g[:, 0], g[:, 1], g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
    w = np.minimum((dw + dx)[:, None], (gw + gx)[None]) - np.maximum(dx[:, None], gx[None])
    h = np.minimum((dh + dy)[:, None], (gh + gy)[None]) - np.maximum(dy[:, None], gy[None])
    inter = w * h
    da = (dw * dh)[:, None]
    union = np.where(np.asarray(iscrowd, bool)[None], da, da + (gw * gh)[None] - inter)
    ok = (w > 0) & (h > 0)
    return np.divide(inter, union, out=np.zeros_like(inter), where=ok)


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` bool -> ``(N, ceil(H * W / 64))`` uint64 rows of packed bits."""
    m = np.asarray(masks, bool)
    if m.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got {m.shape}")
    bits = np.packbits(m.reshape(m.shape[0], m.shape[1] * m.shape[2]), axis=1)
    bits = np.pad(bits, ((0, 0), (0, (-bits.shape[1]) % 8)))
    return np.ascontiguousarray(bits).view(np.uint64)


_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], np.int64)


def _popcount_rows(x: np.ndarray) -> np.ndarray:
    """``(..., W)`` uint64 -> ``(...,)`` int64 number of set bits per row."""
    if hasattr(np, "bitwise_count"):  # NumPy >= 2.0
        return np.bitwise_count(x).sum(-1, dtype=np.int64)
    return _POPCOUNT8[x.view(np.uint8)].sum(-1)


def _mask_iou_pairs(pd, pg, iscrowd, dd, gg, chunk: int = 256) -> np.ndarray:
    """IoU of packed masks ``pd[dd[k]]`` and ``pg[gg[k]]`` for each pair k -> ``(K,)`` f64."""
    area_d = _popcount_rows(pd).astype(np.float64)
    area_g = _popcount_rows(pg).astype(np.float64)
    inter = np.empty(len(dd), np.float64)
    for s in range(0, len(dd), chunk):
        inter[s : s + chunk] = _popcount_rows(pd[dd[s : s + chunk]] & pg[gg[s : s + chunk]])
    ad = area_d[dd]
    union = np.where(np.asarray(iscrowd, bool)[gg], ad, ad + area_g[gg] - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=inter > 0)


def mask_iou_coco(dt: np.ndarray, gt: np.ndarray, iscrowd: np.ndarray) -> np.ndarray:
    """pycocotools ``rleIou`` on binary masks: ``(D, H, W)``, ``(G, H, W)``, ``(G,)`` -> ``(D, G)``.

    Exact integer pixel counts from bit-packed masks (AND + popcount, no BLAS); IoU is 0 without
    intersection; crowd columns use ``intersection / detection area``.
    """
    if np.ndim(dt) != 3 or np.shape(dt)[1:] != np.shape(gt)[1:] or np.ndim(gt) != 3:
        raise ValueError(
            f"masks must be (D, H, W) and (G, H, W), got {np.shape(dt)}, {np.shape(gt)}"
        )
    dd, gg = np.divmod(np.arange(len(dt) * len(gt)), max(len(gt), 1))
    iou = _mask_iou_pairs(pack_masks(dt), pack_masks(gt), iscrowd, dd, gg)
    return iou.reshape(len(dt), len(gt))


# ----------------------------------------------------------------------------- evaluateImg


@dataclass
class _Flat:
    """Per-detection and per-ground-truth results of matching, flat over the dataset."""

    det_class: np.ndarray  # (N,)
    det_image: np.ndarray  # (N,)
    det_rank: np.ndarray  # (N,) rank within (image, class), < max_det
    det_score: np.ndarray  # (N,)
    det_tp: np.ndarray  # (N, A, T) bool
    det_fp: np.ndarray  # (N, A, T) bool
    gt_class: np.ndarray  # (Ng,)
    gt_ignore: np.ndarray  # (Ng, A) bool


def _rank_within(keys: np.ndarray) -> np.ndarray:
    """Position of each element among the earlier elements with the same key."""
    order = np.argsort(keys, kind="mergesort")
    sorted_keys = keys[order]
    start = np.r_[0, np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1]
    lengths = np.diff(np.r_[start, len(keys)])
    pos = np.arange(len(keys)) - np.repeat(start, lengths)
    rank = np.empty(len(keys), np.int64)
    rank[order] = pos
    return rank


def _outside(area: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """``(N,)`` areas, ``(A, 2)`` ranges -> ``(N, A)`` bool, outside ``[lo, hi]``."""
    return (area[:, None] < ranges[None, :, 0]) | (area[:, None] > ranges[None, :, 1])


def _evaluate_images(
    gts: list[GroundTruth],
    dts: list[Detections],
    segm: bool,
    mask_areas: bool,
    max_det: int,
    ranges: np.ndarray,
    thr: np.ndarray,
) -> _Flat:
    """``COCOeval.evaluate`` for every image, category and area range at once.

    Per image: detections ranked by a stable sort of ``-score``, cut to ``max_det`` per class,
    IoU for same-class (detection, ground truth) pairs; then greedy matching of all pairs in
    batches (:func:`_match_buckets`) over the ``A * T`` (area range, IoU threshold) lanes.
    """
    num_a, num_t = len(ranges), len(thr)
    det_parts, gt_parts, iou_parts = [], [], []
    for i, (g, d) in enumerate(zip(gts, dts, strict=True)):
        order = np.argsort(-d.scores, kind="mergesort")
        rank = _rank_within(d.classes[order])
        order, rank = order[rank < max_det], rank[rank < max_det]
        cls_d = d.classes[order]
        grank = _rank_within(g.classes)
        area_d = d.mask_area[order] if mask_areas else d.box_area[order]
        det_parts.append((np.full(len(order), i), cls_d, rank, d.scores[order], area_d))
        gt_parts.append((np.full(len(g.classes), i), g.classes, grank, g.area, g.iscrowd))
        if len(order) and len(g.classes):
            dd, gg = np.nonzero(cls_d[:, None] == g.classes[None])  # same-class pairs only
            if segm:
                if d.masks.shape[1:] != g.masks.shape[1:]:
                    raise ValueError(
                        f"image {i}: detection masks {d.masks.shape} and ground-truth masks "
                        f"{g.masks.shape} differ in size"
                    )
                pd, pg = pack_masks(d.masks[order]), pack_masks(g.masks)
                iou = _mask_iou_pairs(pd, pg, g.iscrowd, dd, gg)
            else:
                iou = box_iou_coco(d.boxes[order], g.boxes, g.iscrowd)[dd, gg]
            iou_parts.append((np.full(len(dd), i), cls_d[dd], rank[dd], grank[gg], iou))

    def cat(parts, n):
        return [np.concatenate([p[j] for p in parts]) if parts else np.zeros(0) for j in range(n)]

    d_img, d_cls, d_rank, d_score, d_area = cat(det_parts, 5)
    g_img, g_cls, g_rank, g_area, g_crowd = cat(gt_parts, 5)
    d_img, d_cls, d_rank = (x.astype(np.int64) for x in (d_img, d_cls, d_rank))
    g_img, g_cls, g_rank = (x.astype(np.int64) for x in (g_img, g_cls, g_rank))
    g_crowd = g_crowd.astype(bool)
    g_ignore = g_crowd[:, None] | _outside(g_area.astype(np.float64), ranges)  # (Ng, A)
    d_out = _outside(d_area.astype(np.float64), ranges)  # (N, A)

    lanes = num_a * num_t
    matched = np.zeros((len(d_img), lanes), bool)
    from_ign = np.zeros((len(d_img), lanes), bool)
    if iou_parts:  # some (image, class) pair has both detections and ground truth
        all_cls = np.concatenate([d_cls, g_cls])
        c0 = int(all_cls.min())
        n_cls = int(all_cls.max()) - c0 + 1
        d_pair = d_img * n_cls + (d_cls - c0)
        g_pair = g_img * n_cls + (g_cls - c0)
        pairs, d_pid = np.unique(d_pair, return_inverse=True)
        g_pid = np.searchsorted(pairs, g_pair)
        g_in = (g_pid < len(pairs)) & (pairs[np.minimum(g_pid, len(pairs) - 1)] == g_pair)
        n_det = np.bincount(d_pid, minlength=len(pairs))
        n_gt = np.bincount(g_pid[g_in], minlength=len(pairs))
        i_img, i_cls, i_rank, i_grank, i_val = cat(iou_parts, 5)
        i_pid = np.searchsorted(pairs, i_img.astype(np.int64) * n_cls + (i_cls - c0))
        _match_buckets(
            pairs_dg=(n_det, n_gt),
            det=(d_pid, d_rank),
            gt=(g_pid[g_in], g_rank[g_in], g_ignore[g_in], g_crowd[g_in]),
            iou=(i_pid, i_rank.astype(np.int64), i_grank.astype(np.int64), i_val),
            thr=np.minimum(thr, 1 - 1e-10),
            out=(matched, from_ign),
        )
    matched = matched.reshape(-1, num_a, num_t)
    ignore = np.where(matched, from_ign.reshape(-1, num_a, num_t), d_out[:, :, None])
    return _Flat(
        det_class=d_cls,
        det_image=d_img,
        det_rank=d_rank,
        det_score=d_score.astype(np.float64),
        det_tp=matched & ~ignore,
        det_fp=~matched & ~ignore,
        gt_class=g_cls,
        gt_ignore=g_ignore,
    )


def _bucket(n: np.ndarray) -> np.ndarray:
    """Power-of-two size class of each positive count."""
    return np.ceil(np.log2(np.maximum(n, 1))).astype(np.int64)


def _match_buckets(pairs_dg, det, gt, iou, thr, out) -> None:
    """Greedy COCO matching for all (image, class) pairs, batched by padded size buckets.

    Pairs are padded to a power-of-two number of detections and ground truths per bucket; one
    step per detection rank processes every pair of the bucket at once over A * T lanes.
    """
    n_det, n_gt = pairs_dg
    d_pid, d_rank = det
    g_pid, g_rank, g_ignore, g_crowd = gt
    i_pid, i_rank, i_grank, i_val = iou
    matched, from_ign = out
    num_a, num_t = g_ignore.shape[1], len(thr)
    lanes = num_a * num_t
    lane_thr = np.tile(thr, num_a)  # lane l = a * T + t
    active = (n_det > 0) & (n_gt > 0)
    key = _bucket(n_det) * 64 + _bucket(n_gt)
    det_row = np.full(len(n_det), -1)  # pair -> row within its bucket
    for k in np.unique(key[active]):
        sel = np.flatnonzero(active & (key == k))
        sel = sel[np.argsort(-n_det[sel], kind="mergesort")]  # active pairs form a prefix
        nb, dmax, gmax = len(sel), int(n_det[sel].max()), int(n_gt[sel].max())
        det_row[sel] = np.arange(nb)
        ious = np.full((nb, dmax, gmax), -1.0)
        m = det_row[i_pid] >= 0
        ious[det_row[i_pid[m]], i_rank[m], i_grank[m]] = i_val[m]
        ign = np.ones((nb, num_a, gmax), bool)
        crowd = np.zeros((nb, 1, gmax), bool)
        gm = det_row[g_pid] >= 0
        ign[det_row[g_pid[gm]], :, g_rank[gm]] = g_ignore[gm]
        crowd[det_row[g_pid[gm]], 0, g_rank[gm]] = g_crowd[gm]
        ign = np.repeat(ign, num_t, axis=1)  # (nb, L, G)
        taken = np.zeros((nb, lanes, gmax), bool)
        res_m = np.zeros((nb, dmax, lanes), bool)
        res_i = np.zeros((nb, dmax, lanes), bool)
        counts = n_det[sel]
        for r in range(dmax):
            n = int(np.count_nonzero(counts > r))
            row = ious[:n, r, None, :]  # (n, 1, G)
            ok = (row >= lane_thr[None, :, None]) & (~taken[:n] | crowd[:n])
            ok_n = ok & ~ign[:n]
            has_n = ok_n.any(-1)  # a non-ignored match exists: ignored ones never win
            use = np.where(has_n[..., None], ok_n, ok)
            vals = np.where(use, row, -1.0)
            best = vals.max(-1)
            found = best >= 0
            last = gmax - 1 - np.argmax((use & (vals == best[..., None]))[..., ::-1], axis=-1)
            pi, li = np.nonzero(found)
            taken[pi, li, last[pi, li]] = True
            res_m[:n, r] = found
            res_i[:n, r] = found & ~has_n
        dm = det_row[d_pid] >= 0
        matched[dm] = res_m[det_row[d_pid[dm]], d_rank[dm]]
        from_ign[dm] = res_i[det_row[d_pid[dm]], d_rank[dm]]
        det_row[sel] = -1


# ----------------------------------------------------------------------------- accumulate


def _accumulate(flat: _Flat, max_dets, thr, rec_thr):
    class_ids = np.unique(np.concatenate([flat.det_class, flat.gt_class]))
    num_t, num_r, num_k = len(thr), len(rec_thr), len(class_ids)
    num_a, num_m = flat.gt_ignore.shape[1], len(max_dets)
    precision = -np.ones((num_t, num_r, num_k, num_a, num_m))
    recall = -np.ones((num_t, num_k, num_a, num_m))
    g_k = np.searchsorted(class_ids, flat.gt_class)
    npig = np.zeros((num_k, num_a), np.int64)
    np.add.at(npig, g_k, ~flat.gt_ignore)
    order = np.lexsort((flat.det_rank, flat.det_image, -flat.det_score, flat.det_class))
    d_k = np.searchsorted(class_ids, flat.det_class[order])
    bounds = np.searchsorted(d_k, np.arange(num_k + 1))
    eps = np.spacing(1)
    for k in range(num_k):
        if not npig[k].any():
            continue
        block = order[bounds[k] : bounds[k + 1]]
        for mi, md in enumerate(max_dets):
            sel = block[flat.det_rank[block] < md]
            nd = len(sel)
            tp_sum = np.cumsum(flat.det_tp[sel], axis=0).astype(float)  # (nd, A, T)
            fp_sum = np.cumsum(flat.det_fp[sel], axis=0).astype(float)
            for a in range(num_a):
                if npig[k, a] == 0:
                    continue
                tp, fp = tp_sum[:, a].T, fp_sum[:, a].T  # (T, nd)
                rc = tp / npig[k, a]
                pr = tp / (fp + tp + eps)
                recall[:, k, a, mi] = rc[:, -1] if nd else 0
                pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
                for t in range(num_t):
                    inds = np.searchsorted(rc[t], rec_thr, side="left")
                    q = np.zeros(num_r)
                    ok = inds < nd
                    q[ok] = pr[t, inds[ok]]
                    precision[t, :, k, a, mi] = q
    return precision, recall, class_ids


def _summarize(precision, recall, thr, area_names, max_dets) -> dict[str, float]:
    def mean(ap: bool, iou=None, area="all", md=max_dets[-1]) -> float:
        aind = [area_names.index(area)]
        mind = [max_dets.index(md)]
        s = precision if ap else recall
        if iou is not None:
            s = s[np.where(iou == thr)[0]]
        s = s[:, :, :, aind, mind] if ap else s[:, :, aind, mind]
        return -1.0 if len(s[s > -1]) == 0 else float(np.mean(s[s > -1]))

    stats = {"AP": mean(True)}
    for iou, name in ((0.5, "AP50"), (0.75, "AP75")):
        if np.any(iou == thr):
            stats[name] = mean(True, iou)
    areas = [n for n in area_names if n != "all"]
    for n in areas:
        stats["AP" + _AREA_SUFFIX.get(n, "_" + n)] = mean(True, area=n)
    for md in max_dets:
        stats[f"AR{md}"] = mean(False, md=md)
    for n in areas:
        stats["AR" + _AREA_SUFFIX.get(n, "_" + n)] = mean(False, area=n)
    return stats
