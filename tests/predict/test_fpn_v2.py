"""torchvision's ``_v2`` FPN detectors against jaxcv: maskrcnn_resnet50_fpn_v2 end to end, and
fasterrcnn_resnet50_fpn_v2 through its intermediate outputs.

One seeded random-init ``maskrcnn_resnet50_fpn_v2`` (91 classes, every BatchNorm off the
identity, conditioned as ``tests/predict/detector_parity.py`` says; 160/224-pixel resize, 300
proposals and at most 50 detections on both sides, for speed) runs on scikit-image's astronaut
and coffee photographs as one batch. Its state dict converts as ``maskrcnn_resnet50_fpn_v2``:
the same detections (count, labels, order, boxes within 1e-2 original pixels, scores within
1e-4) and full-size masks with IoU >= 0.99. The same weights without the mask branch, loaded
into torchvision's ``fasterrcnn_resnet50_fpn_v2`` and converted as such, give the intermediate
outputs of that forward pass (captured by hooks): the five FPN levels, the RPN's objectness and
deltas per level, the proposals (count, order, boxes, scores) and the box head's class logits
and deltas on torchvision's proposals.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcv.models import convert
from jaxcv.predict.detector import Detector, DetectorSettings
from jaxcv.tasks.fpn_proposal_layer import fpn_anchors, generate_fpn_proposals

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from .detector_parity import (  # noqa: E402
    MAX_SIZE,
    MIN_SIZE,
    assert_same_detections,
    nchw_to_nhwc,
    photos,
    relative_error,
    torch_detect,
    torch_detector,
)

pytestmark = pytest.mark.parity

LIMIT, PROPOSALS = 50, 300
LEVELS = ["0", "1", "2", "3", "pool"]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fpn_v2")
    tdet = torch_detector(
        "maskrcnn_resnet50_fpn_v2",
        cls_factor=0.06,
        box_factor=0.13,
        mask_weight=0.03,
        mask_bias=-1.0,
        bn_scale=0.2,
        box_detections_per_img=LIMIT,
        rpn_post_nms_top_n_test=PROPOSALS,
    )
    expected, inter = torch_detect(tdet, photos())
    state = {k: v.numpy() for k, v in tdet.state_dict().items()}
    # torchvision's fasterrcnn_resnet50_fpn_v2 with the same weights (strict: every key).
    faster = torchvision.models.detection.fasterrcnn_resnet50_fpn_v2(weights=None, num_classes=91)
    box_only = {k: v for k, v in tdet.state_dict().items() if not k.startswith("roi_heads.mask_")}
    faster.load_state_dict(box_only, strict=True)
    torch.save(faster.state_dict(), tmp / "frcnn_v2.pth")
    return {
        "state": state,
        "expected": expected,
        "inter": inter,
        "mask": convert.convert_state_dict("maskrcnn_resnet50_fpn_v2", state),
        "faster": convert.convert_checkpoint("fasterrcnn_resnet50_fpn_v2", tmp / "frcnn_v2.pth"),
    }


def test_mask_rcnn_v2_detections_and_masks_equal_torchvision(case):
    converted = case["mask"]
    assert converted.model_name == "mask_rcnn_fpn"
    assert set(converted.variables["batch_stats"]) == {"backbone", "box_head", "mask_head"}
    settings = DetectorSettings(
        min_size=MIN_SIZE,
        max_size=MAX_SIZE,
        box_detections_per_img=LIMIT,
        rpn_post_nms_top_n_test=PROPOSALS,
    )
    detector = Detector(converted.build_model(), converted.variables, settings=settings)
    actual = detector(photos(), batch_size=2)
    stats = [assert_same_detections(a, e) for a, e in zip(actual, case["expected"], strict=True)]
    counts = [len(e["scores"]) for e in case["expected"]]
    assert all(5 <= c < LIMIT for c in counts), counts
    assert sum(s["swaps"] for s in stats) <= 2, stats
    print(f"\nmaskrcnn_resnet50_fpn_v2 vs torchvision, {counts} detections: {stats}")
    probs = np.concatenate([r["masks"].ravel() for r in case["inter"]["roi"]])
    assert 0.2 < np.mean(probs > 0.5) < 0.8  # the threshold cuts through the masks


def _levels_nhwc(per_level, width):
    """torchvision's per-level ``(B, A * width, h, w)`` head outputs in jaxcv's order:
    ``(B, h * w * A, width)``, position-major then anchor."""
    out = []
    for x in per_level:
        b, c, h, w = x.shape
        x = x.reshape(b, c // width, width, h, w).permute(0, 3, 4, 1, 2)
        out.append(x.reshape(b, -1, width).numpy())
    return out


def test_faster_rcnn_v2_intermediate_outputs_equal_torchvision(case):
    converted, inter = case["faster"], case["inter"]
    assert converted.model_name == "faster_rcnn_fpn" and converted.model_fields["box_head_convs"]
    model = converted.build_model()
    images = jnp.asarray(nchw_to_nhwc(inter["images"]))
    sizes = np.asarray(inter["image_sizes"], np.int32)
    largest = tuple(int(s) for s in sizes.max(axis=0))
    torch_rois = np.zeros((2, PROPOSALS, 4), np.float32)
    counts = [len(p) for p in inter["proposals"]]
    for b, p in enumerate(inter["proposals"]):
        torch_rois[b, : len(p)] = p.numpy()

    @jax.jit
    def run(variables, images, rois):
        features, objectness, deltas = model.apply(variables, images, method="rpn")
        anchors = fpn_anchors([f.shape[1:3] for f in features.values()], images.shape[1:3])
        proposals = generate_fpn_proposals(
            objectness, deltas, anchors, jnp.asarray(sizes), post_nms_top_n=PROPOSALS
        )
        head = model.apply(variables, features, rois, largest, method="box_head")
        return features, objectness, deltas, proposals, head

    features, objectness, deltas, proposals, head = jax.device_get(
        run(converted.variables, images, jnp.asarray(torch_rois))
    )
    diffs: dict = {}
    for name in LEVELS:
        expected = nchw_to_nhwc(inter["features"][name])
        diffs[name] = float(np.max(np.abs(features[name] - expected)))
        assert relative_error(features[name], expected) < 1e-4, name
    expected_objectness = _levels_nhwc(inter["objectness"], 1)
    expected_deltas = _levels_nhwc(inter["rpn_deltas"], 4)
    for level in range(len(LEVELS)):
        diffs["objectness"] = max(
            diffs.get("objectness", 0.0),
            float(np.max(np.abs(objectness[level] - expected_objectness[level][..., 0]))),
        )
        assert relative_error(objectness[level], expected_objectness[level][..., 0]) < 1e-4
        assert relative_error(deltas[level], expected_deltas[level]) < 1e-4
    boxes, scores, valid = proposals
    for b, (tb, ts) in enumerate(zip(inter["proposals"], inter["proposal_scores"], strict=True)):
        n = int(valid[b].sum())
        assert n == counts[b] and np.all(valid[b, :n])
        np.testing.assert_allclose(scores[b, :n], ts.numpy(), rtol=0, atol=1e-5)
        box_diff = np.abs(boxes[b, :n] - tb.numpy())
        in_place = np.all(box_diff <= 5e-3, axis=-1)
        assert np.mean(in_place) > 0.99, np.flatnonzero(~in_place)  # swaps of near-ties only
        for key, diff in (("proposal boxes", box_diff[in_place]), ("proposal scores", None)):
            diff = np.abs(scores[b, :n] - ts.numpy()) if diff is None else diff
            diffs[key] = max(diffs.get(key, 0.0), float(np.max(diff)))
    logits, box_deltas = head
    start = 0
    for b, n in enumerate(counts):
        expected = inter["class_logits"][start : start + n].numpy()
        assert relative_error(logits[b, :n], expected) < 1e-4
        expected = inter["box_deltas"][start : start + n].numpy().reshape(n, -1, 4)
        assert relative_error(box_deltas[b, :n], expected) < 1e-4
        start += n
    print(f"\nfasterrcnn_resnet50_fpn_v2 max abs diffs (boxes in place): {diffs}")


def test_v2_checkpoints_given_as_other_architectures_are_named(case):
    mask_v2, faster_v2 = (
        case["state"],
        {k: v for k, v in case["state"].items() if not k.startswith("roi_heads.mask_")},
    )
    pattern = r"keys are those of torchvision's {}, not {} \(convert it as '{}'\)"
    for state, found, arch in [
        (mask_v2, "maskrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn"),
        (mask_v2, "maskrcnn_resnet50_fpn_v2", "fasterrcnn_resnet50_fpn_v2"),
        (faster_v2, "fasterrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn_v2"),
        (faster_v2, "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_resnet50_fpn"),
    ]:
        with pytest.raises(convert.ConversionError, match=pattern.format(found, arch, found)):
            convert.convert_state_dict(arch, state)
