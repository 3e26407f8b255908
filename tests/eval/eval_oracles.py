"""Test-only references for the evaluators: pycocotools driven in memory, and random data.

Imported by the eval tests (pytest puts this folder on ``sys.path``). pycocotools is imported
lazily so that the module loads without the parity extra.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np


def random_boxes(rng: np.random.Generator, n: int, size: float = 200.0) -> np.ndarray:
    """``(n, 4)`` float32 xyxy boxes with widths/heights spread over small..large COCO areas."""
    wh = np.exp(rng.uniform(np.log(2.0), np.log(size), (n, 2)))
    xy = rng.uniform(0, size, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(np.float32)


def jitter(rng: np.random.Generator, boxes: np.ndarray, scale: float) -> np.ndarray:
    """Perturb xyxy boxes by a fraction of their size (keeps x2 > x1)."""
    wh = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, 1)
    out = boxes + rng.normal(0, scale, boxes.shape) * wh
    out[:, 2:] = np.maximum(out[:, 2:], out[:, :2] + 0.5)
    return out.astype(np.float32)


def random_dataset(
    rng: np.random.Generator,
    num_images: int = 40,
    num_classes: int = 6,
    max_gt: int = 12,
    max_det: int = 40,
    crowd_prob: float = 0.1,
    tie_scores: bool = True,
    masks_hw: tuple[int, int] | None = None,
):
    """Random ground truth and detections with the awkward cases COCOeval must handle.

    Detections are jittered copies of ground truth (true positives at varied IoU, duplicates)
    plus random false positives; scores are drawn from a coarse grid when ``tie_scores`` so
    that many tie. Some images have no ground truth or no detections; class ``num_classes + 1``
    occurs only in detections and class ``num_classes`` (if drawn) only in ground truth.
    """
    gts, dts = [], []
    for i in range(num_images):
        g = int(rng.integers(0, max_gt + 1)) if i % 7 != 3 else 0
        gboxes = random_boxes(rng, g)
        gcls = rng.integers(1, num_classes + 1, g).astype(np.int32)
        crowd = rng.random(g) < crowd_prob
        src = rng.integers(0, max(g, 1), int(rng.integers(0, max_det + 1))) if g else []
        tp_boxes = jitter(rng, gboxes[src], rng.uniform(0.0, 0.3)) if g else np.zeros((0, 4))
        tp_cls = gcls[src] if g else np.zeros(0, np.int32)
        tp_cls = tp_cls.copy()
        tp_cls[(tp_cls == num_classes)] = num_classes - 1  # class K: GT only
        nf = int(rng.integers(0, max_det // 2 + 1))
        fp_boxes = random_boxes(rng, nf)
        fp_cls = rng.integers(1, num_classes + 2, nf).astype(np.int32)
        fp_cls[fp_cls == num_classes] = num_classes + 1  # class K+1: detections only
        boxes = np.concatenate([tp_boxes, fp_boxes]).astype(np.float32)
        cls = np.concatenate([tp_cls, fp_cls]).astype(np.int32)
        if i % 11 == 5:
            boxes, cls = boxes[:0], cls[:0]
        if tie_scores:
            scores = rng.integers(0, 20, len(boxes)).astype(np.float32) / 20.0
        else:
            scores = rng.random(len(boxes)).astype(np.float32)
        gt = {"boxes": gboxes, "classes": gcls, "iscrowd": crowd}
        dt = {"boxes": boxes, "scores": scores, "classes": cls}
        if masks_hw is not None:
            gt["masks"] = boxes_to_masks(rng, gboxes, masks_hw)
            dt["masks"] = boxes_to_masks(rng, boxes, masks_hw)
        gts.append(gt)
        dts.append(dt)
    return gts, dts


def boxes_to_masks(rng, boxes: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Ellipse-ish masks inside each box (scaled to the canvas), with random pixel noise."""
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    sx, sy = w / 200.0, h / 200.0
    out = np.zeros((len(boxes), h, w), bool)
    for k, (x1, y1, x2, y2) in enumerate(boxes.astype(np.float64)):
        cx, cy = (x1 + x2) / 2 * sx, (y1 + y2) / 2 * sy
        rx, ry = max((x2 - x1) / 2 * sx, 1.0), max((y2 - y1) / 2 * sy, 1.0)
        m = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
        out[k] = m & (rng.random((h, w)) >= 0.02)
    return out


def gt_area(gt: dict) -> np.ndarray:
    """The area the jaxcv evaluator documents: ``area``, else mask pixels, else box w*h."""
    if "area" in gt:
        return np.asarray(gt["area"], np.float64)
    if "masks" in gt:
        return np.asarray(gt["masks"]).sum((1, 2)).astype(np.float64)
    b = np.asarray(gt["boxes"], np.float64)
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def _xywh(b) -> list[float]:
    b = np.asarray(b, np.float64)
    return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]


def pycocotools_eval(gts, dts, iou_type: str = "bbox", with_bbox: bool = False):
    """A ``COCOeval`` run (evaluate, accumulate, summarize) on our list-of-dicts inputs.

    Ground truth and results are built in memory as pycocotools' own dicts; categories are the
    union of classes in ground truth and detections, image ids ``1..N`` in list order.
    """
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    segm = iou_type == "segm"
    images, anns, results, cats = [], [], [], set()
    for i, (g, d) in enumerate(zip(gts, dts, strict=True)):
        h, w = g["masks"].shape[1:] if segm else (1000, 1000)
        images.append({"id": i + 1, "height": int(h), "width": int(w)})
        area = gt_area(g)
        crowd = g.get("iscrowd", np.zeros(len(g["classes"]), bool))
        for j in range(len(g["classes"])):
            ann = {
                "id": len(anns) + 1,
                "image_id": i + 1,
                "category_id": int(g["classes"][j]),
                "bbox": _xywh(g["boxes"][j]),
                "area": float(area[j]),
                "iscrowd": int(crowd[j]),
            }
            if segm:
                ann["segmentation"] = mask_utils.encode(
                    np.asfortranarray(g["masks"][j].astype(np.uint8))
                )
            anns.append(ann)
            cats.add(int(g["classes"][j]))
        for j in range(len(d["scores"])):
            res = {
                "image_id": i + 1,
                "category_id": int(d["classes"][j]),
                "score": float(d["scores"][j]),
            }
            if segm:  # without 'bbox' loadRes takes the mask area, with one the box area
                res["segmentation"] = mask_utils.encode(
                    np.asfortranarray(d["masks"][j].astype(np.uint8))
                )
            if not segm or with_bbox:
                res["bbox"] = _xywh(d["boxes"][j])
            results.append(res)
            cats.add(int(d["classes"][j]))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {
            "images": images,
            "annotations": anns,
            "categories": [{"id": c, "name": str(c)} for c in sorted(cats)],
        }
        coco.createIndex()
        coco_dt = coco.loadRes(results)
        ev = COCOeval(coco, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def pycocotools_stats(gts, dts, iou_type: str = "bbox") -> np.ndarray:
    """``COCOeval.stats`` (12,) for our list-of-dicts inputs."""
    return np.asarray(pycocotools_eval(gts, dts, iou_type).stats, np.float64)


STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
