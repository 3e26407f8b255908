"""torchvision's maskrcnn_resnet50_fpn end to end against jaxcv.predict's Detector.

A seeded random-init torchvision Mask R-CNN (91 classes, conditioned as
``tests/predict/detector_parity.py`` says; 160/224-pixel resize for speed, at most 50
detections, on both sides) is saved as a .pth, converted with ``jaxcv convert torchvision
maskrcnn_resnet50_fpn``, loaded with ``load_detector`` and run on scikit-image's astronaut and
coffee photographs as one batch, as torchvision runs them: the same detections (count, labels,
order, boxes within 1e-2 original pixels, scores within 1e-4), full-size masks with IoU >= 0.99,
and the 28x28 mask probabilities before the paste within 1e-4. The paste itself
(``masks_to_original``) is checked against torchvision's ``paste_masks_in_image``, and
``jaxcv predict --json`` against pycocotools' RLE.
"""

import json

import numpy as np
import pytest

from jaxcv import cli
from jaxcv.models import convert
from jaxcv.predict import load_detector
from jaxcv.predict.transform import masks_to_original

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
mask_utils = pytest.importorskip("pycocotools.mask")

from .detector_parity import (  # noqa: E402
    MAX_SIZE,
    MIN_SIZE,
    assert_same_detections,
    photos,
    torch_detect,
    torch_detector,
)

pytestmark = pytest.mark.parity

LIMIT = 50  # box_detections_per_img on both sides: the score threshold decides below it


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """The torchvision model, its detections and intermediates, the .pth, and the Detector
    converted from it through the command line, with its detections of the same batch."""
    tmp = tmp_path_factory.mktemp("mask_rcnn")
    tdet = torch_detector(
        "maskrcnn_resnet50_fpn",
        cls_factor=0.15,
        box_factor=0.3,
        mask_weight=0.03,
        mask_bias=1.5,
        box_detections_per_img=LIMIT,
    )
    expected, inter = torch_detect(tdet, photos())
    checkpoint, out_dir = tmp / "mrcnn.pth", tmp / "converted"
    torch.save(tdet.state_dict(), checkpoint)
    args = ["convert", "torchvision", "maskrcnn_resnet50_fpn", str(checkpoint), str(out_dir)]
    assert cli.main([*args, "--frozen-bn-eps", "1e-5"]) == 0  # random init: BatchNorm2d
    detector = load_detector(
        out_dir, min_size=MIN_SIZE, max_size=MAX_SIZE, box_detections_per_img=LIMIT
    )
    network, sizes = detector.network(photos())
    actual = detector(photos(), batch_size=2)  # the same compiled program as network()
    return {
        "tdet": tdet,
        "expected": expected,
        "inter": inter,
        "checkpoint": checkpoint,
        "out_dir": out_dir,
        "detector": detector,
        "network": network,
        "sizes": sizes,
        "actual": actual,
    }


def test_detections_and_masks_equal_torchvision(case):
    stats = [
        assert_same_detections(a, e) for a, e in zip(case["actual"], case["expected"], strict=True)
    ]
    counts = [len(e["scores"]) for e in case["expected"]]
    assert all(5 <= c < LIMIT for c in counts), counts
    assert sum(s["swaps"] for s in stats) <= 2, stats
    print(f"\nmaskrcnn_resnet50_fpn vs torchvision, {counts} detections: {stats}")
    # The masks cut through their boxes (neither empty nor full) and are full-size.
    for found, image in zip(case["actual"], photos(), strict=True):
        assert found["masks"].shape == (len(found["scores"]), *image.shape[:2])
        box_area = np.prod(found["boxes"][:, 2:] - found["boxes"][:, :2], axis=1)
        filled = found["masks"].sum(axis=(1, 2)) / box_area
        assert 0.1 < np.median(filled) < 0.9, filled


def test_mask_probabilities_before_the_paste_equal_torchvision(case):
    """The network's 28x28 masks (each detection's label channel, sigmoid) and boxes in
    resized-image pixels, against torchvision's ``roi_heads`` output."""
    out, roi = case["network"], case["inter"]["roi"]
    assert [tuple(s) for s in case["sizes"]] == case["inter"]["image_sizes"]
    for b, expected in enumerate(roi):
        n = len(expected["scores"])
        assert np.sum(out["valid"][b]) == n and out["mask_probs"].shape[2:] == (28, 28)
        np.testing.assert_allclose(out["boxes"][b, :n], expected["boxes"], atol=5e-3, rtol=0)
        probs = expected["masks"][:, 0]
        assert 0.2 < np.mean(probs > 0.5) < 0.8  # the threshold cuts through the masks
        np.testing.assert_allclose(out["mask_probs"][b, :n], probs, atol=1e-4, rtol=0)


def test_paste_equals_torchvision_s_paste_masks_in_image():
    """``masks_to_original`` on the same probabilities and boxes as torchvision's
    ``paste_masks_in_image``: boxes inside, across the borders, outside, and degenerate."""
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    gen = np.random.default_rng(0)
    probs = gen.uniform(0, 1, (7, 28, 28)).astype(np.float32)
    boxes = np.array(
        [
            [10.3, 20.7, 90.2, 61.9],
            [-5.0, -3.2, 40.6, 33.3],
            [100.5, 50.5, 131.9, 79.99],
            [60.0, 10.0, 60.0, 10.0],
            [0.0, 0.0, 132.0, 80.0],
            [125.1, 75.2, 140.0, 95.0],
            [33.3, 44.4, 35.5, 46.6],
        ],
        np.float32,
    )
    expected = paste_masks_in_image(
        torch.from_numpy(probs[:, None]), torch.from_numpy(boxes), (80, 132)
    )
    actual = masks_to_original(probs, boxes, (80, 132))
    assert actual.shape == (7, 80, 132) and actual.dtype == bool
    np.testing.assert_array_equal(actual, expected[:, 0].numpy() > 0.5)
    with pytest.raises(ValueError, match=r"mask_probs must be \(n, S, S\) and boxes \(n, 4\)"):
        masks_to_original(probs[:3], boxes, (80, 132))


def test_converts_with_old_key_names_and_names_other_checkpoints(case, tmp_path):
    """The original COCO checkpoint's pre-version-2 names (``mask_head.mask_fcn1..4``, the
    RPN's bare ``conv``, the FPN's ``inner_blocks.{i}.weight``) convert to the same variables;
    a Mask R-CNN checkpoint given as another architecture, and another given as Mask R-CNN,
    are refused in one line that names the architecture of the checkpoint."""
    full = {k: v.numpy() for k, v in case["tdet"].state_dict().items()}
    reference = convert.convert_state_dict("maskrcnn_resnet50_fpn", full).variables
    old = {}
    for key, value in full.items():
        if key.startswith("roi_heads.mask_head."):
            i, rest = key.split(".")[2], key.split(".", 4)[-1]
            key = f"roi_heads.mask_head.mask_fcn{int(i) + 1}.{rest}"
        if key.startswith("backbone.fpn."):
            key = key.replace(".0.weight", ".weight").replace(".0.bias", ".bias")
        old[key.replace("rpn.head.conv.0.0.", "rpn.head.conv.")] = value
    assert "roi_heads.mask_head.mask_fcn4.weight" in old and "rpn.head.conv.bias" in old
    again = convert.convert_state_dict("maskrcnn_resnet50_fpn", old).variables
    assert all(
        np.array_equal(a, b) for a, b in zip(_leaves(again), _leaves(reference), strict=True)
    )

    pattern = r"keys are those of torchvision's maskrcnn_resnet50_fpn, not {}"
    for arch in ("fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2"):
        with pytest.raises(convert.ConversionError, match=pattern.format(arch)):
            convert.convert_state_dict(arch, full)
    no_mask = {k: v for k, v in full.items() if not k.startswith("roi_heads.mask_")}
    pattern = r"those of torchvision's fasterrcnn_resnet50_fpn, not maskrcnn_resnet50_fpn"
    with pytest.raises(convert.ConversionError, match=pattern):
        convert.convert_state_dict("maskrcnn_resnet50_fpn", no_mask)
    resnet = {k: v.numpy() for k, v in torchvision.models.resnet18().state_dict().items()}
    with pytest.raises(convert.ConversionError, match=r"not a torchvision detector's"):
        convert.convert_state_dict("maskrcnn_resnet50_fpn", resnet)
    # Through the command line: one line, exit code 2.
    args = ["convert", "torchvision", "maskrcnn_resnet50_fpn_v2", str(case["checkpoint"])]
    assert cli.main([*args, str(tmp_path / "out")]) == 2


def _leaves(tree):
    for key in sorted(tree):
        yield from _leaves(tree[key]) if isinstance(tree[key], dict) else (tree[key],)


def test_predict_command_writes_masks_as_coco_rle(case, tmp_path, monkeypatch, capsys):
    """``jaxcv predict --weights OUT_DIR IMAGE --json --draw``: the JSON's masks are the
    Detector's, as pycocotools' compressed RLE. (The Detector is the case's, on its batch of
    two; the command runs one image at a time, which would compile another program.)"""
    from PIL import Image

    import jaxcv.predict

    class Replay:
        def __call__(self, images):
            (image,) = images
            index = next(i for i, p in enumerate(photos()) if np.array_equal(p, image))
            return [case["actual"][index]]

    monkeypatch.setattr(jaxcv.predict, "load_detector", lambda *a, **k: Replay())
    paths = []
    for name, photo in zip(("astronaut", "coffee"), photos(), strict=True):
        paths.append(str(tmp_path / f"{name}.png"))
        Image.fromarray(photo).save(paths[-1])
    argv = ["predict", "--weights", str(case["out_dir"]), *paths]
    argv += ["--json", str(tmp_path / "out.json"), "--draw", str(tmp_path / "drawn")]
    assert cli.main(argv) == 0
    capsys.readouterr()
    rows = json.loads((tmp_path / "out.json").read_text())
    for row, found in zip(rows, case["actual"], strict=True):
        assert len(row["masks"]) == len(found["masks"]) > 0
        for rle, mask in zip(row["masks"], found["masks"], strict=True):
            reference = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            assert rle == {"size": list(mask.shape), "counts": reference["counts"].decode()}
            np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), mask)
    drawn = sorted((tmp_path / "drawn").iterdir())
    with Image.open(drawn[0]) as image, Image.open(paths[0]) as photo:
        assert image.size == (512, 512)
        # The masks are blended in: the drawing differs from the photo inside the best mask.
        mask = case["actual"][0]["masks"][0]
        diff = np.abs(np.asarray(image.convert("RGB"), int) - np.asarray(photo, int))
        assert diff[mask].mean() > 10
