"""The FPN Faster R-CNN's RPN (all levels, per-level top-k, per-level NMS) and box branch
(MultiScaleRoIAlign, TwoMLPHead, FastRCNNPredictor) against torchvision's own modules on random
weights: anchors exactly, proposals (count, order, boxes, scores) and class logits / deltas."""

from collections import OrderedDict

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcv.models.faster_rcnn_fpn import FasterRCNNFPN, FastRCNNPredictor, TwoMLPHead
from jaxcv.models.rpn import RPNHead
from jaxcv.tasks.fpn_proposal_layer import fpn_anchors, generate_fpn_proposals

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from torch_to_flax import (  # noqa: E402
    chw_flatten_linear_params,
    faster_rcnn_fpn_variables,
    linear_params,
    nchw_to_nhwc,
    randomize_all_batch_norms,
    relative_error,
    rpn_head_params,
)
from torchvision.models.detection import rpn as trpn  # noqa: E402
from torchvision.models.detection.faster_rcnn import (  # noqa: E402
    FastRCNNPredictor as TorchPredictor,
)
from torchvision.models.detection.faster_rcnn import TwoMLPHead as TorchTwoMLPHead  # noqa: E402
from torchvision.models.detection.image_list import ImageList  # noqa: E402

pytestmark = pytest.mark.parity

LEVELS = ["0", "1", "2", "3", "pool"]
PADDED = (128, 160)
IMAGE_SIZES = [(128, 150), (100, 160)]


def _randomize(module, std, seed):
    """Weights ~ N(0, std) and biases ~ N(0, 0.3): logits and deltas well spread, so no two
    proposals tie on their (float32) probability."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
                m.weight.normal_(0.0, std, generator=gen)
                m.bias.normal_(0.0, 0.3, generator=gen)


def _torch_rpn(head, pre, post):
    anchors = trpn.AnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)
    rpn = trpn.RegionProposalNetwork(
        anchors,
        head,
        0.7,
        0.3,
        256,
        0.5,
        {"training": 2000, "testing": pre},
        {"training": 2000, "testing": post},
        0.7,
    )
    return rpn.eval()


def _compare_proposals(boxes, scores, valid, expected_boxes, expected_scores, atol=2e-4):
    """Same count per image, probabilities in the same (descending) order to 1e-5, and the
    same boxes to ``atol`` pixels, each in its row up to swaps between proposals whose
    probabilities agree to 1e-5 (a near-tie that rounding may order either way)."""
    for b, (tb, ts) in enumerate(zip(expected_boxes, expected_scores, strict=True)):
        tb, ts = tb.numpy(), ts.numpy()
        n = int(np.sum(valid[b]))
        assert n == len(tb) > 10, (b, n, len(tb))
        assert np.all(valid[b, :n]) and not np.any(valid[b, n:])
        assert np.all(boxes[b, n:] == 0) and np.all(scores[b, n:] == 0)
        np.testing.assert_allclose(scores[b, :n], ts, rtol=0, atol=1e-5)
        close = np.all(np.abs(boxes[b, :n, None] - tb[None]) <= atol, axis=-1)
        close &= np.abs(scores[b, :n, None] - ts[None]) <= 1e-5
        match = np.argmax(close, axis=1)
        assert np.all(close[np.arange(n), match]), np.flatnonzero(~close.any(axis=1))
        assert len(set(match.tolist())) == n
        assert np.mean(match == np.arange(n)) > 0.99  # swaps are rare


@pytest.mark.parametrize(("pre", "post"), [(1000, 1000), (60, 40)])
def test_rpn_proposals_match_torchvision(pre, post):
    torch.manual_seed(0)
    head = trpn.RPNHead(8, 3)
    _randomize(head, 0.15, seed=1)
    rpn = _torch_rpn(head, pre, post)
    gen = torch.Generator().manual_seed(2)
    sizes = [(-(-PADDED[0] // s), -(-PADDED[1] // s)) for s in (4, 8, 16, 32, 64)]
    feats = OrderedDict(
        (k, torch.randn(2, 8, *s, generator=gen)) for k, s in zip(LEVELS, sizes, strict=True)
    )
    images = ImageList(torch.zeros(2, 3, *PADDED), IMAGE_SIZES)
    with torch.no_grad():
        expected_boxes, expected_scores = rpn.filter_proposals(
            *_torch_rpn_outputs(rpn, images, feats), IMAGE_SIZES, _anchor_counts(feats)
        )
        torch_anchors = rpn.anchor_generator(images, list(feats.values()))[0].numpy()

    anchors = fpn_anchors(sizes, PADDED)
    np.testing.assert_array_equal(np.concatenate(anchors), torch_anchors)
    module, params = RPNHead(3), {"params": rpn_head_params(head)}
    outputs = [module.apply(params, jnp.asarray(nchw_to_nhwc(f))) for f in feats.values()]

    @jax.jit
    def propose(objectness, deltas):
        return generate_fpn_proposals(
            objectness,
            deltas,
            anchors,
            jnp.asarray(IMAGE_SIZES),
            pre_nms_top_n=pre,
            post_nms_top_n=post,
        )

    boxes, scores, valid = propose([o for o, _ in outputs], [d for _, d in outputs])
    assert boxes.shape == (2, post, 4) and valid.shape == (2, post)
    _compare_proposals(
        *(np.asarray(x) for x in (boxes, scores, valid)), expected_boxes, expected_scores
    )
    if pre == 1000:  # torchvision keeps fewer than post_nms_top_n: the padding is exercised
        assert not np.all(np.asarray(valid))


def _anchor_counts(feats):
    return [3 * f.shape[-2] * f.shape[-1] for f in feats.values()]


def _torch_rpn_outputs(rpn, images, feats):
    """``RegionProposalNetwork.forward`` up to ``filter_proposals``: decoded proposals and
    objectness, flattened as torchvision does."""
    objectness, deltas = rpn.head(list(feats.values()))
    anchors = rpn.anchor_generator(images, list(feats.values()))
    objectness, deltas = trpn.concat_box_prediction_layers(objectness, deltas)
    proposals = rpn.box_coder.decode(deltas, anchors).view(len(anchors), -1, 4)
    return proposals, objectness


def test_two_mlp_head_and_predictor_match_torchvision():
    torch.manual_seed(0)
    thead, tpred = TorchTwoMLPHead(6 * 7 * 7, 16), TorchPredictor(16, 4)
    x = torch.randn(10, 6, 7, 7, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, deltas = tpred(thead(x))
    head_params = {
        "fc6": chw_flatten_linear_params(thead.fc6, 6, 7, 7),
        "fc7": linear_params(thead.fc7),
    }
    pred_params = {
        "cls_score": linear_params(tpred.cls_score),
        "bbox_pred": linear_params(tpred.bbox_pred),
    }
    hidden = TwoMLPHead(16).apply({"params": head_params}, jnp.asarray(nchw_to_nhwc(x)))
    actual_logits, actual_deltas = FastRCNNPredictor(4).apply({"params": pred_params}, hidden)
    assert actual_deltas.shape == (10, 4, 4)
    assert relative_error(actual_logits, logits.numpy()) < 1e-5
    assert relative_error(actual_deltas, deltas.numpy().reshape(10, 4, 4)) < 1e-5


def test_faster_rcnn_fpn_matches_torchvision_up_to_the_box_head():
    """A random-init fasterrcnn_resnet50_fpn: features, proposals, and the box head's class
    logits and deltas on those proposals (torchvision's ``backbone``, ``rpn`` and ``roi_heads``
    modules, without the transform and the post-processing)."""
    torch.manual_seed(0)
    tdet = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=5
    )
    randomize_all_batch_norms(tdet.backbone)
    _randomize(tdet.rpn.head, 0.002, seed=1)  # the features' std is ~600: logits std ~1
    tdet.eval()
    x = torch.randn(2, 3, *PADDED, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        feats = tdet.backbone(x)
        proposals, _ = tdet.rpn(ImageList(x, IMAGE_SIZES), feats)
        pooled = tdet.roi_heads.box_roi_pool(feats, proposals, IMAGE_SIZES)
        logits, deltas = tdet.roi_heads.box_predictor(tdet.roi_heads.box_head(pooled))

    model = FasterRCNNFPN(num_classes=4)
    variables = faster_rcnn_fpn_variables(tdet)
    image_size = tuple(max(s) for s in zip(*IMAGE_SIZES, strict=True))

    @jax.jit
    def run(variables, images, torch_rois):
        features, objectness, rpn_deltas = model.apply(variables, images, method="rpn")
        anchors = fpn_anchors([f.shape[1:3] for f in features.values()], images.shape[1:3])
        boxes, probs, valid = generate_fpn_proposals(
            objectness, rpn_deltas, anchors, jnp.asarray(IMAGE_SIZES)
        )
        head = model.apply(variables, features, torch_rois, image_size, method="box_head")
        return features, (boxes, probs, valid), head

    counts = [len(p) for p in proposals]
    torch_rois = np.zeros((2, 1000, 4), np.float32)
    for b, p in enumerate(proposals):
        torch_rois[b, : len(p)] = p.numpy()
    features, (boxes, probs, valid), (actual_logits, actual_deltas) = run(
        variables, jnp.asarray(nchw_to_nhwc(x)), jnp.asarray(torch_rois)
    )
    for name in LEVELS:
        assert relative_error(features[name], nchw_to_nhwc(feats[name])) < 1e-4, name
    _compare_proposals(
        np.asarray(boxes),
        np.asarray(probs),
        np.asarray(valid),
        proposals,
        _torch_proposal_scores(tdet.rpn, ImageList(x, IMAGE_SIZES), feats),
        atol=5e-3,  # through ResNet-50: features of std ~600 agree to ~1e-6 relative
    )
    start = 0
    for b, n in enumerate(counts):
        expected_logits = logits[start : start + n].numpy()
        expected_deltas = deltas[start : start + n].numpy().reshape(n, 5, 4)
        assert relative_error(actual_logits[b, :n], expected_logits) < 1e-4
        assert relative_error(actual_deltas[b, :n], expected_deltas) < 1e-4
        start += n


def _torch_proposal_scores(rpn, images, feats):
    with torch.no_grad():
        proposals, objectness = _torch_rpn_outputs(rpn, images, feats)
        _, scores = rpn.filter_proposals(
            proposals, objectness, images.image_sizes, _anchor_counts(feats)
        )
    return scores


def test_bad_inputs_say_what_is_wrong():
    anchors = fpn_anchors([(4, 4), (2, 2)], (16, 16), sizes=((8,), (16,)))
    obj = [jnp.zeros((2, 48)), jnp.zeros((2, 12))]
    deltas = [jnp.zeros((2, 48, 4)), jnp.zeros((2, 12, 4))]
    sizes = jnp.asarray([[16, 16], [16, 12]])
    boxes, _, valid = generate_fpn_proposals(obj, deltas, anchors, sizes, post_nms_top_n=5)
    assert boxes.shape == (2, 5, 4) and valid.shape == (2, 5)
    with pytest.raises(ValueError, match=r"one entry per level; got 2, 1 and 2"):
        generate_fpn_proposals(obj, deltas[:1], anchors, sizes)
    with pytest.raises(ValueError, match=r"level 1: .*got \(2, 12\), \(2, 11, 4\) and \(12, 4\)"):
        generate_fpn_proposals(obj, [deltas[0], jnp.zeros((2, 11, 4))], anchors, sizes)
    with pytest.raises(ValueError, match=r"image_sizes must be \(B, 2\) = \(2, 2\)"):
        generate_fpn_proposals(obj, deltas, anchors, jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="pre_nms_top_n and post_nms_top_n must be >= 1"):
        generate_fpn_proposals(obj, deltas, anchors, sizes, post_nms_top_n=0)
    with pytest.raises(ValueError, match="one anchor-size tuple per level: got 5 for 2 levels"):
        fpn_anchors([(4, 4), (2, 2)], (16, 16))
    with pytest.raises(ValueError, match=r"TwoMLPHead expects \(\.\.\., oh, ow, C\)"):
        TwoMLPHead(4).init(jax.random.key(0), jnp.zeros((3, 5)))
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        FasterRCNNFPN(num_classes=0).init(
            jax.random.key(0), jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 2, 4))
        )
