"""DetectionAccumulator: padded batches give the same metrics as the per-image lists."""

import numpy as np
import pytest
from eval_oracles import random_dataset

from jaxcv.eval import coco, voc
from jaxcv.eval.detection import DetectionAccumulator


def _pad(items, key, n, fill=0):
    out = []
    for x in items:
        a = np.asarray(x[key])
        pad = np.full((n - len(a), *a.shape[1:]), fill, a.dtype)
        out.append(np.concatenate([a, pad]))
    return np.stack(out)


def test_padded_batches_equal_lists():
    rng = np.random.default_rng(0)
    gts, dts = random_dataset(rng, num_images=10, num_classes=4, masks_hw=(16, 16))
    acc = DetectionAccumulator()
    m = max(len(g["classes"]) for g in gts) + 2
    d = max(len(x["scores"]) for x in dts) + 3
    for s in range(0, 10, 4):  # batches of 4, the last one padded with 2 fake images
        g, x = gts[s : s + 4], dts[s : s + 4]
        ex = np.r_[np.ones(len(g), bool), np.zeros(4 - len(g), bool)]
        g = g + [g[0]] * (4 - len(g))
        x = x + [x[0]] * (4 - len(x))
        acc.add(
            gt_boxes=_pad(g, "boxes", m),
            gt_classes=_pad(g, "classes", m),
            gt_iscrowd=_pad(g, "iscrowd", m),
            gt_masks=_pad(g, "masks", m),
            det_boxes=_pad(x, "boxes", d),
            det_scores=_pad(x, "scores", d, fill=0.99),  # padding would score high if kept
            det_classes=_pad(x, "classes", d, fill=1),
            det_valid=np.stack([np.arange(d) < len(y["scores"]) for y in x]),
            det_masks=_pad(x, "masks", d),
            example_valid=ex,
        )
    assert len(acc) == 10
    assert acc.coco() == coco.evaluate(gts, dts)
    assert acc.coco("segm") == coco.evaluate(gts, dts, "segm")
    a, b = acc.voc(), voc.evaluate(gts, dts)
    assert a["mAP"] == b["mAP"]
    acc.reset()
    assert len(acc) == 0


def test_bad_shapes_raise():
    acc = DetectionAccumulator()
    with pytest.raises(ValueError, match="gt_classes"):
        acc.add(
            gt_boxes=np.zeros((2, 3, 4)),
            gt_classes=np.zeros((3, 3)),
            det_boxes=np.zeros((2, 5, 4)),
            det_scores=np.zeros((2, 5)),
            det_classes=np.zeros((2, 5)),
        )
