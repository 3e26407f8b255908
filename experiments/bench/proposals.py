"""Benchmark: selective search (fast and quality modes) against OpenCV's, at VOC image size.

Command (from the repository root)::

    .venv/bin/python experiments/bench/proposals.py [--num-images 50] [--image-size 500x375]
        [--photos astronaut,coffee,...] [--data-dir DIR]

Two parts, both at ``--image-size`` (default 500x375, a typical PASCAL VOC photograph;
``native`` keeps the datasets' own sizes):

* timing on real photographs: the RGB photographs shipped by scikit-image (``skimage.data``,
  ``--photos``) resized to the image size; for each photograph jaxcv fast, OpenCV fast,
  jaxcv quality and OpenCV quality run one after the other (so that a change of machine load
  hits both), each timed on its own call;
* quality of the boxes: the first ``--num-images`` raw ``shapes/multi`` test images (128x128,
  generated on first use) resized to the image size, their ground-truth boxes scaled alike;
  recall of the ground-truth boxes at IoU 0.5 and 0.7, MABO (mean over classes of the average
  best overlap), the mean number of proposals, recall at IoU 0.5 of the best-ranked 100
  proposals and seconds per image, for each method.

jaxcv is :func:`jaxcv.proposals.selective_search` in this process (nothing cached between
images; its compiled kernels are compiled, or loaded from numba's cache, by a warm-up call on
a small image before any timing). The reference is OpenCV's selective search
(``cv2.ximgproc.segmentation``, opencv-contrib, ``cv2.setNumThreads(1)``), when ``cv2`` is
importable (``pip install opencv-contrib-python-headless``, the ``bench`` extra; never used by
jaxcv). OpenCV's modes have their own settings (``k`` from 150, ``min_size = k``): the
comparison is of the two libraries as shipped.

The last line is one JSON object: ``jaxcv_over_opencv_time_fast`` / ``_quality`` (jaxcv's
mean seconds per photograph over OpenCV's), ``photo_{fast,quality}_s_per_image`` and
``photo_opencv_{fast,quality}_s_per_image``, ``fast_recall50``, ``quality_recall50``,
``opencv_fast_recall50``, ``opencv_quality_recall50``, ``*_mabo``, ``*_s_per_image`` (on the
shapes images) and the other figures of the table, plus ``image_size``.

Hardware of the recorded run: 2 shared CPU cores (busy with other jobs: times are upper bounds,
the ratios are measured in the same run).
"""

import argparse
import json
import time

import numpy as np
from skimage import data as skdata
from skimage import transform

from jaxcv.proposals import mean_best_overlap, proposal_recall, raw_examples, selective_search

MODES = ("fast", "quality")
DEFAULT_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
)


def _opencv_search(mode: str):
    """OpenCV's selective search as ``image (H, W, 3) uint8 RGB -> (N, 4) xyxy``, or None."""
    try:
        import cv2

        segmentation = cv2.ximgproc.segmentation
    except (ImportError, AttributeError):
        return None
    cv2.setNumThreads(1)

    def search(image: np.ndarray) -> np.ndarray:
        ss = segmentation.createSelectiveSearchSegmentation()
        ss.setBaseImage(np.ascontiguousarray(image[..., ::-1]))  # OpenCV wants BGR
        if mode == "fast":
            ss.switchToSelectiveSearchFast()
        else:
            ss.switchToSelectiveSearchQuality()
        rects = np.asarray(ss.process(), np.float32).reshape(-1, 4)  # x, y, w, h
        return np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)

    return search


def _jaxcv_search(mode: str):
    return lambda image: selective_search(image, mode=mode)


def parse_size(text: str) -> tuple[int, int] | None:
    """``"500x375"`` -> ``(500, 375)`` (width, height); ``"native"`` -> None."""
    if text == "native":
        return None
    width, height = (int(v) for v in text.lower().split("x"))
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"bad image size {text!r}")
    return width, height


def resize(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(height, width, 3)`` uint8 (bilinear; anti-aliased if smaller)."""
    if size is None or image.shape[:2] == (size[1], size[0]):
        return image
    width, height = size
    shrink = height < image.shape[0] or width < image.shape[1]
    out = transform.resize(
        image, (height, width), order=1, anti_aliasing=shrink, preserve_range=True
    )
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def scale_boxes(boxes: np.ndarray, shape: tuple[int, int], size: tuple[int, int] | None):
    """xyxy pixel-edge ``boxes`` of an image of ``shape (H, W)`` at the resized ``size``."""
    if size is None:
        return boxes
    sx, sy = size[0] / shape[1], size[1] / shape[0]
    return (np.asarray(boxes, np.float64) * [sx, sy, sx, sy]).astype(np.float32)


def photographs(names: list[str], size: tuple[int, int] | None) -> dict[str, np.ndarray]:
    """The named ``skimage.data`` photographs as RGB uint8 at ``size``."""
    out = {}
    for name in names:
        image = np.asarray(getattr(skdata, name)())
        if image.ndim != 3 or image.shape[-1] < 3:
            raise ValueError(f"skimage.data.{name} is not an RGB photograph: {image.shape}")
        out[name] = resize(np.ascontiguousarray(image[..., :3]), size)
    return out


def timed(search, image: np.ndarray) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    boxes = search(image)
    return boxes, time.perf_counter() - start


def time_photographs(methods: dict, photos: dict[str, np.ndarray]) -> dict[str, float]:
    """Seconds per photograph of every method; the methods alternate on each photograph."""
    seconds = dict.fromkeys(methods, 0.0)
    print(f"{'photograph':<22}" + "".join(f"{name:>16}" for name in methods) + "   (s)")
    for photo, image in photos.items():
        row = []
        for name, search in methods.items():
            boxes, elapsed = timed(search, image)
            seconds[name] += elapsed
            row.append(f"{elapsed:>10.3f} ({len(boxes):>4})")
        print(f"{photo:<22}" + "".join(row))
    return {name: total / len(photos) for name, total in seconds.items()}


def evaluate(methods: dict, images, gt_boxes, gt_classes) -> dict[str, dict[str, float]]:
    """Recall, MABO, proposal count and seconds per image of each method on ``images``."""
    proposals = {name: [] for name in methods}
    seconds = dict.fromkeys(methods, 0.0)
    for image in images:
        for name, search in methods.items():  # alternate methods image by image
            boxes, elapsed = timed(search, image)
            proposals[name].append(boxes)
            seconds[name] += elapsed
    out = {}
    for name, props in proposals.items():
        out[name] = {
            "recall50": proposal_recall(props, gt_boxes, 0.5),
            "recall70": proposal_recall(props, gt_boxes, 0.7),
            "mabo": mean_best_overlap(props, gt_boxes, gt_classes),
            "num_proposals": float(np.mean([len(p) for p in props])),
            "recall50_top100": proposal_recall([p[:100] for p in props], gt_boxes, 0.5),
            "s_per_image": seconds[name] / len(images),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-images", type=int, default=50)
    parser.add_argument("--split", default="test")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--image-size",
        type=parse_size,
        default=(500, 375),
        help="WIDTHxHEIGHT of every image (default 500x375), or 'native'",
    )
    parser.add_argument(
        "--photos",
        default=",".join(DEFAULT_PHOTOS),
        help="comma-separated skimage.data photographs to time ('' for none)",
    )
    args = parser.parse_args()
    size = args.image_size

    methods = {}  # JSON key prefix -> search
    for mode in MODES:
        methods[mode] = _jaxcv_search(mode)
        reference = _opencv_search(mode)
        if reference is not None:
            methods[f"opencv_{mode}"] = reference
    if not any(name.startswith("opencv") for name in methods):
        print("(opencv-contrib not installed: no reference rows)")
    warm = np.zeros((24, 32, 3), np.uint8)
    warm[6:18, 8:20] = (200, 40, 40)
    for search in methods.values():  # numba compiles (or loads) its kernels here
        search(warm)

    figures = {"image_size": "native" if size is None else f"{size[0]}x{size[1]}"}
    photo_names = [name for name in args.photos.split(",") if name]
    if photo_names:
        photos = photographs(photo_names, size)
        print(f"timing on {len(photos)} photographs at {figures['image_size']}:")
        per_photo = time_photographs(methods, photos)
        for name, value in per_photo.items():
            figures[f"photo_{name}_s_per_image"] = round(value, 4)
        for mode in MODES:
            if f"opencv_{mode}" in per_photo:
                ratio = per_photo[mode] / per_photo[f"opencv_{mode}"]
                figures[f"jaxcv_over_opencv_time_{mode}"] = round(ratio, 3)

    examples = list(
        raw_examples("shapes/multi", args.split, data_dir=args.data_dir, num_images=args.num_images)
    )
    images = [resize(ex["image"], size) for ex in examples]
    gt_boxes = [scale_boxes(ex["boxes"], ex["image"].shape[:2], size) for ex in examples]
    gt_classes = [ex["classes"] for ex in examples]
    num_objects = sum(len(b) for b in gt_boxes)
    print(
        f"shapes/multi {args.split}: {len(images)} images at {figures['image_size']}, "
        f"{num_objects} objects"
    )
    rows = evaluate(methods, images, gt_boxes, gt_classes)

    header = (
        f"{'method':<16}{'R@0.5':>8}{'R@0.7':>8}{'MABO':>8}{'#props':>9}"
        f"{'R@0.5 top100':>14}{'s/img':>9}"
    )
    print(header)
    print("-" * len(header))
    for prefix, r in rows.items():
        name = prefix.replace("_", " ") if prefix.startswith("opencv") else f"jaxcv {prefix}"
        print(
            f"{name:<16}{r['recall50']:>8.3f}{r['recall70']:>8.3f}{r['mabo']:>8.3f}"
            f"{r['num_proposals']:>9.1f}{r['recall50_top100']:>14.3f}{r['s_per_image']:>9.3f}"
        )
        figures.update({f"{prefix}_{key}": round(value, 4) for key, value in r.items()})
    for mode in MODES:
        if f"opencv_{mode}" in rows:
            ratio = rows[mode]["s_per_image"] / rows[f"opencv_{mode}"]["s_per_image"]
            figures[f"shapes_jaxcv_over_opencv_time_{mode}"] = round(ratio, 3)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
