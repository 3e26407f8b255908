"""Benchmark: selective search proposals on shapes/multi test images, fast and quality modes.

Command (from the repository root)::

    .venv/bin/python experiments/bench/proposals.py [--num-images 50] [--data-dir DIR]

For the first ``--num-images`` raw (uint8, 128x128, not normalised) test images of
``shapes/multi`` (generated on first use), each mode of :func:`jaxcv.proposals.selective_search`
runs on every image; the table gives recall of the ground-truth boxes at IoU 0.5 and 0.7, MABO
(mean over classes of the average best overlap), the mean number of proposals, recall at IoU 0.5
of the best-ranked 100 proposals, and seconds per image (single process, nothing cached).

Reference: OpenCV's selective search (``cv2.ximgproc.segmentation``, opencv-contrib, one
thread) in its fast and quality modes on the same images, when ``cv2`` is importable
(``pip install opencv-contrib-python-headless``; a benchmark-only dependency, never used by
jaxcv). The last line is one JSON object with ``fast_recall50``, ``fast_s_per_image``,
``fast_num_proposals``, ``quality_recall50``, ``quality_s_per_image``,
``quality_num_proposals`` (plus ``*_recall70``, ``*_mabo``, ``*_recall50_top100`` and the
``opencv_*`` equivalents).

Hardware of the recorded run: 2 shared CPU cores (busy with other jobs: times are upper bounds).
"""

import argparse
import functools
import json
import time

import numpy as np

from jaxcv.proposals import mean_best_overlap, proposal_recall, raw_examples, selective_search


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


def evaluate(search, images, gt_boxes, gt_classes) -> dict[str, float]:
    """Runs ``search`` on every image; recall, MABO, proposal count and seconds per image."""
    proposals, seconds = [], 0.0
    for image in images:
        start = time.perf_counter()
        proposals.append(search(image))
        seconds += time.perf_counter() - start
    return {
        "recall50": proposal_recall(proposals, gt_boxes, 0.5),
        "recall70": proposal_recall(proposals, gt_boxes, 0.7),
        "mabo": mean_best_overlap(proposals, gt_boxes, gt_classes),
        "num_proposals": float(np.mean([len(p) for p in proposals])),
        "recall50_top100": proposal_recall([p[:100] for p in proposals], gt_boxes, 0.5),
        "s_per_image": seconds / len(images),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-images", type=int, default=50)
    parser.add_argument("--split", default="test")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    examples = list(
        raw_examples("shapes/multi", args.split, data_dir=args.data_dir, num_images=args.num_images)
    )
    images = [ex["image"] for ex in examples]
    gt_boxes = [ex["boxes"] for ex in examples]
    gt_classes = [ex["classes"] for ex in examples]
    num_objects = sum(len(b) for b in gt_boxes)
    print(f"shapes/multi {args.split}: {len(images)} images, {num_objects} objects")

    rows = {}  # table name -> (JSON key prefix, figures)
    for mode in ("fast", "quality"):
        ours = functools.partial(selective_search, mode=mode)
        rows[f"jaxcv {mode}"] = (mode, evaluate(ours, images, gt_boxes, gt_classes))
        reference = _opencv_search(mode)
        if reference is not None:
            figures = evaluate(reference, images, gt_boxes, gt_classes)
            rows[f"opencv {mode}"] = (f"opencv_{mode}", figures)
    if not any(name.startswith("opencv") for name in rows):
        print("(opencv-contrib not installed: no reference rows)")

    header = (
        f"{'method':<16}{'R@0.5':>8}{'R@0.7':>8}{'MABO':>8}{'#props':>9}"
        f"{'R@0.5 top100':>14}{'s/img':>9}"
    )
    print(header)
    print("-" * len(header))
    figures = {}
    for name, (prefix, r) in rows.items():
        print(
            f"{name:<16}{r['recall50']:>8.3f}{r['recall70']:>8.3f}{r['mabo']:>8.3f}"
            f"{r['num_proposals']:>9.1f}{r['recall50_top100']:>14.3f}{r['s_per_image']:>9.3f}"
        )
        figures.update({f"{prefix}_{key}": round(value, 4) for key, value in r.items()})
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
