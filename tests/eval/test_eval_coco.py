"""jaxcv.eval.coco against pycocotools' COCOeval (the oracle), on random data and edge cases."""

import chex
import numpy as np
import pytest
from eval_oracles import STAT_KEYS, boxes_to_masks, pycocotools_eval, random_dataset

from jaxcv.eval import coco

TOL = 1e-6
pytest.importorskip("pycocotools")
pytestmark = pytest.mark.parity


def _ours(gts, dts, iou_type="bbox", detection_area="mask"):
    res = coco.evaluate_detailed(gts, dts, iou_type, detection_area=detection_area)
    return res, np.array([res.stats[k] for k in STAT_KEYS])


def _assert_same(gts, dts, iou_type="bbox", detection_area="mask"):
    """Stats, precision (T,R,K,A,M) and recall arrays equal pycocotools'; returns max diff.
    ``detection_area="box"``: segm results submitted with a ``bbox`` beside the mask."""
    ref = pycocotools_eval(gts, dts, iou_type, with_bbox=detection_area == "box")
    res, ours = _ours(gts, dts, iou_type, detection_area)
    np.testing.assert_allclose(ours, ref.stats, rtol=0, atol=TOL)
    np.testing.assert_allclose(res.precision, ref.eval["precision"], rtol=0, atol=TOL)
    np.testing.assert_allclose(res.recall, ref.eval["recall"], rtol=0, atol=TOL)
    np.testing.assert_array_equal(res.class_ids, ref.params.catIds)
    return float(np.abs(ours - ref.stats).max())


def grid_dataset(rng, num_images=25, num_classes=3):
    """Integer boxes on a coarse grid: exact IoU ties, IoU exactly at thresholds (0.5, 0.75),
    areas exactly on the 32^2 / 96^2 range borders, duplicate boxes and score ties."""
    gts, dts = [], []
    for _ in range(num_images):
        s = float(rng.choice([8, 12, 24]))

        def boxes(n, s=s):
            xy = rng.integers(0, 6, (n, 2))
            wh = rng.integers(1, 5, (n, 2))
            return (np.concatenate([xy, xy + wh], 1) * s).astype(np.float32)

        g = int(rng.integers(0, 8))
        gb = boxes(g)
        gb[1::4] = gb[::4][: len(gb[1::4])]  # duplicated ground truth
        d = int(rng.integers(0, 15))
        gts.append(
            {
                "boxes": gb,
                "classes": rng.integers(1, num_classes + 1, g),
                "iscrowd": rng.random(g) < 0.15,
            }
        )
        dts.append(
            {
                "boxes": boxes(d),
                "scores": rng.integers(0, 4, d) / 4.0,
                "classes": rng.integers(1, num_classes + 1, d),
            }
        )
    return gts, dts


@pytest.mark.parametrize("seed", range(8))
def test_bbox_random_matches_pycocotools(seed):
    rng = np.random.default_rng(seed)
    kw = dict(
        num_images=int(rng.integers(5, 40)),
        num_classes=int(rng.integers(2, 8)),
        max_gt=int(rng.integers(1, 25)),
        max_det=int(rng.integers(5, 150)),  # > 100 per image: maxDets truncation
        crowd_prob=float(rng.uniform(0, 0.4)),
        tie_scores=bool(seed % 2),
    )
    gts, dts = random_dataset(rng, **kw)
    _assert_same(gts, dts, "bbox")


@pytest.mark.parametrize("seed", range(4))
def test_grid_ties_and_borders_match_pycocotools(seed):
    gts, dts = grid_dataset(np.random.default_rng(100 + seed))
    _assert_same(gts, dts, "bbox")


@pytest.mark.parametrize("seed", range(3))
def test_segm_random_matches_pycocotools(seed):
    rng = np.random.default_rng(200 + seed)
    gts, dts = random_dataset(
        rng, num_images=12, num_classes=4, max_gt=8, max_det=25, masks_hw=(40, 48)
    )
    _assert_same(gts, dts, "segm")


@pytest.mark.parametrize("seed", range(2))
def test_segm_results_with_a_bbox_take_the_box_area_as_pycocotools(seed):
    """detectron2 submits masks with their box: pycocotools then sizes detections by the box,
    so APs/APm/APl move, and each form matches pycocotools on its own."""
    rng = np.random.default_rng(300 + seed)
    gts, dts = random_dataset(
        rng, num_images=12, num_classes=3, max_gt=8, max_det=25, masks_hw=(64, 80)
    )
    for d in dts:  # boxes larger than the masks, so that the two areas disagree
        d["boxes"] = np.asarray(d["boxes"], np.float64) + np.array([-6.0, -6.0, 6.0, 6.0])
    _assert_same(gts, dts, "segm", detection_area="box")
    _assert_same(gts, dts, "segm", detection_area="mask")
    by_box = coco.evaluate(gts, dts, "segm", detection_area="box")
    by_mask = coco.evaluate(gts, dts, "segm")
    assert by_box["AP"] == by_mask["AP"]  # the "all" range does not look at areas
    assert any(by_box[k] != by_mask[k] for k in ("APs", "APm", "APl", "ARs", "ARm", "ARl"))
    with pytest.raises(ValueError, match="detection_area='box' needs every detection"):
        coco.evaluate(gts, [{k: v for k, v in d.items() if k != "boxes"} for d in dts], "segm",
                      detection_area="box")  # fmt: skip


def test_bbox_with_given_areas_and_masks_present_matches():
    rng = np.random.default_rng(7)
    gts, dts = random_dataset(rng, num_images=10, masks_hw=(30, 30))
    for g in gts:  # COCO's own area field, unrelated to the box
        g["area"] = rng.uniform(0, 120**2, len(g["classes"]))
    _assert_same(gts, dts, "bbox")


def test_equal_iou_goes_to_the_later_ground_truth():
    # det 0 has IoU 9/11 with both gt A and gt B; det 1 has IoU 1 with A and 2/3 with B.
    # COCOeval keeps the *last* best gt, so det 0 takes B and det 1 still gets A: both are TPs
    # for IoU thresholds <= 0.8 (7 of 10); above, det 0 misses (FP) and det 1 takes A.
    gts = [{"boxes": np.array([[0, 0, 10, 10], [2, 0, 12, 10]], np.float32), "classes": [1, 1]}]
    dts = [
        {
            "boxes": np.array([[1, 0, 11, 10], [0, 0, 10, 10]], np.float32),
            "scores": [0.9, 0.8],
            "classes": [1, 1],
        }
    ]
    got = coco.evaluate(gts, dts)
    assert got["AP"] == pytest.approx((7 + 3 * 0.5 * 51 / 101) / 10, abs=1e-12)
    assert got["AP75"] == pytest.approx(1.0)
    _assert_same(gts, dts)


def test_crowd_matches_repeatedly_and_is_ignored():
    gts = [
        {
            "boxes": np.array([[0, 0, 100, 100], [200, 200, 240, 240]], np.float32),
            "classes": [1, 1],
            "iscrowd": [True, False],
        }
    ]
    inside = [[10 * k, 10 * k, 10 * k + 20, 10 * k + 20] for k in range(4)]
    dts = [
        {
            "boxes": np.array([*inside, [200, 200, 240, 240]], np.float32),
            "scores": [0.9, 0.8, 0.7, 0.6, 0.5],
            "classes": [1] * 5,
        }
    ]
    got = coco.evaluate(gts, dts)
    # detections inside the crowd region are ignored, not false positives: AP = 1
    assert got["AP"] == pytest.approx(1.0)
    _assert_same(gts, dts)


def test_empty_images_and_one_sided_classes():
    rng = np.random.default_rng(3)
    gts, dts = random_dataset(rng, num_images=15, num_classes=4)
    empty_gt = {"boxes": np.zeros((0, 4)), "classes": np.zeros(0, int)}
    empty_dt = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "classes": np.zeros(0, int)}
    gts[0], dts[1] = empty_gt, empty_dt
    gts[2], dts[2] = empty_gt, empty_dt
    gts.append({"boxes": np.array([[0, 0, 50, 50]], np.float32), "classes": [9]})  # GT only
    dts.append({"boxes": np.array([[0, 0, 50, 50]], np.float32), "scores": [1.0], "classes": [11]})
    _assert_same(gts, dts)


def test_no_detections_at_all_and_no_ground_truth_at_all():
    gts = [{"boxes": np.array([[0, 0, 40, 40]], np.float32), "classes": [1]}]
    none = [{"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "classes": np.zeros(0, int)}]
    got = coco.evaluate(gts, none)  # pycocotools' loadRes cannot take an empty list
    assert got["AP"] == 0.0 and got["AR100"] == 0.0 and got["APs"] == -1.0
    no_gt = [{"boxes": np.zeros((0, 4)), "classes": np.zeros(0, int)}]
    dts = [{"boxes": np.array([[0, 0, 40, 40]]), "scores": [0.5], "classes": [1]}]
    assert all(v == -1.0 for v in coco.evaluate(no_gt, dts).values())
    assert all(v == -1.0 for v in coco.evaluate([], []).values())


def test_valid_padding_is_dropped():
    rng = np.random.default_rng(11)
    gts, dts = random_dataset(rng, num_images=8)
    padded_g = [
        {
            "boxes": np.concatenate([g["boxes"], np.zeros((3, 4), np.float32)]),
            "classes": np.concatenate([g["classes"], np.zeros(3, np.int32)]),
            "iscrowd": np.concatenate([g["iscrowd"], np.zeros(3, bool)]),
            "valid": np.r_[np.ones(len(g["classes"]), bool), np.zeros(3, bool)],
        }
        for g in gts
    ]
    padded_d = [
        {
            "boxes": np.concatenate([d["boxes"], np.ones((2, 4), np.float32)]),
            "scores": np.concatenate([d["scores"], np.ones(2, np.float32)]),
            "classes": np.concatenate([d["classes"], np.ones(2, np.int32)]),
            "valid": np.r_[np.ones(len(d["scores"]), bool), np.zeros(2, bool)],
        }
        for d in dts
    ]
    assert coco.evaluate(padded_g, padded_d) == coco.evaluate(gts, dts)


def _xywh(b):
    b = np.asarray(b, np.float64)  # float64 first, as jaxcv and the oracle do
    return np.c_[b[:, :2], b[:, 2:] - b[:, :2]]


def _rles(masks):
    from pycocotools import mask as mask_utils

    return mask_utils.encode(np.asfortranarray(masks.astype(np.uint8).transpose(1, 2, 0)))


def test_box_and_mask_iou_equal_pycocotools():
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(5)
    gts, dts = random_dataset(rng, num_images=3, masks_hw=(37, 29))
    for g, d in zip(gts, dts, strict=True):
        if not len(g["classes"]) or not len(d["scores"]):
            continue
        crowd = g["iscrowd"].astype(np.uint8)
        ref = mask_utils.iou(_xywh(d["boxes"]), _xywh(g["boxes"]), crowd)
        got = coco.box_iou_coco(d["boxes"], g["boxes"], g["iscrowd"])
        chex.assert_shape(got, (len(d["scores"]), len(g["classes"])))
        np.testing.assert_array_equal(got, ref)
        ref = mask_utils.iou(_rles(d["masks"]), _rles(g["masks"]), crowd)
        np.testing.assert_array_equal(coco.mask_iou_coco(d["masks"], g["masks"], crowd), ref)


def test_per_class_ap_and_keys():
    rng = np.random.default_rng(2)
    gts, dts = random_dataset(rng, num_images=10, num_classes=3)
    res = coco.evaluate_detailed(gts, dts)
    assert tuple(res.stats) == STAT_KEYS
    chex.assert_shape(res.precision, (10, 101, len(res.class_ids), 4, 3))
    per = res.per_class_ap()
    defined = [v for v in per.values() if v > -1]
    # COCO AP is the mean over classes of per-class AP (each averaged over T and R)
    assert np.mean(defined) == pytest.approx(res.stats["AP"], abs=1e-12)
    custom = coco.evaluate(gts, dts, max_dets=(5, 50))
    assert {"AR5", "AR50"} <= set(custom) and "AR100" not in custom


def test_segm_masks_of_many_objects():
    # mask IoU through the matrix product on bigger canvases, crowd masks included
    rng = np.random.default_rng(9)
    gts, dts = random_dataset(rng, num_images=4, max_gt=20, max_det=60, masks_hw=(96, 80))
    gts[0]["masks"] = boxes_to_masks(rng, gts[0]["boxes"], (96, 80))
    _assert_same(gts, dts, "segm")


@pytest.mark.parametrize(
    ("gts", "dts", "kw", "match"),
    [
        ([{"boxes": np.zeros((2, 3)), "classes": [1, 1]}], None, {}, r"\(N, 4\).*\(2, 3\)"),
        ([{"boxes": np.zeros((2, 4)), "classes": [1]}], None, {}, "boxes"),
        ([{"classes": [1]}], None, {}, "boxes"),
        ([{"boxes": np.zeros((1, 4)), "classes": [1]}], None, {"iou_type": "segm"}, "masks"),
        ([{"boxes": np.zeros((1, 4)), "classes": [1]}], None, {"iou_type": "keypoints"}, "iou"),
        ([{"boxes": np.zeros((1, 4)), "classes": [1]}], [], {}, "1 images"),
        (
            [{"boxes": np.zeros((1, 4)), "classes": [1]}],
            [{"boxes": np.zeros((1, 4)), "scores": [np.nan], "classes": [1]}],
            {},
            "NaN",
        ),
    ],
)
def test_bad_inputs_raise(gts, dts, kw, match):
    if dts is None:
        dts = [{"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "classes": np.zeros(0)}]
    with pytest.raises(ValueError, match=match):
        coco.evaluate(gts, dts, **kw)


def test_mask_iou_without_numpy_bitwise_count(monkeypatch):
    rng = np.random.default_rng(4)
    d = rng.random((5, 13, 11)) < 0.4
    g = rng.random((3, 13, 11)) < 0.4
    crowd = np.array([False, True, False])
    fast = coco.mask_iou_coco(d, g, crowd)
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    np.testing.assert_array_equal(coco.mask_iou_coco(d, g, crowd), fast)
    inter = (d[:, None] & g[None]).sum((2, 3))
    union = np.where(crowd, d.sum((1, 2))[:, None], (d[:, None] | g[None]).sum((2, 3)))
    np.testing.assert_allclose(fast, inter / union, rtol=1e-15)


def test_perfect_detections_score_one():
    rng = np.random.default_rng(12)
    gts, _ = random_dataset(rng, num_images=10, num_classes=4, crowd_prob=0.0)
    dts = [
        {"boxes": g["boxes"], "scores": rng.random(len(g["classes"])), "classes": g["classes"]}
        for g in gts
    ]
    got = coco.evaluate(gts, dts)
    for k in ("AP", "AP50", "AP75", "AR100"):
        assert got[k] == pytest.approx(1.0), k
    _assert_same(gts, dts)
