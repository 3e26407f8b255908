"""COCO/VOC file formats and COCO RLE: round trips, and pycocotools as the oracle."""

import contextlib
import io
import json

import numpy as np
import pytest
from eval_oracles import STAT_KEYS, random_dataset

from jaxcv.eval import coco, formats, rle, voc


def _mask_utils():
    return pytest.importorskip("pycocotools.mask")


def test_rle_encode_decode_area_equal_pycocotools():
    mu = _mask_utils()
    rng = np.random.default_rng(0)
    cases = [np.zeros((4, 5), bool), np.ones((3, 7), bool), np.zeros((0, 3), bool)]
    cases += [rng.random(tuple(rng.integers(1, 40, 2))) < rng.uniform() for _ in range(40)]
    for m in cases:
        ref = mu.encode(np.asfortranarray(m.astype(np.uint8)))
        got = rle.encode(m)
        assert got["counts"] == ref["counts"].decode() and got["size"] == list(ref["size"])
        np.testing.assert_array_equal(rle.decode(ref), m)
        np.testing.assert_array_equal(rle.decode(got), m)
        assert rle.area(got) == mu.area(ref)
    # uncompressed counts (crowd annotations) decode too
    m = cases[5]
    unc = {"size": list(m.shape), "counts": rle.counts(rle.encode(m)).tolist()}
    np.testing.assert_array_equal(rle.decode(unc), m)


def test_polygons_rasterise_like_pycocotools():
    mu = _mask_utils()
    rng = np.random.default_rng(1)
    for it in range(60):
        h, w = (int(v) for v in rng.integers(5, 50, 2))
        polys = []
        for _ in range(int(rng.integers(1, 3))):
            k = int(rng.integers(3, 9))
            p = rng.uniform(-4, max(h, w) + 4, 2 * k).round(int(rng.integers(0, 3))).tolist()
            if it % 7 == 0:
                p = p[:2] + p  # a repeated vertex
            polys.append(p)
        ref = mu.decode(mu.merge(mu.frPyObjects(polys, h, w))).astype(bool)
        np.testing.assert_array_equal(rle.from_polygons(polys, h, w), ref, err_msg=str(it))


def test_rle_bad_inputs():
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        rle.encode(np.zeros((2, 3, 4), bool))
    with pytest.raises(ValueError, match="sum to"):
        rle.decode({"size": [2, 2], "counts": [1, 2]})
    with pytest.raises(ValueError, match="polygon"):
        rle.from_polygons([[0, 0, 1, 1]], 4, 4)


def test_coco_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    gts, dts = random_dataset(rng, num_images=6, masks_hw=(20, 24))
    ids = [10 * (i + 1) for i in range(6)]
    formats.save_json(formats.to_coco_ground_truth(gts, ids), tmp_path / "gt.json")
    formats.save_json(formats.to_coco_results(dts, ids), tmp_path / "res.json")
    back = formats.load_coco_ground_truth(tmp_path / "gt.json", with_masks=True)
    assert back.image_ids == ids and back.image_sizes == [(20, 24)] * 6
    dets = formats.load_coco_results(tmp_path / "res.json", back.image_ids)
    for g, b in zip(gts, back.ground_truth, strict=True):
        np.testing.assert_allclose(b["boxes"], g["boxes"], atol=1e-4)
        np.testing.assert_array_equal(b["classes"], g["classes"])
        np.testing.assert_array_equal(b["iscrowd"], g["iscrowd"])
        np.testing.assert_array_equal(b["masks"], g["masks"])
        np.testing.assert_array_equal(b["area"], g["masks"].sum((1, 2)))
    for d, b in zip(dts, dets, strict=True):
        np.testing.assert_allclose(b["boxes"], d["boxes"], atol=1e-4)
        np.testing.assert_array_equal(b["scores"], d["scores"])
        np.testing.assert_array_equal(b["classes"], d["classes"])
    segm = formats.to_coco_results(dts, ids, iou_type="segm")
    assert all("bbox" not in r for r in segm)
    masks = formats.load_coco_results(segm, ids, image_sizes=back.image_sizes, with_masks=True)
    for d, b in zip(dts, masks, strict=True):
        np.testing.assert_array_equal(b["masks"], d["masks"])
    assert coco.evaluate(gts, dts, "segm") == coco.evaluate(back.ground_truth, masks, "segm")
    with_box = formats.to_coco_results(dts, ids, iou_type="segm", detection_area="box")
    assert all("bbox" in r and "segmentation" in r for r in with_box)
    both = formats.load_coco_results(with_box, ids, image_sizes=back.image_sizes, with_masks=True)
    for d, b in zip(dts, both, strict=True):
        np.testing.assert_allclose(b["boxes"], d["boxes"], atol=1e-4)
        np.testing.assert_array_equal(b["masks"], d["masks"])


@pytest.mark.parity
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_user_files_evaluate_like_pycocotools(tmp_path, iou_type):
    """The user flow: a COCO GT file (polygon masks, own area field) and a results file."""
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(3)
    gts, dts = random_dataset(rng, num_images=10, num_classes=3, masks_hw=(64, 64))
    gt_json = formats.to_coco_ground_truth(gts)
    for ann in gt_json["annotations"]:
        if not ann["iscrowd"]:  # polygons for ordinary objects, RLE stays for crowds
            x, y, w, h = ann["bbox"]
            x, y, w, h = x * 0.32, y * 0.32, max(w * 0.32, 2), max(h * 0.32, 2)
            ann["segmentation"] = [[x, y, x + w, y, x + w / 2, y + h]]
        ann["area"] = float(rng.uniform(0, 150**2))
    formats.save_json(gt_json, tmp_path / "gt.json")
    formats.save_json(formats.to_coco_results(dts, iou_type=iou_type), tmp_path / "res.json")

    with contextlib.redirect_stdout(io.StringIO()):
        ref_gt = COCO(str(tmp_path / "gt.json"))
        ev = COCOeval(ref_gt, ref_gt.loadRes(str(tmp_path / "res.json")), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    segm = iou_type == "segm"
    gt = formats.load_coco_ground_truth(tmp_path / "gt.json", with_masks=segm)
    dets = formats.load_coco_results(
        tmp_path / "res.json", gt.image_ids, image_sizes=gt.image_sizes, with_masks=segm
    )
    got = coco.evaluate(gt.ground_truth, dets, iou_type)
    np.testing.assert_allclose([got[k] for k in STAT_KEYS], ev.stats, rtol=0, atol=1e-6)


def test_coco_loader_errors(tmp_path):
    with pytest.raises(ValueError, match="annotations"):
        formats.load_coco_ground_truth({"images": []})
    with pytest.raises(ValueError, match="image_id 7"):
        formats.load_coco_results([{"image_id": 7, "category_id": 1, "score": 1.0}], [1])
    with pytest.raises(ValueError, match="list"):
        formats.load_coco_results({"image_id": 1}, [1])
    with pytest.raises(ValueError, match="image_sizes"):
        formats.load_coco_results([], [1], with_masks=True)


VOC_XML = """<annotation>
  <filename>000001.jpg</filename>
  <size><width>353</width><height>500</height><depth>3</depth></size>
  <object><name>dog</name><difficult>0</difficult>
    <bndbox><xmin>48</xmin><ymin>240</ymin><xmax>195</xmax><ymax>371</ymax></bndbox></object>
  <object><name>person</name><difficult>1</difficult>
    <bndbox><xmin>8</xmin><ymin>12</ymin><xmax>352</xmax><ymax>498</ymax></bndbox></object>
</annotation>"""


def test_voc_annotation_and_results_files(tmp_path):
    names = ["cat", "dog", "person"]
    (tmp_path / "000001.xml").write_text(VOC_XML)
    cont = formats.load_voc_annotation(tmp_path / "000001.xml", names)
    raw = formats.load_voc_annotation(tmp_path / "000001.xml", names, coordinates="devkit")
    np.testing.assert_array_equal(raw["boxes"], [[48, 240, 195, 371], [8, 12, 352, 498]])
    np.testing.assert_array_equal(cont["boxes"], [[47, 239, 195, 371], [7, 11, 352, 498]])
    np.testing.assert_array_equal(cont["classes"], [2, 3])
    np.testing.assert_array_equal(cont["difficult"], [False, True])
    (tmp_path / "det_dog.txt").write_text("000001 0.9 50 240 195 371\n000001 0.4 100 100 120 120\n")
    (tmp_path / "det_person.txt").write_text("000001 0.8 8 12 352 498\n")
    files = {2: tmp_path / "det_dog.txt", 3: tmp_path / "det_person.txt"}
    d_cont = formats.load_voc_results(files, ["000001"])
    d_raw = formats.load_voc_results(files, ["000001"], coordinates="devkit")
    np.testing.assert_array_equal(d_cont[0]["classes"], [2, 2, 3])
    a = voc.evaluate([cont], d_cont)
    b = voc.evaluate([raw], d_raw, pixel_inclusive=True)
    assert a["AP"][2] == b["AP"][2] and np.isnan(b["AP"][3])
    assert a["AP"][2] == pytest.approx(1.0) and np.isnan(a["AP"][3])
    with pytest.raises(ValueError, match="unknown class"):
        formats.load_voc_annotation(tmp_path / "000001.xml", ["cat"])
    (tmp_path / "bad.txt").write_text("000002 0.9 1 2 3 4\n")
    with pytest.raises(ValueError, match="unknown image id"):
        formats.load_voc_results({1: tmp_path / "bad.txt"}, ["000001"])


def test_json_is_plain(tmp_path):
    gts, dts = random_dataset(np.random.default_rng(5), num_images=2)
    text = json.dumps(formats.to_coco_ground_truth(gts)) + json.dumps(formats.to_coco_results(dts))
    assert "NaN" not in text
