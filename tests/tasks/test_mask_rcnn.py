"""Mask R-CNN task: mask targets and loss against torchvision's maskrcnn_loss, hand-made loss
cases, predicted masks pasted like torchvision, the jitted train step (compiles once, finite
on empty ground truth, overfits), the evaluator against pycocotools, and the config hook."""

import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcv.models.mask_head import MaskRCNN
from jaxcv.tasks.mask_rcnn import (
    MaskEvaluator,
    MaskRCNNTask,
    mask_loss,
    mask_targets,
    select_foreground,
    task_from_config,
)
from jaxcv.tasks.rcnn_targets import sample_rois
from jaxcv.train.state import create_train_state
from jaxcv.train.step import make_train_step

IMAGE, K = 64, 3


def make_batch(seed, num_objects, m=4):
    """Rectangles and ellipses with their instance masks; boxes are the masks' tight boxes."""
    rng = np.random.default_rng(seed)
    b = len(num_objects)
    boxes = np.zeros((b, m, 4), np.float32)
    classes = np.zeros((b, m), np.int32)
    masks = np.zeros((b, m, IMAGE, IMAGE), np.uint8)
    yy, xx = np.mgrid[:IMAGE, :IMAGE]
    for i, n in enumerate(num_objects):
        for j in range(n):
            x0, y0 = rng.integers(0, IMAGE - 24, 2)
            w, h = rng.integers(12, 24, 2)
            c = int(rng.integers(1, K + 1))
            if c == 2:  # an ellipse: the mask is not the box
                inside = ((xx + 0.5 - x0 - w / 2) / (w / 2)) ** 2
                inside = inside + ((yy + 0.5 - y0 - h / 2) / (h / 2)) ** 2 <= 1
            else:
                inside = (xx >= x0) & (xx < x0 + w) & (yy >= y0) & (yy < y0 + h)
            masks[i, j] = inside
            ys, xs = np.nonzero(inside)
            boxes[i, j] = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            classes[i, j] = c
    image = rng.normal(size=(b, IMAGE, IMAGE, 3)).astype(np.float32)
    image += 2.0 * masks.max(1)[..., None]  # the objects are visible
    return {
        "image": image,
        "boxes": boxes,
        "classes": classes,
        "valid": classes > 0,
        "masks": masks,
    }


def sampled_for(batch, seed=0, num=32, fraction=0.5):
    rng = np.random.default_rng(seed)
    gt = batch["boxes"]
    props = np.concatenate([gt + rng.normal(0, 3, gt.shape) for _ in range(4)], 1)
    props = np.clip(props, 0, IMAGE).astype(np.float32)
    pv = np.concatenate([batch["valid"]] * 4, 1)
    return sample_rois(
        jax.random.PRNGKey(seed),
        props,
        pv,
        gt,
        batch["classes"],
        batch["valid"],
        batch_size_per_image=num,
        positive_fraction=fraction,
    )


# -- targets and loss ---------------------------------------------------------------------


def test_targets_and_loss_match_torchvision_maskrcnn_loss():
    torch = pytest.importorskip("torch")
    from torchvision.models.detection.roi_heads import maskrcnn_loss, project_masks_on_boxes

    batch = make_batch(0, (3, 2, 1))
    sampled = sampled_for(batch)
    t = jax.jit(mask_targets, static_argnums=(2, 3))(jnp.asarray(batch["masks"]), sampled, 16, 28)
    fg = np.asarray(t["fg"])
    assert fg.sum() > 5
    logits = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (3, 16, 28, 28, K)))
    ours = float(mask_loss(jnp.asarray(logits), t["targets"], t["labels"], t["fg"]))
    rois, matched = np.asarray(t["rois"]), np.asarray(t["matched"])
    for b in range(3):
        gt = torch.from_numpy(batch["masks"][b])
        ref = project_masks_on_boxes(
            gt, torch.from_numpy(rois[b][fg[b]]), torch.from_numpy(matched[b][fg[b]]), 28
        )
        np.testing.assert_allclose(np.asarray(t["targets"])[b][fg[b]], ref.numpy(), atol=1e-5)
        # The label of each foreground RoI is its matched object's class.
        np.testing.assert_array_equal(
            np.asarray(t["labels"])[b][fg[b]], batch["classes"][b][matched[b][fg[b]]]
        )
    # torchvision's logits (N, K + 1, 28, 28) carry a background channel 0.
    flat = np.concatenate([logits[b][fg[b]] for b in range(3)]).transpose(0, 3, 1, 2)
    flat = np.concatenate([np.full_like(flat[:, :1], 50.0), flat], axis=1)
    ref_loss = maskrcnn_loss(
        torch.from_numpy(flat),
        [torch.from_numpy(rois[b][fg[b]]) for b in range(3)],
        [torch.from_numpy(batch["masks"][b]) for b in range(3)],
        [torch.from_numpy(batch["classes"][b].astype(np.int64)) for b in range(3)],
        [torch.from_numpy(matched[b][fg[b]].astype(np.int64)) for b in range(3)],
    )
    assert ours == pytest.approx(float(ref_loss), rel=1e-5)


def test_select_foreground_takes_positives_first():
    sampled = {
        "labels": jnp.array([[0, 2, 0, 1, 3], [0, 0, 0, 0, 0]]),
        "valid": jnp.array([[True, True, True, True, False], [True] * 5]),
    }
    idx, fg = select_foreground(sampled, 3)
    np.testing.assert_array_equal(np.asarray(fg), [[True, True, False], [False] * 3])
    np.testing.assert_array_equal(np.asarray(idx)[0, :2], [1, 3])  # invalid slot 4 skipped
    with pytest.raises(ValueError, match="exceeds"):
        select_foreground(sampled, 6)


def test_mask_loss_hand_made_cases():
    logits = jnp.zeros((1, 2, 4, 4, K))
    targets = jnp.ones((1, 2, 4, 4))
    labels = jnp.array([[1, 2]])
    # Zero logits: log 2 per pixel, whatever the targets.
    loss = mask_loss(logits, targets, labels, jnp.array([[True, True]]))
    assert float(loss) == pytest.approx(np.log(2.0), rel=1e-6)
    # Only the ground-truth class's channel counts: other channels may be anything.
    logits = logits.at[0, 0, :, :, 1:].set(-30.0).at[0, 0, :, :, 0].set(30.0)
    loss = mask_loss(logits, targets, labels, jnp.array([[True, False]]))
    assert float(loss) == pytest.approx(np.log1p(np.exp(-30.0)), abs=1e-9)
    # A confident wrong pixel costs its logit; the mean is over fg pixels only.
    t = targets.at[0, 0, 0, 0].set(0.0)
    loss = mask_loss(logits, t, labels, jnp.array([[True, False]]))
    assert float(loss) == pytest.approx(30.0 / 16, rel=1e-4)
    # No foreground RoI: zero loss and zero gradient.
    none = jnp.array([[False, False]])
    assert float(mask_loss(logits, targets, labels, none)) == 0.0
    grad = jax.grad(lambda x: mask_loss(x, targets, labels, none))(logits)
    assert float(jnp.abs(grad).max()) == 0.0
    with pytest.raises(ValueError, match="mask_logits must be"):
        mask_loss(logits[..., 0], targets, labels, none)


# -- the task -----------------------------------------------------------------------------


def tiny_task(**overrides):
    model = MaskRCNN(
        num_classes=K,
        backbone_widths=(8, 8, 16, 16),
        backbone_depth=1,
        anchor_sizes=(16.0, 32.0),
        representation_size=32,
        mask_channels=8,
        mask_num_convs=2,
    )
    settings = dict(
        rpn_batch_size_per_image=64,
        rpn_pre_nms_top_n_train=48,
        rpn_post_nms_top_n_train=24,
        rpn_pre_nms_top_n_test=48,
        rpn_post_nms_top_n_test=24,
        roi_batch_size_per_image=32,
        detections_per_image=6,
        mask_rois_per_image=6,
    )
    settings.update(overrides)
    return MaskRCNNTask(model, **settings)


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


def test_train_step_compiles_once_and_handles_empty_images(train_setup):
    _, jitted, state, trace_count = train_setup
    for batch in [make_batch(1, (1, 4)), make_batch(2, (0, 0)), make_batch(3, (4, 2))]:
        state, metrics = jitted(state, batch)
        assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["grad_norm"]))
        assert np.isfinite(float(metrics["mask"]))
        if batch["valid"].sum() == 0:
            assert float(metrics["mask"]) == 0.0 and float(metrics["num_mask_rois"]) == 0.0
        else:
            assert 0.0 < float(metrics["num_mask_rois"]) <= 6.0
    assert len(trace_count) == 1


def test_train_step_decreases_the_mask_loss(train_setup):
    _, jitted, state, _ = train_setup
    batch = make_batch(5, (2, 3))
    masks = []
    for _ in range(15):
        state, metrics = jitted(state, batch)
        masks.append(float(metrics["mask"]))
    assert np.mean(masks[-3:]) < 0.8 * np.mean(masks[:3]), masks


def test_predicted_masks_are_pasted_like_torchvision():
    torch = pytest.importorskip("torch")
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    task = tiny_task(box_score_threshold=0.0)
    batch = make_batch(7, (2, 1))
    variables = jax.jit(task.init_variables)(jax.random.PRNGKey(0), batch)
    out = jax.jit(task.predict_fn)(variables, batch)
    chex.assert_shape(out["pred_masks"], (2, 6, IMAGE, IMAGE))
    assert out["pred_masks"].dtype == jnp.bool_
    valid = np.asarray(out["pred_valid"])
    assert valid.any()
    masks = np.asarray(out["pred_masks"])
    assert not masks[~valid].any()  # invalid slots are empty
    # Reference: the mask branch on the detections, the class channel, torchvision's paste.
    boxes = np.asarray(out["pred_input_boxes"])

    @jax.jit
    def head_logits(variables, images, boxes):
        features = task.model.apply(variables, images, method="rpn")[0]
        return task.model.apply(variables, features, boxes, method="mask_head")

    logits = np.asarray(head_logits(variables, jnp.asarray(batch["image"]), jnp.asarray(boxes)))
    for b in range(2):
        keep = valid[b]
        channel = np.asarray(out["pred_classes"])[b][keep] - 1
        probs = 1.0 / (1.0 + np.exp(-logits[b][keep][np.arange(keep.sum()), ..., channel]))
        ref = paste_masks_in_image(
            torch.from_numpy(probs[:, None]), torch.from_numpy(boxes[b][keep]), (IMAGE, IMAGE)
        )[:, 0].numpy()
        expected = ref > 0.5
        # Pixels within float rounding of the threshold may flip; nothing else.
        mismatch = masks[b][keep] != expected
        assert np.all(np.abs(ref[mismatch] - 0.5) < 1e-5)
        assert mismatch.mean() < 1e-3


def test_loss_requires_masks():
    task = tiny_task()
    batch = make_batch(0, (1, 1))
    masks = batch.pop("masks")
    with pytest.raises(ValueError, match="instance masks"):  # checked before any compute
        task.loss_fn({}, {}, batch, jax.random.PRNGKey(0))
    batch["masks"] = masks[:, :, :32]
    with pytest.raises(ValueError, match="must be"):
        task.loss_fn({}, {}, batch, jax.random.PRNGKey(0))


def test_paper_c4_configuration_traces():
    """The ResNet-50 C4 backbone with the paper's 256-wide, 4-conv mask branch (shapes only)."""
    model = MaskRCNN(num_classes=80, backbone="resnet50", mask_channels=256, mask_num_convs=4)
    task = MaskRCNNTask(
        model,
        rpn_pre_nms_top_n_train=64,
        rpn_post_nms_top_n_train=32,
        roi_batch_size_per_image=32,
    )
    batch = make_batch(0, (2, 1))
    variables = jax.eval_shape(task.init_variables, jax.random.PRNGKey(0), batch)
    assert variables["params"]["mask_head"]["mask_fcn1"]["kernel"].shape == (3, 3, 1024, 256)
    loss, (metrics, _) = jax.eval_shape(
        lambda v: task.loss_fn(
            v["params"], {"batch_stats": v["batch_stats"]}, batch, jax.random.PRNGKey(1)
        ),
        variables,
    )
    assert loss.shape == () and metrics["mask"].shape == ()
    out = jax.eval_shape(task.predict_fn, variables, batch)
    assert out["pred_masks"].shape == (2, 100, IMAGE, IMAGE)


# -- evaluation and config ----------------------------------------------------------------


def test_evaluator_matches_pycocotools_box_and_mask_ap():
    pytest.importorskip("pycocotools")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
    from eval_oracles import pycocotools_eval  # the oracle of tests/eval/test_eval_coco.py

    batch = make_batch(11, (3, 2, 4), m=5)
    batch["example_valid"] = np.array([True, True, True])
    rng = np.random.default_rng(0)
    d = 6
    boxes = np.zeros((3, d, 4), np.float32)
    classes = np.zeros((3, d), np.int32)
    masks = np.zeros((3, d, IMAGE, IMAGE), bool)
    for b in range(3):  # each object detected, some with a damaged mask, plus a false positive
        n = int(batch["valid"][b].sum())
        boxes[b, :n] = batch["boxes"][b, :n] + rng.normal(0, 1.5, (n, 4))
        classes[b, :n] = batch["classes"][b, :n]
        masks[b, :n] = batch["masks"][b, :n].astype(bool)
        masks[b, 0, :, : IMAGE // 2] = False
        boxes[b, n] = [5, 5, 30, 30]
        classes[b, n] = 1
        masks[b, n, 5:30, 5:30] = True
    valid = classes > 0
    outputs = {
        "pred_boxes": boxes,
        "pred_scores": np.where(valid, rng.uniform(0.1, 1.0, valid.shape), 0).astype(np.float32),
        "pred_classes": classes,
        "pred_valid": valid,
        "pred_masks": masks,
    }
    evaluator = MaskEvaluator()
    evaluator.update(batch, outputs)
    result = evaluator.result()
    gts, dts = evaluator.accumulator.ground_truth, evaluator.accumulator.detections
    box_ref = pycocotools_eval(gts, dts, "bbox").stats
    segm_ref = pycocotools_eval(gts, dts, "segm").stats
    assert result["box_AP"] == pytest.approx(box_ref[0], abs=1e-9)
    assert result["box_AP50"] == pytest.approx(box_ref[1], abs=1e-9)
    assert result["mask_AP"] == pytest.approx(segm_ref[0], abs=1e-9)
    assert result["mask_AP50"] == pytest.approx(segm_ref[1], abs=1e-9)
    assert result["mask_AP"] != result["box_AP"]
    assert result["num_images"] == 3.0


def test_perfect_masks_score_one_and_config_sections_are_read():
    ml_collections = pytest.importorskip("ml_collections")
    batch = make_batch(3, (2, 1))
    outputs = {
        "pred_boxes": batch["boxes"],
        "pred_scores": batch["valid"].astype(np.float32),
        "pred_classes": batch["classes"],
        "pred_valid": batch["valid"],
        "pred_masks": batch["masks"].astype(bool),
    }
    evaluator = MaskEvaluator()
    evaluator.update(batch, outputs)
    result = evaluator.result()
    for key in ("mAP50", "box_AP", "box_AP50", "mask_AP", "mask_AP50"):
        assert result[key] == pytest.approx(1.0), key
    config = ml_collections.ConfigDict(
        {"detection": {"detections_per_image": 7}, "mask": {"mask_rois_per_image": 5}}
    )
    task = task_from_config(config, tiny_task().model)
    assert task.settings.detections_per_image == 7 and task.mask_rois_per_image == 5
    with pytest.raises(ValueError, match="unknown Faster R-CNN setting"):
        MaskRCNNTask(tiny_task().model, mask_bogus=1)
    with pytest.raises(ValueError, match="mask_rois_per_image"):
        MaskRCNNTask(tiny_task().model, mask_rois_per_image=0)
