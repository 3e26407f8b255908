"""torchvision's fasterrcnn_resnet50_fpn end to end against jaxcv.predict's Detector.

A seeded random-init torchvision detector (91 classes) is saved as a .pth, converted with
``jaxcv convert torchvision fasterrcnn_resnet50_fpn``, loaded with ``load_detector`` and run on
scikit-image's photographs (the astronaut, 512x512, and the coffee cup, 400x600), resized small
by the model's own ``min_size`` / ``max_size`` (160 / 224) for speed. Both sides get the same
uint8 images; torchvision's detections (its transform, RPN, RoI heads, post-processing and
boxes mapped back to the original size) must be jaxcv's: the same count, labels and order,
boxes within 1e-2 original pixels, scores within 1e-4.

The weights are conditioned as a trained detector's are: the RPN's and the box head's delta
layers are scaled down (x0.2, x0.3: random init gives deltas of std 2-4, boxes scaled by up to
``exp(4)``, which would amplify float32 rounding far beyond what a trained model sees), and the
class logits are scaled (x0.15: ~20 detections per image decided by the 0.05 threshold; x1: the
top 100 of many, decided by ``box_detections_per_img``). Two detections whose scores tie to
within 2e-5 may come out in either order (both sides sort float32 scores that differ in the
last bits), and so may the 100th and the 101st (torchvision is asked for EXTRA more detections,
a longer list with the same prefix, so that its 101st is known); such swaps are counted and
must stay rare.
"""

import functools
import re

import numpy as np
import pytest
import skimage.data

from jaxcv import cli
from jaxcv.eval.coco_categories import COCO_CATEGORY_NAMES
from jaxcv.predict import load_detector
from jaxcv.predict.detector import Detector, DetectorSettings, roi_image_size

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from .detector_parity import torch_detector  # noqa: E402

pytestmark = pytest.mark.parity

MIN_SIZE, MAX_SIZE = 160, 224
BOX_ATOL, SCORE_ATOL, TIE = 1e-2, 1e-4, 2e-5
LIMIT, EXTRA = 100, 5  # box_detections_per_img, and the torchvision detections past it


def _photos():
    return [skimage.data.astronaut(), skimage.data.coffee()]


def _torch_detector(cls_factor: float):
    return torch_detector("fasterrcnn_resnet50_fpn", cls_factor=cls_factor, box_factor=0.3)


@functools.cache
def _case(cls_factor: float, tmp_dir: str):
    """The torchvision detector, and the jaxcv Detector converted from its saved .pth through
    the command line."""
    tdet = _torch_detector(cls_factor)
    checkpoint = f"{tmp_dir}/frcnn_{cls_factor}.pth"
    out_dir = f"{tmp_dir}/converted_{cls_factor}"
    torch.save(tdet.state_dict(), checkpoint)
    args = ["convert", "torchvision", "fasterrcnn_resnet50_fpn", checkpoint, out_dir]
    assert cli.main([*args, "--frozen-bn-eps", "1e-5"]) == 0  # random init: BatchNorm2d
    return tdet, load_detector(out_dir, min_size=MIN_SIZE, max_size=MAX_SIZE)


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("frcnn"))


def _torch_detect(tdet, images):
    """torchvision's detections, EXTRA more than jaxcv's LIMIT (the same first LIMIT)."""
    tensors = [torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in images]
    tdet.roi_heads.detections_per_img = LIMIT + EXTRA
    with torch.no_grad():
        return [{k: v.numpy() for k, v in out.items()} for out in tdet(tensors)]


def _assert_same_detections(actual, expected) -> int:
    """Same count, then rank by rank the same label and box (and score within SCORE_ATOL), or
    where the two sides order a near-tie (scores within TIE) differently, a one-to-one match
    among the tied detections (torchvision's past LIMIT included). Returns the number of such
    swapped ranks."""
    boxes, scores, labels = expected["boxes"], expected["scores"], expected["labels"]
    n = min(len(scores), LIMIT)
    assert len(actual["scores"]) == len(actual["boxes"]) == len(actual["labels"]) == n
    assert actual["boxes"].shape == (n, 4) and actual["boxes"].dtype == np.float32
    assert actual["labels"].dtype == np.int64
    assert actual["names"] == [COCO_CATEGORY_NAMES[k] for k in actual["labels"]]
    np.testing.assert_allclose(actual["scores"], scores[:n], rtol=0, atol=SCORE_ATOL)
    close = np.all(np.abs(actual["boxes"][:, None] - boxes[None]) <= BOX_ATOL, axis=-1)
    close &= actual["labels"][:, None] == labels[None]
    in_order = close[np.arange(n), np.arange(n)]
    tied = np.abs(actual["scores"][:, None] - scores[None]) <= TIE
    match = np.argmax(close & tied, axis=1)
    assert np.all(in_order | (close & tied)[np.arange(n), match]), np.flatnonzero(~in_order)
    match = np.where(in_order, np.arange(n), match)
    assert len(set(match.tolist())) == n  # one to one
    return int(np.sum(~in_order))


@pytest.mark.parametrize("cls_factor", [0.15, 1.0])
def test_detections_equal_torchvision(cls_factor, tmp_dir):
    tdet, detector = _case(cls_factor, tmp_dir)
    photos = _photos()
    # One image per batch: padded to its own multiple of 32, as torchvision([image]).
    expected = [_torch_detect(tdet, [im])[0] for im in photos]
    actual = detector(photos)
    swaps = [_assert_same_detections(a, e) for a, e in zip(actual, expected, strict=True)]
    counts = [len(e["scores"]) for e in expected]
    if cls_factor < 1:  # the score threshold decides
        assert all(5 <= c < LIMIT for c in counts), counts
        assert all(np.all(e["scores"] > 0.05) for e in expected)
    else:  # box_detections_per_img decides
        assert counts == [LIMIT + EXTRA] * 2
    assert sum(swaps) <= 2, swaps
    # Boxes in original pixels: the coffee photo (400x600) was resized to 149x224.
    assert np.max(actual[1]["boxes"][:, 2]) > 224 and np.max(actual[1]["boxes"][:, 3]) > 149


@pytest.mark.parametrize("cls_factor", [0.15, 1.0])
def test_batches_equal_torchvision_batches(cls_factor, tmp_dir):
    """Two images per batch, padded together as torchvision pads a list of images (each
    clipped to its own size); a short last batch is filled with a blank image."""
    tdet, detector = _case(cls_factor, tmp_dir)
    astronaut, coffee = _photos()
    expected = _torch_detect(tdet, [coffee, astronaut]) + _torch_detect(tdet, [coffee])
    actual = detector([coffee, astronaut, coffee], batch_size=2)
    swaps = [_assert_same_detections(a, e) for a, e in zip(actual, expected, strict=True)]
    assert sum(swaps) <= 2, swaps


def test_category_names_are_torchvision_s():
    weights = torchvision.models.detection.FasterRCNN_ResNet50_FPN_Weights.COCO_V1
    assert list(COCO_CATEGORY_NAMES) == weights.meta["categories"]


def test_roi_image_size_keeps_torchvision_s_scales():
    assert roi_image_size((160, 224), np.array([[149, 224], [160, 160]])) == (160, 224)
    assert roi_image_size((800, 1216), np.array([[800, 1199]])) == (800, 1216)
    # A tiny image: its levels' scales differ between the padded and the true size.
    assert roi_image_size((64, 64), np.array([[33, 40]])) == (33, 40)


def test_bad_inputs_and_other_checkpoints(tmp_dir, tmp_path):
    _, detector = _case(0.15, tmp_dir)
    with pytest.raises(ValueError, match=r"images\[1\] must have shape \(H, W, 3\)"):
        detector([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)])
    with pytest.raises(ValueError, match="images must be a list of"):
        detector(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        detector([np.zeros((8, 8, 3), np.uint8)], batch_size=0)
    with pytest.raises(ValueError, match=r"unknown detector setting\(s\) \['min_sz'\]"):
        load_detector(f"{tmp_dir}/converted_0.15", min_sz=3)
    with pytest.raises(ValueError, match="box_score_thresh must be a number in"):
        DetectorSettings(box_score_thresh=2.0)
    with pytest.raises(ValueError, match="category_names needs 91 names"):
        Detector(detector.model, detector.variables, category_names=["a", "b"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_detector(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"is not a converted checkpoint.*jaxcv convert"):
        load_detector(tmp_path)
    # A converted classifier is not a detector.
    resnet = torchvision.models.resnet18(weights=None, num_classes=3)
    torch.save(resnet.state_dict(), tmp_path / "r18.pth")
    assert (
        cli.main(
            ["convert", "torchvision", "resnet18", str(tmp_path / "r18.pth"), str(tmp_path / "r18")]
        )
        == 0
    )
    with pytest.raises(ValueError, match=r"holds torchvision's resnet18 .*not a detector"):
        load_detector(tmp_path / "r18")


def test_predict_command_writes_torchvision_s_detections(tmp_dir, tmp_path, monkeypatch, capsys):
    """``jaxcv predict --weights OUT_DIR IMAGE ... --json --draw``: the JSON holds the
    Detector's detections of the decoded files (PNG: the same pixels), in original pixels."""
    import json

    from PIL import Image

    import jaxcv.predict

    _, detector = _case(0.15, tmp_dir)
    out_dir = f"{tmp_dir}/converted_0.15"
    small = functools.partial(load_detector, min_size=MIN_SIZE, max_size=MAX_SIZE)
    monkeypatch.setattr(jaxcv.predict, "load_detector", small)  # 800 px would be slow here
    paths = []
    for name, photo in zip(("astronaut", "coffee"), _photos(), strict=True):
        paths.append(str(tmp_path / f"{name}.png"))
        Image.fromarray(photo).save(paths[-1])
    argv = ["predict", "--weights", out_dir, *paths, "--json", str(tmp_path / "out.json")]
    argv += ["--draw", str(tmp_path / "drawn"), "--score-threshold", "0.052"]
    assert jaxcv.cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"{paths[0]}: " in printed and "detections" in printed
    rows = json.loads((tmp_path / "out.json").read_text())
    expected = detector(_photos())
    assert [r["image"] for r in rows] == paths
    for row, found in zip(rows, expected, strict=True):
        keep = found["scores"] > 0.052
        assert 0 < keep.sum() < len(keep)  # the threshold is applied
        np.testing.assert_allclose(row["boxes"], found["boxes"][keep], rtol=0, atol=1e-4)
        np.testing.assert_allclose(row["scores"], found["scores"][keep], rtol=0, atol=1e-6)
        assert row["labels"] == found["labels"][keep].tolist()
        assert row["names"] == [n for n, k in zip(found["names"], keep, strict=True) if k]
    drawn = sorted((tmp_path / "drawn").iterdir())
    assert [p.name for p in drawn] == ["000_astronaut.png", "001_coffee.png"]
    with Image.open(drawn[1]) as image:
        assert image.size == (600, 400)


def test_predict_command_errors_are_one_line(tmp_dir, tmp_path, capsys):
    out_dir = f"{tmp_dir}/converted_0.15"
    (tmp_path / "notes.txt").write_text("not an image")
    image = tmp_path / "tiny.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    r18 = str(tmp_path / "r18")
    assert cli.main(["convert", "torchvision", "resnet18", str(tmp_path / "r18.pth"), r18]) == 0
    cases = [
        (["--weights", r18, str(image)], r"holds torchvision's resnet18 .*not a detector"),
        (["--weights", out_dir, str(tmp_path / "missing.png")], r"cannot read image .*missing"),
        (["--weights", out_dir, str(tmp_path / "notes.txt")], r"notes\.txt: cannot identify"),
        (["--weights", str(tmp_path / "nowhere"), str(image)], r"--weights .*nowhere: No such"),
        (["--weights", str(tmp_path), str(image)], r"is not a converted checkpoint"),
        (["--weights", out_dir, str(image), "--score-threshold", "2"], r"must be in \[0, 1\]"),
        (["--weights", out_dir, str(image), "--top-k", "2"], r"--top-k go with a trained run"),
        ([str(image), "--json", "x.json"], r"--json go with --weights"),
        (["digits_cnn", str(image)], r"needs --workdir DIR"),
    ]
    for args, pattern in cases:
        assert cli.main(["predict", *args]) == 2, args
        err = capsys.readouterr().err.splitlines()
        assert err[0].startswith("jaxcv: error: ") and re.search(pattern, err[0]), (args, err)
