"""jaxcv.eval.voc against a float64 transcription of py-faster-rcnn's ``voc_eval``."""

import numpy as np
import pytest
from eval_oracles import random_dataset

from jaxcv.eval import voc


def ref_voc_ap(rec, prec, use_07_metric):
    """py-faster-rcnn's ``voc_ap``, verbatim in substance."""
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = 0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
            ap = ap + p / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def ref_voc_eval(gts, dts, cls, ovthresh=0.5, use_07_metric=True, plus_one=True):
    """py-faster-rcnn's ``voc_eval`` for one class, a detection loop in float64.

    The only change: a stable sort of ``-confidence`` (the original's quicksort leaves equal
    scores in an unspecified order); ``plus_one=False`` drops the devkit's +1 on widths.
    """
    one = 1.0 if plus_one else 0.0
    class_recs, npos = {}, 0
    for i, g in enumerate(gts):
        m = np.asarray(g["classes"]) == cls
        difficult = np.asarray(g.get("difficult", np.zeros(len(m), bool)), bool)[m]
        class_recs[i] = {
            "bbox": np.asarray(g["boxes"], np.float64)[m],
            "difficult": difficult,
            "det": [False] * int(m.sum()),
        }
        npos += int(np.sum(~difficult))
    image_ids, confidence, bbs = [], [], []
    for i, d in enumerate(dts):
        for j in np.flatnonzero(np.asarray(d["classes"]) == cls):
            image_ids.append(i)
            confidence.append(float(d["scores"][j]))
            bbs.append(np.asarray(d["boxes"][j], np.float64))
    sorted_ind = np.argsort(-np.asarray(confidence), kind="mergesort")
    bb_all = np.asarray(bbs).reshape(-1, 4)[sorted_ind]
    image_ids = [image_ids[x] for x in sorted_ind]
    nd = len(image_ids)
    tp, fp = np.zeros(nd), np.zeros(nd)
    for d in range(nd):
        r = class_recs[image_ids[d]]
        bb = bb_all[d]
        ovmax = -np.inf
        bbgt = r["bbox"]
        if bbgt.size > 0:
            ixmin = np.maximum(bbgt[:, 0], bb[0])
            iymin = np.maximum(bbgt[:, 1], bb[1])
            ixmax = np.minimum(bbgt[:, 2], bb[2])
            iymax = np.minimum(bbgt[:, 3], bb[3])
            iw = np.maximum(ixmax - ixmin + one, 0.0)
            ih = np.maximum(iymax - iymin + one, 0.0)
            inters = iw * ih
            uni = (
                (bb[2] - bb[0] + one) * (bb[3] - bb[1] + one)
                + (bbgt[:, 2] - bbgt[:, 0] + one) * (bbgt[:, 3] - bbgt[:, 1] + one)
                - inters
            )
            overlaps = inters / uni
            ovmax = np.max(overlaps)
            jmax = np.argmax(overlaps)
        if ovmax > ovthresh:
            if not r["difficult"][jmax]:
                if not r["det"][jmax]:
                    tp[d] = 1.0
                    r["det"][jmax] = 1
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    if npos == 0:
        return float("nan")
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return ref_voc_ap(rec, prec, use_07_metric)


def _with_difficult(rng, gts):
    for g in gts:
        g["difficult"] = rng.random(len(g["classes"])) < 0.2
        g.pop("iscrowd", None)
    return gts


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("use_07", [True, False])
def test_random_matches_reference(seed, use_07):
    rng = np.random.default_rng(seed)
    gts, dts = random_dataset(rng, num_images=25, num_classes=5, tie_scores=bool(seed % 2))
    gts = _with_difficult(rng, gts)
    pixel_inclusive = bool(seed % 3 == 0)
    thr = [0.5, 0.3, 0.7][seed % 3]
    got = voc.evaluate(gts, dts, thr, use_07, pixel_inclusive=pixel_inclusive)
    classes = sorted(set(np.concatenate([g["classes"] for g in gts]).tolist()))
    assert sorted(got["AP"]) == classes
    ref = {c: ref_voc_eval(gts, dts, c, thr, use_07, pixel_inclusive) for c in classes}
    for c in classes:
        np.testing.assert_allclose(got["AP"][c], ref[c], rtol=0, atol=1e-12, equal_nan=True)
    assert got["mAP"] == pytest.approx(np.nanmean(list(ref.values())), abs=1e-12)


def test_hand_computed_small_case():
    # one image, class 1: three gts (one difficult); four detections ranked by score:
    #   d0 hits g0 (TP), d1 duplicates g0 (FP), d2 hits the difficult g2 (ignored),
    #   d3 misses everything (FP). npos = 2: g1 is never found.
    gts = [
        {
            "boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], np.float32),
            "classes": [1, 1, 1],
            "difficult": [False, False, True],
        }
    ]
    dts = [
        {
            "boxes": np.array(
                [[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 61], [80, 80, 90, 90]], np.float32
            ),
            "scores": [0.9, 0.8, 0.7, 0.6],
            "classes": [1, 1, 1, 1],
        }
    ]
    # ranked: TP, FP, (ignored), FP -> recall 0.5, 0.5, 0.5; precision 1, 0.5, 1/3
    got07 = voc.evaluate(gts, dts, use_07_metric=True)
    assert got07["AP"][1] == pytest.approx(6 / 11)  # t = 0, 0.1, ..., 0.5: max precision 1
    got10 = voc.evaluate(gts, dts, use_07_metric=False)
    assert got10["AP"][1] == pytest.approx(0.5)
    assert got10["mAP"] == pytest.approx(0.5)


def test_threshold_is_strict_and_pixel_convention():
    # IoU exactly 0.5 in continuous coordinates: not a match (the devkit's '>')
    gts = [{"boxes": np.array([[0, 0, 10, 10]], np.float32), "classes": [2]}]
    dts = [{"boxes": np.array([[0, 0, 10, 5]], np.float32), "scores": [1.0], "classes": [2]}]
    assert voc.evaluate(gts, dts)["AP"][2] == 0.0
    # with +1 pixels the same boxes give 66/121 > 0.5
    assert voc.evaluate(gts, dts, pixel_inclusive=True)["AP"][2] == pytest.approx(1.0)


def test_continuous_edges_equal_devkit_inclusive():
    rng = np.random.default_rng(4)
    gts, dts = random_dataset(rng, num_images=15, num_classes=3)
    to_int = lambda b: np.round(b).astype(np.float32)
    for x in gts + dts:
        x["boxes"] = to_int(x["boxes"])
        x["boxes"][:, 2:] = np.maximum(x["boxes"][:, 2:], x["boxes"][:, :2])
    shift = lambda b: b - np.array([1, 1, 0, 0], np.float32)  # [xmin - 1, xmax]
    cont_g = [{**g, "boxes": shift(g["boxes"])} for g in gts]
    cont_d = [{**d, "boxes": shift(d["boxes"])} for d in dts]
    a = voc.evaluate(gts, dts, pixel_inclusive=True)
    b = voc.evaluate(cont_g, cont_d, pixel_inclusive=False)
    assert a["AP"] == pytest.approx(b["AP"], abs=1e-12)


def test_class_selection_and_all_difficult_class():
    gts = [
        {
            "boxes": np.array([[0, 0, 10, 10], [0, 0, 5, 5]], np.float32),
            "classes": [1, 3],
            "difficult": [False, True],
        }
    ]
    dts = [
        {
            "boxes": np.array([[0, 0, 10, 10], [0, 0, 5, 5]], np.float32),
            "scores": [0.5, 0.5],
            "classes": [1, 3],
        }
    ]
    got = voc.evaluate(gts, dts)
    assert got["AP"][1] == pytest.approx(1.0) and np.isnan(got["AP"][3])
    assert got["mAP"] == pytest.approx(1.0)
    only2 = voc.evaluate(gts, dts, classes=[1, 2])
    assert set(only2["AP"]) == {1, 2} and only2["AP"][2] != only2["AP"][2]


def test_voc_ap_matches_reference_on_random_curves():
    rng = np.random.default_rng(0)
    for _ in range(20):
        hits = rng.random(30) < 0.5
        tp, fp = np.cumsum(hits), np.cumsum(~hits)
        rec = tp / max(hits.sum() + 3, 1)
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        for use_07 in (True, False):
            assert voc.voc_ap(rec, prec, use_07) == pytest.approx(
                ref_voc_ap(rec, prec, use_07), abs=1e-15
            )


def test_bad_inputs_raise():
    g = [{"boxes": np.zeros((1, 4)), "classes": [1]}]
    with pytest.raises(ValueError, match="detections has 2"):
        voc.evaluate(g, [{}, {}])
    with pytest.raises(ValueError, match="iou_threshold"):
        voc.evaluate(g, [{"boxes": np.zeros((0, 4)), "scores": [], "classes": []}], 1.5)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        voc.evaluate(g, [{"boxes": np.zeros((1, 5)), "scores": [1.0], "classes": [1]}])
    with pytest.raises(ValueError, match="recall and precision"):
        voc.voc_ap(np.zeros(3), np.zeros(2))


def test_no_ground_truth_anywhere():
    gts = [{"boxes": np.zeros((0, 4)), "classes": np.zeros(0, int)}]
    dts = [{"boxes": np.array([[0, 0, 5, 5]]), "scores": [0.3], "classes": [1]}]
    got = voc.evaluate(gts, dts, classes=[1])
    assert np.isnan(got["AP"][1]) and np.isnan(got["mAP"])
    default = voc.evaluate(gts, dts)  # default classes: those with ground truth -> none
    assert default["AP"] == {} and np.isnan(default["mAP"])


def test_perfect_detections_score_one():
    rng = np.random.default_rng(8)
    gts, _ = random_dataset(rng, num_images=10, num_classes=4)
    dts = [
        {"boxes": g["boxes"], "scores": rng.random(len(g["classes"])), "classes": g["classes"]}
        for g in gts
    ]
    for use_07 in (True, False):
        got = voc.evaluate(gts, dts, use_07_metric=use_07)
        assert got["mAP"] == pytest.approx(1.0)
