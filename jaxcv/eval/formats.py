"""COCO and VOC file formats <-> the list-of-dicts form taken by :mod:`jaxcv.eval`.

So that users can evaluate their own files::

    gt = formats.load_coco_ground_truth("instances_val2017.json")
    dets = formats.load_coco_results("results.json", gt.image_ids)
    coco.evaluate(gt.ground_truth, dets, iou_type="bbox")

Class ids are COCO ``category_id`` values unchanged; VOC class names map to ``1..K`` in the
order of ``class_names`` (0 is background in jaxcv). COCO boxes are ``[x, y, w, h]`` and become
``xyxy = [x, y, x + w, y + h]``; the GT ``area`` field is kept, so that the small/medium/large
ranges are those pycocotools uses. Results with masks are written without ``bbox`` so that
pycocotools takes the mask area for ``segm`` evaluation (see :mod:`jaxcv.eval.coco`).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxcv.eval import rle


@dataclass(frozen=True)
class CocoGroundTruth:
    """A COCO ground-truth file in jaxcv form.

    Attributes:
      ground_truth: one dict per image (in ``image_ids`` order) with ``boxes (G, 4)`` xyxy
        float32, ``classes (G,)`` int32, ``iscrowd (G,)`` bool, ``area (G,)`` float64 and, when
        loaded with masks, ``masks (G, H, W)`` bool.
      image_ids: the COCO image ids, sorted (pycocotools' evaluation order).
      image_sizes: ``(H, W)`` per image.
      categories: ``{category_id: name}``.
    """

    ground_truth: list[dict[str, np.ndarray]]
    image_ids: list[int]
    image_sizes: list[tuple[int, int]]
    categories: dict[int, str]


def _read_json(source):
    if isinstance(source, (str, Path)):
        with open(source) as f:
            return json.load(f)
    return source


def _xyxy(bbox) -> list[float]:
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + w, y + h]


def _xywh(box) -> list[float]:
    b = np.asarray(box, np.float64)
    return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]


def load_coco_ground_truth(
    source: str | Path | Mapping, *, with_masks: bool = False
) -> CocoGroundTruth:
    """Read a COCO instances JSON (path or parsed dict) into :class:`CocoGroundTruth`.

    ``with_masks`` decodes each annotation's ``segmentation`` (polygons or RLE) to ``masks``.
    """
    data = _read_json(source)
    for key in ("images", "annotations"):
        if key not in data:
            raise ValueError(f"not a COCO ground-truth file: no '{key}' (keys {sorted(data)})")
    images = sorted(data["images"], key=lambda im: im["id"])
    by_image = defaultdict(list)
    for ann in data["annotations"]:
        by_image[ann["image_id"]].append(ann)
    gts, sizes = [], []
    for im in images:
        anns = by_image.get(im["id"], [])
        h, w = int(im.get("height", 0)), int(im.get("width", 0))
        g = {
            "boxes": np.asarray([_xyxy(a["bbox"]) for a in anns], np.float32).reshape(-1, 4),
            "classes": np.asarray([a["category_id"] for a in anns], np.int32),
            "iscrowd": np.asarray([bool(a.get("iscrowd", 0)) for a in anns], bool),
            "area": np.asarray([float(a.get("area", 0.0)) for a in anns], np.float64),
        }
        if with_masks:
            g["masks"] = (
                np.stack([rle.segmentation_to_mask(a["segmentation"], h, w) for a in anns])
                if anns
                else np.zeros((0, h, w), bool)
            )
        gts.append(g)
        sizes.append((h, w))
    cats = {int(c["id"]): str(c.get("name", c["id"])) for c in data.get("categories", [])}
    return CocoGroundTruth(gts, [int(im["id"]) for im in images], sizes, cats)


def load_coco_results(
    source: str | Path | Sequence[Mapping],
    image_ids: Sequence[int],
    *,
    image_sizes: Sequence[tuple[int, int]] | None = None,
    with_masks: bool = False,
) -> list[dict[str, np.ndarray]]:
    """Read a COCO results JSON (list of ``{image_id, category_id, score, bbox|segmentation}``).

    Returns one detection dict per entry of ``image_ids`` (``boxes (D, 4)`` xyxy, ``scores``,
    ``classes`` and, with ``with_masks``, ``masks (D, H, W)`` decoded from RLE, which needs
    ``image_sizes``). Results for images outside ``image_ids`` raise ``ValueError``.
    """
    results = _read_json(source)
    if not isinstance(results, list):
        raise ValueError(f"a COCO results file is a list of objects, got {type(results).__name__}")
    index = {int(i): k for k, i in enumerate(image_ids)}
    per = [[] for _ in image_ids]
    for r in results:
        if int(r["image_id"]) not in index:
            raise ValueError(f"result for image_id {r['image_id']} not in the ground truth")
        per[index[int(r["image_id"])]].append(r)
    if with_masks and image_sizes is None:
        raise ValueError("with_masks=True needs image_sizes (H, W) per image")
    out = []
    for k, rs in enumerate(per):
        boxes = []
        for r in rs:
            if "bbox" in r:
                boxes.append(_xyxy(r["bbox"]))
            elif "segmentation" in r:
                boxes.append(_mask_box(rle.decode(r["segmentation"])))
            else:
                raise ValueError(f"a result needs 'bbox' or 'segmentation', got {sorted(r)}")
        d = {
            "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "scores": np.asarray([r["score"] for r in rs], np.float32),
            "classes": np.asarray([r["category_id"] for r in rs], np.int32),
        }
        if with_masks:
            h, w = image_sizes[k]
            d["masks"] = (
                np.stack([rle.segmentation_to_mask(r["segmentation"], h, w) for r in rs])
                if rs
                else np.zeros((0, h, w), bool)
            )
        out.append(d)
    return out


def _mask_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def to_coco_ground_truth(
    ground_truth: Sequence[Mapping[str, np.ndarray]],
    image_ids: Sequence[int] | None = None,
    categories: Mapping[int, str] | None = None,
    image_sizes: Sequence[tuple[int, int]] | None = None,
) -> dict:
    """jaxcv ground truth -> a COCO instances dict (``json.dump``-able).

    ``image_ids`` default ``1..N``; ``categories`` default every class present, named by its
    id; ``image_sizes`` default to the mask size (or 0 without masks). ``area`` is taken from
    the dict, else the mask pixel count, else the box area (jaxcv's definition); ``masks`` are
    written as compressed RLE.
    """
    ids = list(range(1, len(ground_truth) + 1)) if image_ids is None else list(image_ids)
    if len(ids) != len(ground_truth):
        raise ValueError(f"{len(ids)} image_ids for {len(ground_truth)} images")
    images, anns, seen = [], [], set()
    for k, (iid, g) in enumerate(zip(ids, ground_truth, strict=True)):
        boxes = np.asarray(g["boxes"], np.float64).reshape(-1, 4)
        masks = g.get("masks")
        if image_sizes is not None:
            h, w = image_sizes[k]
        elif masks is not None:
            h, w = np.shape(masks)[1:]
        else:
            h = w = 0
        images.append({"id": int(iid), "height": int(h), "width": int(w)})
        n = len(boxes)
        crowd = np.asarray(g.get("iscrowd", np.zeros(n)), bool)
        if "area" in g:
            area = np.asarray(g["area"], np.float64)
        elif masks is not None:
            area = np.asarray(masks, bool).sum((1, 2)).astype(np.float64)
        else:
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        for j in range(n):
            ann = {
                "id": len(anns) + 1,
                "image_id": int(iid),
                "category_id": int(g["classes"][j]),
                "bbox": _xywh(boxes[j]),
                "area": float(area[j]),
                "iscrowd": int(crowd[j]),
            }
            if masks is not None:
                ann["segmentation"] = rle.encode(np.asarray(masks[j], bool))
            anns.append(ann)
            seen.add(int(g["classes"][j]))
    cats = categories if categories is not None else {c: str(c) for c in sorted(seen)}
    return {
        "images": images,
        "annotations": anns,
        "categories": [{"id": int(c), "name": name} for c, name in cats.items()],
    }


def to_coco_results(
    detections: Sequence[Mapping[str, np.ndarray]],
    image_ids: Sequence[int] | None = None,
    iou_type: str = "bbox",
    *,
    detection_area: str = "mask",
) -> list[dict]:
    """jaxcv detections -> a COCO results list (``json.dump``-able).

    ``"bbox"`` writes ``bbox = [x, y, w, h]``; ``"segm"`` writes ``segmentation`` (compressed
    RLE of ``masks (D, H, W)``) and, with ``detection_area="box"``, the ``bbox`` too
    (detectron2's form; pycocotools then sizes detections by the box, as
    ``jaxcv.eval.coco.evaluate(..., detection_area="box")`` does), else no ``bbox``
    (torchvision's form; the mask area).
    """
    if detection_area not in ("mask", "box"):
        raise ValueError(f"detection_area must be 'mask' or 'box', got {detection_area!r}")
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    ids = list(range(1, len(detections) + 1)) if image_ids is None else list(image_ids)
    if len(ids) != len(detections):
        raise ValueError(f"{len(ids)} image_ids for {len(detections)} images")
    out = []
    for iid, d in zip(ids, detections, strict=True):
        for j in range(len(d["scores"])):
            r = {
                "image_id": int(iid),
                "category_id": int(d["classes"][j]),
                "score": float(d["scores"][j]),
            }
            if iou_type == "bbox" or detection_area == "box":
                r["bbox"] = _xywh(d["boxes"][j])
            if iou_type == "segm":
                r["segmentation"] = rle.encode(np.asarray(d["masks"][j], bool))
            out.append(r)
    return out


def save_json(obj, path: str | Path) -> None:
    """Write ``obj`` (from :func:`to_coco_ground_truth` / :func:`to_coco_results`) as JSON."""
    with open(path, "w") as f:
        json.dump(obj, f)


def load_voc_annotation(
    source: str | Path, class_names: Sequence[str], *, coordinates: str = "continuous"
) -> dict[str, np.ndarray]:
    """Read one VOC XML annotation -> ``boxes (G, 4)`` f32, ``classes (G,)`` i32, ``difficult``.

    ``classes`` are ``1 + class_names.index(name)``. ``coordinates="continuous"`` (default)
    turns the devkit's inclusive 1-based pixels ``[xmin, xmax]`` into pixel edges
    ``[xmin - 1, xmax]`` (for ``voc.evaluate(pixel_inclusive=False)``, which then equals the
    devkit exactly); ``"devkit"`` keeps the raw numbers (for ``pixel_inclusive=True``).
    """
    if coordinates not in ("continuous", "devkit"):
        raise ValueError(f"coordinates must be 'continuous' or 'devkit', got {coordinates!r}")
    root = ET.parse(source).getroot()
    boxes, classes, difficult = [], [], []
    for obj in root.iter("object"):
        name = obj.findtext("name", "").strip()
        if name not in class_names:
            raise ValueError(f"{source}: unknown class {name!r}; known: {list(class_names)}")
        bb = obj.find("bndbox")
        if bb is None:
            raise ValueError(f"{source}: object {name!r} has no <bndbox>")
        x1, y1, x2, y2 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        if coordinates == "continuous":
            x1, y1 = x1 - 1.0, y1 - 1.0
        boxes.append([x1, y1, x2, y2])
        classes.append(class_names.index(name) + 1)
        difficult.append(int(obj.findtext("difficult", "0").strip() or 0) == 1)
    return {
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "classes": np.asarray(classes, np.int32),
        "difficult": np.asarray(difficult, bool),
    }


def load_voc_results(
    files: Mapping[int, str | Path],
    image_ids: Sequence[str],
    *,
    coordinates: str = "continuous",
) -> list[dict[str, np.ndarray]]:
    """Read devkit result files (one per class: lines ``image_id score xmin ymin xmax ymax``).

    ``files`` maps a class id to its file; returns one detection dict per ``image_ids`` entry.
    ``coordinates`` as in :func:`load_voc_annotation`.
    """
    index = {str(i): k for k, i in enumerate(image_ids)}
    per: list[list[tuple[float, int, list[float]]]] = [[] for _ in image_ids]
    for cls, path in files.items():
        for line_no, line in enumerate(Path(path).read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise ValueError(f"{path}:{line_no}: expected 6 fields, got {len(parts)}")
            if parts[0] not in index:
                raise ValueError(f"{path}:{line_no}: unknown image id {parts[0]!r}")
            x1, y1, x2, y2 = (float(v) for v in parts[2:])
            if coordinates == "continuous":
                x1, y1 = x1 - 1.0, y1 - 1.0
            per[index[parts[0]]].append((float(parts[1]), int(cls), [x1, y1, x2, y2]))
    return [
        {
            "boxes": np.asarray([r[2] for r in rs], np.float32).reshape(-1, 4),
            "scores": np.asarray([r[0] for r in rs], np.float32),
            "classes": np.asarray([r[1] for r in rs], np.int32),
        }
        for rs in per
    ]
