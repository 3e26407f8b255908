"""Faster R-CNN targets, losses, proposal layer and post-processing against torchvision; the
task's jitted train step (finite on empty/degenerate ground truth, compiles once, overfits a
tiny batch), predict_fn shapes and the evaluator."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcv.models.faster_rcnn import FasterRCNN
from jaxcv.ops.anchors import make_anchors_numpy
from jaxcv.ops.boxes import box_iou
from jaxcv.ops.matching import MatchLabel
from jaxcv.tasks.detection import DetectionEvaluator, postprocess_detections
from jaxcv.tasks.faster_rcnn import FasterRCNNTask, task_from_config
from jaxcv.tasks.proposal_layer import generate_proposals
from jaxcv.tasks.rcnn_targets import (
    batch_ground_truth,
    label_anchors,
    roi_loss,
    rpn_loss,
    sample_rois,
    sanitize_ground_truth,
)
from jaxcv.train.state import create_train_state
from jaxcv.train.step import make_train_step

IMAGE = 64
SIZES, RATIOS = (16.0, 32.0), (0.5, 1.0, 2.0)


def random_boxes(rng, n, size=float(IMAGE), min_wh=6.0, max_wh=40.0):
    xy = rng.uniform(0, size - min_wh, (n, 2))
    wh = rng.uniform(min_wh, max_wh, (n, 2))
    return np.concatenate([xy, np.minimum(xy + wh, size)], axis=1).astype(np.float32)


def anchors_64():
    return make_anchors_numpy((4, 4), 16, SIZES, RATIOS)


# -- anchor labelling and the RPN loss -------------------------------------------------------


@pytest.mark.parametrize("num_gt", [0, 1, 5])
def test_label_anchors_match_torchvision_matcher(num_gt):
    torch = pytest.importorskip("torch")
    from torchvision.models.detection._utils import BoxCoder, Matcher
    from torchvision.ops import box_iou

    rng = np.random.default_rng(num_gt)
    anchors = anchors_64()
    gt = random_boxes(rng, num_gt)
    # Padded to M = 7 with junk rows that must never be matched.
    padded = np.concatenate([gt, np.tile([[0.0, 0.0, 64.0, 64.0]], (7 - num_gt, 1))]).astype(
        np.float32
    )
    valid = np.arange(7) < num_gt
    labels, targets = jax.jit(label_anchors)(anchors, padded, valid)
    labels, targets = np.asarray(labels), np.asarray(targets)
    if num_gt == 0:  # torchvision's RPN: every anchor is background
        np.testing.assert_array_equal(labels, MatchLabel.NEGATIVE)
        np.testing.assert_array_equal(targets, 0.0)
        return
    iou = box_iou(torch.from_numpy(gt), torch.from_numpy(anchors))
    matches = Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou).numpy()
    expected = np.where(matches >= 0, 1, np.where(matches == Matcher.BELOW_LOW_THRESHOLD, 0, -1))
    np.testing.assert_array_equal(labels, expected)
    assert (labels == 1).sum() >= num_gt  # every object has at least its best anchor
    pos = matches >= 0
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    ref = coder.encode_single(torch.from_numpy(gt[matches[pos]]), torch.from_numpy(anchors[pos]))
    np.testing.assert_allclose(targets[pos], ref.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(targets[~pos], 0.0)


def test_cross_boundary_anchors_are_ignored_and_never_an_objects_best_match():
    from jaxcv.tasks.rcnn_targets import inside_image

    anchors = anchors_64()
    inside = np.asarray(inside_image(jnp.asarray(anchors), (64, 64)))
    x1, y1, x2, y2 = anchors.T
    np.testing.assert_array_equal(inside, (x1 >= 0) & (y1 >= 0) & (x2 <= 64) & (y2 <= 64))
    assert 0 < inside.sum() < len(anchors)
    loose = np.asarray(inside_image(jnp.asarray(anchors), (64, 64), border=8.0))
    assert loose.sum() > inside.sum() and np.all(loose[inside])
    # An object at the corner, whose best anchor crosses the boundary.
    gt = np.array([[0.0, 3.0, 20.0, 13.0]], np.float32)
    valid = np.ones(1, bool)
    iou = np.asarray(box_iou(jnp.asarray(anchors), jnp.asarray(gt)))[:, 0]
    assert not inside[np.argmax(iou)]
    labels, _ = jax.jit(label_anchors)(anchors, gt, valid, usable=jnp.asarray(inside))
    labels = np.asarray(labels)
    np.testing.assert_array_equal(labels[~inside], MatchLabel.IGNORE)
    best_inside = np.argmax(np.where(inside, iou, -1.0))
    assert labels[best_inside] == MatchLabel.POSITIVE
    everything, _ = jax.jit(label_anchors)(anchors, gt, valid)
    assert np.asarray(everything)[np.argmax(iou)] == MatchLabel.POSITIVE


def test_rpn_loss_matches_reference_when_all_anchors_are_sampled():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    anchors = anchors_64()
    n = anchors.shape[0]
    gt = np.stack([random_boxes(rng, 3), random_boxes(rng, 3)])
    valid = np.array([[True, True, False], [True, False, False]])
    logits = rng.normal(size=(2, n)).astype(np.float32)
    deltas = rng.normal(scale=0.3, size=(2, n, 4)).astype(np.float32)
    # n slots and a positive fraction of 1: every non-ignored anchor is sampled.
    loss = jax.jit(rpn_loss, static_argnames=("batch_size_per_image", "positive_fraction"))
    cls, box, num_pos = loss(
        jax.random.PRNGKey(0),
        logits,
        deltas,
        anchors,
        gt,
        valid,
        batch_size_per_image=n,
        positive_fraction=1.0,
    )
    cls_ref, box_ref, count, pos_count = 0.0, 0.0, 0, 0
    for b in range(2):
        labels, targets = map(np.asarray, jax.jit(label_anchors)(anchors, gt[b], valid[b]))
        keep, pos = labels >= 0, labels == 1
        cls_ref += torch.nn.functional.binary_cross_entropy_with_logits(
            torch.from_numpy(logits[b][keep]),
            torch.from_numpy(pos[keep].astype(np.float32)),
            reduction="sum",
        ).item()
        box_ref += torch.nn.functional.smooth_l1_loss(
            torch.from_numpy(deltas[b][pos]),
            torch.from_numpy(targets[pos]),
            beta=1 / 9,
            reduction="sum",
        ).item()
        count += keep.sum()
        pos_count += pos.sum()
    np.testing.assert_allclose(float(cls), cls_ref / count, rtol=1e-5)
    np.testing.assert_allclose(float(box), box_ref / count, rtol=1e-5)
    assert float(num_pos) == pos_count


def test_rpn_sampling_counts():
    rng = np.random.default_rng(2)
    anchors = make_anchors_numpy((8, 8), 16, (16.0, 32.0, 64.0), RATIOS)
    gt = random_boxes(rng, 6, size=128.0)[None]
    logits = jnp.zeros((1, anchors.shape[0]))
    deltas = jnp.zeros((1, anchors.shape[0], 4))
    _, _, num_pos = jax.jit(rpn_loss)(
        jax.random.PRNGKey(3), logits, deltas, anchors, gt, np.ones((1, 6), bool)
    )
    labels, _ = jax.jit(label_anchors)(anchors, gt[0], np.ones(6, bool))
    assert float(num_pos) == min(int((np.asarray(labels) == 1).sum()), 128)
    assert float(num_pos) >= 6


# -- the proposal layer ------------------------------------------------------------------


@pytest.mark.parametrize("pre,post", [(40, 10), (200, 60)])
def test_proposals_match_torchvision_filter_proposals(pre, post):
    torch = pytest.importorskip("torch")
    from torchvision.models.detection._utils import BoxCoder
    from torchvision.models.detection.rpn import RegionProposalNetwork

    rng = np.random.default_rng(pre)
    anchors = make_anchors_numpy((4, 4), 16, (8.0, 16.0, 32.0), RATIOS)
    n = anchors.shape[0]
    logits = rng.normal(size=(2, n)).astype(np.float32)
    deltas = rng.normal(scale=0.5, size=(2, n, 4)).astype(np.float32)
    deltas[0, :20, 2:] = -9.0  # some boxes collapse below min_size and must be removed
    boxes, scores, valid = jax.jit(
        generate_proposals,
        static_argnames=("image_size", "pre_nms_top_n", "post_nms_top_n", "min_size"),
    )(
        logits,
        deltas,
        anchors,
        image_size=(IMAGE, IMAGE),
        pre_nms_top_n=pre,
        post_nms_top_n=post,
        nms_threshold=0.7,
        min_size=0.5,
    )
    rpn = RegionProposalNetwork(
        None,
        None,
        0.7,
        0.3,
        256,
        0.5,
        {"training": pre, "testing": pre},
        {"training": post, "testing": post},
        0.7,
    )
    rpn.min_size = 0.5
    rpn.eval()
    decoded = BoxCoder((1.0, 1.0, 1.0, 1.0)).decode(
        torch.from_numpy(deltas.reshape(-1, 4)), [torch.from_numpy(anchors)] * 2
    )
    ref_boxes, ref_scores = rpn.filter_proposals(
        decoded.view(2, -1, 4), torch.from_numpy(logits), [(IMAGE, IMAGE)] * 2, [n]
    )
    for b in range(2):
        k = ref_boxes[b].shape[0]
        assert int(valid[b].sum()) == k
        assert bool(np.all(np.asarray(valid[b])[:k]))
        np.testing.assert_allclose(boxes[b, :k], ref_boxes[b].numpy(), rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(scores[b, :k], ref_scores[b].numpy(), rtol=1e-6)
        np.testing.assert_array_equal(boxes[b, k:], 0.0)


def test_proposals_are_stop_gradient():
    anchors = anchors_64()
    n = anchors.shape[0]

    def total(logits, deltas):
        boxes, scores, _ = generate_proposals(
            logits, deltas, anchors, (IMAGE, IMAGE), pre_nms_top_n=20, post_nms_top_n=5
        )
        return jnp.sum(boxes) + jnp.sum(scores)

    grads = jax.grad(total, argnums=(0, 1))(jnp.ones((1, n)), jnp.zeros((1, n, 4)))
    chex.assert_trees_all_close(grads, jax.tree.map(jnp.zeros_like, grads))


def test_proposal_layer_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"deltas must be \(B, N, 4\)"):
        generate_proposals(
            jnp.zeros((2, 10)),
            jnp.zeros((2, 10)),
            jnp.zeros((10, 4)),
            (64, 64),
            pre_nms_top_n=5,
            post_nms_top_n=2,
        )


# -- RoI sampling, the Fast R-CNN loss and post-processing -----------------------------


def test_sample_rois_labels_and_counts():
    rng = np.random.default_rng(4)
    gt = random_boxes(rng, 2)[None]
    classes = np.array([[2, 3]], np.int32)
    proposals = random_boxes(rng, 30)[None]
    pvalid = np.arange(30)[None] < 25  # the last 5 slots are padding
    out = sample_rois(
        jax.random.PRNGKey(0),
        proposals,
        pvalid,
        gt,
        classes,
        np.ones((1, 2), bool),
        batch_size_per_image=16,
        positive_fraction=0.25,
    )
    rois, labels, ok = map(np.asarray, (out["rois"], out["labels"], out["valid"]))
    assert ok.sum() == 16
    assert 2 <= (labels > 0).sum() <= 4  # the appended ground truth is always foreground
    iou = np.asarray(box_iou(rois[0], gt[0])).max(axis=1)
    fg = labels[0] > 0
    assert np.all(iou[fg] >= 0.5) and np.all(iou[~fg & ok[0]] < 0.5)
    best = np.asarray(box_iou(rois[0], gt[0])).argmax(axis=1)
    np.testing.assert_array_equal(labels[0][fg], classes[0][best[fg]])
    for roi in rois[0][ok[0]]:  # padding proposals are never sampled
        assert any(np.allclose(roi, c) for c in np.concatenate([proposals[0][:25], gt[0]]))


def test_fast_rcnn_background_lower_bound_leaves_out_far_candidates():
    gt = np.array([[[10.0, 10.0, 30.0, 30.0]]], np.float32)
    # IoU with the object: 1 (foreground), ~0.31 and ~0.14 (background), 0 (too far at 0.1).
    proposals = np.array(
        [[[10, 10, 30, 30], [10, 10, 30, 19], [15, 15, 21, 22], [40, 40, 60, 60]]], np.float32
    )
    iou = np.asarray(box_iou(proposals[0], gt[0]))[:, 0]
    assert iou[0] == 1 and 0.1 < iou[2] < iou[1] < 0.5 and iou[3] == 0

    def sampled(bg_low, valid=True):
        out = sample_rois(
            jax.random.PRNGKey(0), proposals, np.ones((1, 4), bool), gt, np.array([[1]]),
            np.array([[valid]]), batch_size_per_image=8, positive_fraction=0.5,
            add_gt_boxes=False, bg_low=bg_low,
        )  # fmt: skip
        rois = np.asarray(out["rois"])[0][np.asarray(out["valid"])[0]]
        return {int(np.argmax([np.allclose(r, p) for p in proposals[0]])) for r in rois}

    assert sampled(0.0) == {0, 1, 2, 3}
    assert sampled(0.1) == {0, 1, 2}
    assert sampled(0.1, valid=False) == {0, 1, 2, 3}  # no object: every candidate is background


def test_roi_loss_matches_torchvision_fastrcnn_loss():
    torch = pytest.importorskip("torch")
    from torchvision.models.detection.roi_heads import fastrcnn_loss

    rng = np.random.default_rng(5)
    s, k = 12, 3
    logits = rng.normal(size=(2, s, k + 1)).astype(np.float32)
    deltas = rng.normal(size=(2, s, k + 1, 4)).astype(np.float32)
    labels = rng.integers(0, k + 1, (2, s)).astype(np.int32)
    targets = rng.normal(size=(2, s, 4)).astype(np.float32)
    cls, box = roi_loss(logits, deltas, labels, targets, np.ones((2, s), bool))
    ref_cls, ref_box = fastrcnn_loss(
        torch.from_numpy(logits.reshape(-1, k + 1)),
        torch.from_numpy(deltas.reshape(-1, 4 * (k + 1))),
        [torch.from_numpy(labels[b]).long() for b in range(2)],
        [torch.from_numpy(targets[b]) for b in range(2)],
    )
    np.testing.assert_allclose(float(cls), ref_cls.item(), rtol=1e-5)
    np.testing.assert_allclose(float(box), ref_box.item(), rtol=1e-5)


def test_postprocess_matches_torchvision():
    torch = pytest.importorskip("torch")
    from torchvision.models.detection.roi_heads import RoIHeads

    rng = np.random.default_rng(6)
    p, k = 40, 3
    proposals = random_boxes(rng, 2 * p).reshape(2, p, 4)
    logits = rng.normal(scale=2.0, size=(2, p, k + 1)).astype(np.float32)
    deltas = rng.normal(scale=0.5, size=(2, p, k + 1, 4)).astype(np.float32)
    out = jax.jit(postprocess_detections, static_argnames=("image_size", "detections_per_image"))(
        logits,
        deltas,
        proposals,
        np.ones((2, p), bool),
        image_size=(IMAGE, IMAGE),
        detections_per_image=30,
    )
    heads = RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, None, 0.05, 0.5, 30)
    boxes, scores, labels = heads.postprocess_detections(
        torch.from_numpy(logits.reshape(-1, k + 1)),
        torch.from_numpy(deltas.reshape(-1, 4 * (k + 1))),
        [torch.from_numpy(proposals[b]) for b in range(2)],
        [(IMAGE, IMAGE)] * 2,
    )
    for b in range(2):
        n = boxes[b].shape[0]
        assert int(out["valid"][b].sum()) == n
        np.testing.assert_allclose(out["boxes"][b, :n], boxes[b].numpy(), rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(out["scores"][b, :n], scores[b].numpy(), rtol=1e-5)
        np.testing.assert_array_equal(out["classes"][b, :n], labels[b].numpy())


def test_postprocess_clips_each_image_to_its_own_size():
    """``image_size`` as a traced ``(B, 2)`` array: each image clipped to its own size, as
    torchvision's ``image_shapes`` (the FPN detector's padded batches)."""
    torch = pytest.importorskip("torch")
    from torchvision.models.detection.roi_heads import RoIHeads

    rng = np.random.default_rng(7)
    p, k = 40, 3
    sizes = np.array([[IMAGE, IMAGE // 2], [IMAGE // 2 + 3, IMAGE]], np.int32)
    proposals = random_boxes(rng, 2 * p).reshape(2, p, 4)
    logits = rng.normal(scale=2.0, size=(2, p, k + 1)).astype(np.float32)
    deltas = rng.normal(scale=0.5, size=(2, p, k + 1, 4)).astype(np.float32)
    out = jax.jit(postprocess_detections, static_argnames="detections_per_image")(
        logits, deltas, proposals, np.ones((2, p), bool), sizes, detections_per_image=30
    )
    heads = RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, None, 0.05, 0.5, 30)
    boxes, scores, labels = heads.postprocess_detections(
        torch.from_numpy(logits.reshape(-1, k + 1)),
        torch.from_numpy(deltas.reshape(-1, 4 * (k + 1))),
        [torch.from_numpy(proposals[b]) for b in range(2)],
        [tuple(s) for s in sizes.tolist()],
    )
    for b in range(2):
        n = boxes[b].shape[0]
        assert int(out["valid"][b].sum()) == n > 0
        np.testing.assert_allclose(out["boxes"][b, :n], boxes[b].numpy(), rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(out["scores"][b, :n], scores[b].numpy(), rtol=1e-5)
        np.testing.assert_array_equal(out["classes"][b, :n], labels[b].numpy())
        assert np.max(out["boxes"][b, :n, [0, 2]]) <= sizes[b, 1]
        assert np.max(out["boxes"][b, :n, [1, 3]]) <= sizes[b, 0]
    with pytest.raises(ValueError, match=r"image_size must be \(H, W\) or \(B, 2\) = \(2, 2\)"):
        postprocess_detections(logits, deltas, proposals, np.ones((2, p), bool), sizes[:1])


def test_sanitize_drops_degenerate_and_counts_them():
    boxes = np.array(
        [
            [
                [10, 10, 30, 30],
                [5, 5, 5, 20],
                [-50, -50, -10, -10],
                [np.nan, 0, 5, 5],
                [60, 60, 90, 90],
                [10, 10, 20, 20],
            ]
        ],
        np.float32,
    )
    classes = np.array([[1, 2, 1, 1, 3, 7]], np.int32)
    valid = np.array([[True, True, True, True, True, False]])
    out, keep, dropped = sanitize_ground_truth(boxes, classes, valid, (IMAGE, IMAGE), 3)
    np.testing.assert_array_equal(keep, [[True, False, False, False, True, False]])
    assert int(dropped[0]) == 3
    np.testing.assert_allclose(out[0, 4], [60, 60, 64, 64])  # clipped to the image


def test_batch_ground_truth_also_drops_padded_examples_and_zeroes_their_classes():
    boxes = np.array(
        [[[10, 10, 30, 30], [5, 5, 5, 20]], [[0, 0, 20, 20], [1, 1, 9, 9]]], np.float32
    )
    batch = {
        "boxes": boxes,
        "classes": np.array([[1, 2], [3, 1]], np.int32),
        "valid": np.array([[True, True], [True, True]]),
        "example_valid": np.array([True, False]),
    }
    out, classes, valid, dropped = batch_ground_truth(batch, (IMAGE, IMAGE), 3)
    np.testing.assert_array_equal(valid, [[True, False], [False, False]])
    np.testing.assert_array_equal(classes, [[1, 0], [0, 0]])
    np.testing.assert_array_equal(dropped, [1, 0])  # the padded example's objects: not "dropped"
    np.testing.assert_allclose(out[0, 0], [10, 10, 30, 30])


# -- the task: train step, predict_fn, evaluator ----------------------------------------


def tiny_task(**overrides):
    model = FasterRCNN(
        num_classes=3,
        backbone_widths=(8, 8, 16, 16),
        backbone_depth=1,
        anchor_sizes=SIZES,
        representation_size=32,
    )
    settings = dict(
        rpn_batch_size_per_image=64,
        rpn_pre_nms_top_n_train=48,
        rpn_post_nms_top_n_train=24,
        rpn_pre_nms_top_n_test=48,
        rpn_post_nms_top_n_test=24,
        roi_batch_size_per_image=32,
        detections_per_image=10,
    )
    settings.update(overrides)
    return FasterRCNNTask(model, **settings)


def make_batch(seed, num_objects, m=4):
    rng = np.random.default_rng(seed)
    boxes = np.zeros((2, m, 4), np.float32)
    classes = np.zeros((2, m), np.int32)
    for b, n in enumerate(num_objects):
        boxes[b, :n] = random_boxes(rng, n, min_wh=12.0, max_wh=30.0)
        classes[b, :n] = rng.integers(1, 4, n)
    return {
        "image": rng.normal(size=(2, IMAGE, IMAGE, 3)).astype(np.float32),
        "boxes": boxes,
        "classes": classes,
        "valid": classes > 0,
    }


@pytest.fixture(scope="module")
def train_setup():
    task = tiny_task()
    trace_count = []
    step = make_train_step(task)

    def counted(state, batch):
        trace_count.append(1)
        return step(state, batch)

    jitted = jax.jit(counted)
    state = create_train_state(task, jax.random.PRNGKey(0), make_batch(0, (2, 1)), optax.adam(3e-3))
    return task, jitted, state, trace_count


def test_train_step_compiles_once_and_stays_finite(train_setup):
    _, jitted, state, trace_count = train_setup
    degenerate = make_batch(9, (3, 0))
    degenerate["boxes"][0, 1] = [20, 20, 20, 40]  # zero width
    degenerate["boxes"][0, 2] = [100, 100, 120, 120]  # outside the 64x64 image
    batches = [make_batch(1, (1, 4)), make_batch(2, (0, 0)), degenerate, make_batch(3, (4, 2))]
    for batch in batches:
        state, metrics = jitted(state, batch)
        assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["grad_norm"]))
        for key in ("rpn_cls", "rpn_box", "roi_cls", "roi_box", "num_pos", "dropped_gt"):
            assert np.isfinite(float(metrics[key])), key
    assert len(trace_count) == 1
    _, metrics = jitted(state, degenerate)
    assert float(metrics["dropped_gt"]) == 2.0


def test_empty_images_give_background_only_losses(train_setup):
    _, jitted, state, trace_count = train_setup
    _, metrics = jitted(state, make_batch(2, (0, 0)))
    assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["grad_norm"]))
    assert float(metrics["rpn_cls"]) > 0 and float(metrics["roi_cls"]) > 0
    assert float(metrics["rpn_box"]) == 0.0 and float(metrics["roi_box"]) == 0.0
    assert float(metrics["num_pos"]) == 0.0 and float(metrics["num_fg"]) == 0.0
    assert len(trace_count) == 1


def test_train_step_decreases_loss_on_a_tiny_batch(train_setup):
    _, jitted, state, _ = train_setup
    batch = make_batch(5, (2, 3))
    losses = []
    for _ in range(12):
        state, metrics = jitted(state, batch)
        losses.append(float(metrics["loss"]))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


class PredictTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_predict_shapes_and_valid_masks(self):
        task = tiny_task(box_score_threshold=0.0)
        batch = make_batch(7, (2, 1))
        variables = jax.jit(task.init_variables)(jax.random.PRNGKey(0), batch)
        batch["original_size"] = np.array([[128, 32], [64, 64]], np.int32)
        out = self.variant(task.predict_fn)(variables, batch)
        # Boxes are mapped back to the original size (H, W) = (128, 32) and (64, 64).
        np.testing.assert_allclose(
            out["pred_boxes"][0],
            out["pred_input_boxes"][0] * np.array([0.5, 2.0, 0.5, 2.0]),
            rtol=1e-6,
        )
        np.testing.assert_allclose(out["pred_boxes"][1], out["pred_input_boxes"][1])
        chex.assert_shape([out["pred_boxes"], out["pred_input_boxes"]], (2, 10, 4))
        chex.assert_shape([out["pred_scores"], out["pred_classes"], out["pred_valid"]], (2, 10))
        valid = np.asarray(out["pred_valid"])
        # valid is a prefix; padding slots are zeroed; classes of real detections are in 1..K.
        assert np.all(np.diff(valid.astype(int), axis=1) <= 0)
        assert np.all(np.asarray(out["pred_scores"])[~valid] == 0)
        assert np.all(
            (np.asarray(out["pred_classes"])[valid] >= 1) & (out["pred_classes"][valid] <= 3)
        )
        assert valid.sum() > 0
        boxes = np.asarray(out["pred_input_boxes"])[valid]
        assert np.all(boxes >= 0) and np.all(boxes <= IMAGE)
        assert np.all(np.diff(np.asarray(out["pred_scores"])[0][valid[0]]) <= 0)


def test_evaluator_perfect_and_missing_detections():
    batch = make_batch(8, (2, 3))
    batch["example_valid"] = np.array([True, True])
    batch["original_size"] = np.array([[128, 128], [128, 128]], np.int32)
    d = 5
    boxes = np.zeros((2, d, 4), np.float32)
    boxes[:, :4] = batch["boxes"] * 2.0  # detections are in original pixels
    classes = np.zeros((2, d), np.int32)
    classes[:, :4] = batch["classes"]
    outputs = {
        "pred_boxes": boxes,
        "pred_scores": np.where(classes > 0, 0.9, 0.0).astype(np.float32),
        "pred_classes": classes,
        "pred_valid": classes > 0,
    }
    evaluator = DetectionEvaluator()
    evaluator.update(batch, outputs)
    result = evaluator.result()
    assert result["mAP50"] == pytest.approx(1.0) and result["AP"] == pytest.approx(1.0)
    assert result["num_images"] == 2.0
    outputs["pred_valid"] = np.zeros((2, d), bool)
    evaluator = DetectionEvaluator()
    evaluator.update(batch, outputs)
    assert evaluator.result()["mAP50"] == pytest.approx(0.0)


def test_task_rejects_unknown_settings_and_reads_config():
    ml_collections = pytest.importorskip("ml_collections")
    with pytest.raises(ValueError, match="unknown Faster R-CNN setting"):
        FasterRCNNTask(FasterRCNN(), rpn_bogus=1)
    config = ml_collections.ConfigDict({"detection": {"detections_per_image": 7}})
    assert task_from_config(config, FasterRCNN()).settings.detections_per_image == 7


@pytest.mark.parametrize("backbone", ["vgg16", "resnet18"])
def test_loss_traces_with_lecture_backbones(backbone):
    """The whole loss on VGG-16 conv5 and ResNet-18 C4 (BatchNorm state updated), traced only."""
    model = FasterRCNN(num_classes=3, backbone=backbone, representation_size=32)
    task = FasterRCNNTask(
        model, rpn_post_nms_top_n_train=16, roi_batch_size_per_image=16, rpn_pre_nms_top_n_train=64
    )
    batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), make_batch(0, (2, 0)))
    variables = jax.eval_shape(task.init_variables, jax.random.PRNGKey(0), batch)
    params = variables.pop("params")
    loss, (metrics, new_state) = jax.eval_shape(
        lambda p, s, b: task.loss_fn(p, s, b, jax.random.PRNGKey(1)), params, variables, batch
    )
    assert loss.shape == () and set(metrics) >= {"rpn_cls", "rpn_box", "roi_cls", "roi_box"}
    assert jax.tree.structure(new_state) == jax.tree.structure(variables)
    assert ("batch_stats" in new_state) == (backbone == "resnet18")
