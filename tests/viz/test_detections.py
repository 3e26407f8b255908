"""Drawn detections: boxes land where they should, both box layouts work, the report uses them."""

import numpy as np
import pytest
from PIL import Image

from jaxcv.recipes import recipe_for
from jaxcv.train.evaluation import Evaluation
from jaxcv.train.report import task_figures
from jaxcv.viz.detections import CLASS_COLORS, detection_grid

NAMES = ("circle", "square", "triangle")


def _rgb(hex_color):
    return np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])


def _detections(n=3, d=4, m=5):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(n, 64, 64, 3)).astype(np.float32)
    boxes = np.tile(np.array([8.0, 8.0, 40.0, 40.0], np.float32), (n, d, 1))
    gt = np.tile(np.array([10.0, 10.0, 42.0, 42.0], np.float32), (n, m, 1))
    return {
        "image": images,
        "pred_input_boxes": boxes,
        "pred_boxes": boxes * 2.0,  # original pixels: the figure must use the input ones
        "pred_scores": np.tile(np.array([0.9, 0.6, 0.2, 0.0], np.float32), (n, 1)),
        "pred_classes": np.tile(np.array([1, 2, 3, 0], np.int32), (n, 1)),
        "pred_valid": np.tile(np.array([True, True, True, False]), (n, 1)),
        "boxes": gt,
        "classes": np.ones((n, m), np.int32),
        "valid": np.arange(m)[None].repeat(n, 0) < 2,
    }


def test_box_is_drawn_in_its_class_colour(tmp_path):
    images = np.zeros((1, 64, 64, 3), np.float32)
    images[0, 0, 0] = 1.0  # a flat dark image (to_display rescales per image)
    path = detection_grid(
        images,
        np.array([[16.0, 16.0, 48.0, 48.0]]),
        np.array([2]),
        NAMES,
        tmp_path / "one.png",
        pred_class_offset=0,
        columns=1,
        panel_size=3.0,
    )
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    colour = _rgb(CLASS_COLORS[2])
    close = np.all(np.abs(pixels - colour) < 40, axis=-1)
    assert close.sum() > 50  # the rectangle's outline (and the label box) in triangle's colour
    rows, cols = np.nonzero(close)
    # The outline spans about half of the panel in both directions.
    assert cols.max() - cols.min() > 0.3 * pixels.shape[1]
    assert rows.max() - rows.min() > 0.25 * pixels.shape[0]


def test_detector_and_single_box_layouts(tmp_path):
    s = _detections()
    path = detection_grid(
        s["image"],
        s["pred_input_boxes"],
        s["pred_classes"],
        NAMES,
        tmp_path / "det.png",
        pred_scores=s["pred_scores"],
        pred_valid=s["pred_valid"],
        gt_boxes=s["boxes"],
        gt_classes=s["classes"],
        gt_valid=s["valid"],
        columns=2,
    )
    assert Image.open(path).size[0] > 0
    one = detection_grid(
        s["image"], s["pred_input_boxes"][:, 0], np.array([0, 1, 2]), NAMES, tmp_path / "loc.png"
    )
    assert one.exists()


def test_rejects_mismatched_shapes(tmp_path):
    s = _detections()
    with pytest.raises(ValueError, match="pred_classes"):
        detection_grid(s["image"], s["pred_input_boxes"], np.zeros((2, 4)), NAMES, tmp_path / "x")
    with pytest.raises(ValueError, match="pred_boxes"):
        detection_grid(s["image"], np.zeros((3, 4, 5)), s["pred_classes"], NAMES, tmp_path / "x")
    with pytest.raises(ValueError, match="gt_classes"):
        detection_grid(
            s["image"],
            s["pred_input_boxes"],
            s["pred_classes"],
            NAMES,
            tmp_path / "x",
            gt_boxes=s["boxes"],
        )


def test_report_draws_detector_and_localization_samples(tmp_path):
    detector = recipe_for("faster_rcnn").figures
    figures = task_figures(tmp_path, Evaluation({}, None, _detections(), "test"), NAMES, detector)
    assert [p.name for _, p in figures] == ["sample_detections.png"]
    assert figures[0][1].exists()

    s = _detections()
    localization = {
        "image": s["image"],
        "label": np.array([0, 1, 2]),
        "pred_label": np.array([0, 2, 2]),
        "probs": np.full((3, 3), 1 / 3, np.float32),
        "pred_boxes": s["pred_input_boxes"][:, 0],
        "boxes": s["boxes"],
        "classes": s["classes"],
        "valid": s["valid"],
    }
    evaluation = Evaluation({}, None, localization, "test")
    figures = task_figures(tmp_path, evaluation, NAMES, recipe_for("localization").figures)
    names = [p.name for _, p in figures]
    assert names == ["sample_detections.png", "sample_predictions.png"]
