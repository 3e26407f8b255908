"""jaxcv.viz.segmentation: label colours and the report's overlays."""

import numpy as np

from jaxcv import types
from jaxcv.viz.segmentation import colorize, segmentation_figures


def test_colorize_and_figures(tmp_path):
    rgb = colorize(np.array([[0, 1, 255]]), 3)
    np.testing.assert_allclose(rgb[0, 0], 0.0)
    np.testing.assert_allclose(rgb[0, 2], 1.0)
    assert rgb[0, 1].max() > 0 and not np.allclose(rgb[0, 1], 1.0)
    rng = np.random.default_rng(6)
    samples = {
        "image": rng.normal(size=(2, 8, 8, 3)),
        "segmentation": rng.integers(0, 3, size=(2, 8, 8)),
        types.PRED_SEGMENTATION: rng.integers(0, 3, size=(2, 8, 8)),
    }
    figures = segmentation_figures(tmp_path, samples, ["a", "b"])
    assert len(figures) == 1 and figures[0][1].is_file()
    assert segmentation_figures(tmp_path, None, ["a"]) == []
