"""The Overfeat panels figure: it draws every panel and refuses a bad image."""

import numpy as np
import pytest
from PIL import Image

from jaxcv.viz.windows import overfeat_panels


def _inputs():
    rng = np.random.default_rng(0)
    scales = [
        {
            "scale": s,
            "probs": rng.dirichlet(np.ones(3), size=(n, n)),
            "windows": np.tile(np.array([0, 0, 32, 32.0]), (n, n, 1)) / s,
        }
        for s, n in ((1.0, 3), (1.5, 5))
    ]
    cand = {
        "boxes": np.array([[2, 2, 20, 20], [4, 4, 22, 22.0]]),
        "scores": np.array([0.9, 0.4]),
        "classes": np.array([1, 2]),
        "valid": np.array([True, False]),
    }
    det = {
        "boxes": np.array([[3, 3, 21, 21.0], [0, 0, 0, 0]]),
        "scores": np.array([1.3, 0.0]),
        "classes": np.array([1, 0]),
        "valid": np.array([True, False]),
    }
    return rng.normal(size=(48, 48, 3)), scales, cand, det


def test_writes_a_png(tmp_path):
    image, scales, cand, det = _inputs()
    path = overfeat_panels(
        image,
        scales,
        cand,
        det,
        ["a", "b", "c"],
        tmp_path / "p.png",
        gt_boxes=np.array([[2, 2, 20, 20.0], [0, 0, 0, 0]]),
        gt_classes=np.array([2, 0]),
    )
    with Image.open(path) as png:
        assert min(png.size) > 100


def test_bad_image_raises(tmp_path):
    _, scales, cand, det = _inputs()
    with pytest.raises(ValueError, match="images must be"):
        overfeat_panels(np.zeros((48, 48)), scales, cand, det, ["a"], tmp_path / "p.png")
