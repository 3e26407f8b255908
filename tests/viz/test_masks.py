"""Instance-mask overlays: one colour per instance, the report figure and input checks."""

import numpy as np
import pytest

from jaxcv.viz.masks import instance_mask_grid, mask_figures, overlay_instances


def test_overlay_colours_each_instance_differently():
    image = np.zeros((8, 8, 3))
    masks = np.zeros((2, 8, 8), bool)
    masks[0, :4] = True
    masks[1, 4:] = True
    out = overlay_instances(image, masks)
    assert out.shape == (8, 8, 3)
    assert not np.allclose(out[0, 0], out[7, 7])  # two instances, two colours
    np.testing.assert_allclose(out[0, 0], out[3, 7])  # one instance, one colour
    with pytest.raises(ValueError, match="masks must be"):
        overlay_instances(image, masks[:, :4])


def test_mask_figures_writes_the_report_png(tmp_path):
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 2, 16, 16), np.uint8)
    masks[:, 0, 2:8, 2:8] = 1
    masks[:, 1, 9:15, 5:12] = 1
    samples = {
        "image": rng.normal(size=(3, 16, 16, 3)),
        "masks": masks,
        "classes": np.array([[1, 2]] * 3),
        "valid": np.ones((3, 2), bool),
        "pred_masks": masks.astype(bool),
        "pred_classes": np.array([[1, 3]] * 3),
        "pred_scores": np.array([[0.9, 0.2]] * 3),
        "pred_valid": np.array([[True, True]] * 3),
    }
    [(heading, path)] = mask_figures(tmp_path, samples, ["a", "b", "c"])
    assert path.exists() and path.stat().st_size > 0 and "instance masks" in heading
    with pytest.raises(ValueError, match="pred_classes must be"):
        instance_mask_grid(
            samples["image"], samples["pred_masks"], np.ones((3, 5)), ["a"], tmp_path / "x.png"
        )
