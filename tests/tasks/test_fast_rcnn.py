"""Fast R-CNN task: the multi-task loss on hand-made cases, static shapes, detections."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcv.models.fast_rcnn import FastRCNN
from jaxcv.tasks.fast_rcnn import FastRCNNTask, ProposalDetectionSettings

K = 2


class ConstantHead(nn.Module):
    """Logits ``bias`` (K + 1) and zero deltas for every RoI, whatever the input."""

    num_classes: int = K

    @nn.compact
    def __call__(self, images, rois, train=False):
        bias = self.param("bias", lambda _: jnp.array([0.0, 1.0, -1.0]))
        b, r = rois.shape[:2]
        logits = jnp.broadcast_to(bias, (b, r, K + 1))
        return {"class_logits": logits, "box_deltas": jnp.zeros((b, r, K + 1, 4))}


def _batch(proposals, gt, classes):
    b = len(proposals)
    return {
        "image": np.zeros((b, 64, 64, 3), np.float32),
        "proposals": np.asarray(proposals, np.float32),
        "proposal_valid": np.ones(np.shape(proposals)[:2], bool),
        "boxes": np.asarray(gt, np.float32),
        "classes": np.asarray(classes, np.int32),
        "valid": np.asarray(classes) > 0,
    }


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    return x - np.log(np.exp(x).sum())


def _encode(box, ref, w=(10.0, 10.0, 5.0, 5.0)):
    rw, rh = ref[2] - ref[0], ref[3] - ref[1]
    rx, ry = ref[0] + 0.5 * rw, ref[1] + 0.5 * rh
    bw, bh = box[2] - box[0], box[3] - box[1]
    bx, by = box[0] + 0.5 * bw, box[1] + 0.5 * bh
    return np.array(
        [
            w[0] * (bx - rx) / rw,
            w[1] * (by - ry) / rh,
            w[2] * np.log(bw / rw),
            w[3] * np.log(bh / rh),
        ]
    )


def _smooth_l1(x, beta=1.0):
    x = np.abs(x)
    return np.where(x < beta, 0.5 * x**2 / beta, x - 0.5 * beta).sum()


def test_loss_on_a_hand_made_case():
    # One object of class 2; proposals: a shifted copy (IoU 0.6: foreground), a far box
    # (background). With the ground truth added there are 3 candidates, all sampled.
    gt = [10.0, 10.0, 30.0, 30.0]
    fg = [12.0, 10.0, 34.0, 30.0]
    bg = [40.0, 40.0, 60.0, 60.0]
    batch = _batch([[fg, bg]], [[gt, [0, 0, 0, 0]]], [[2, 0]])
    task = FastRCNNTask(ConstantHead(), roi_batch_size_per_image=3, roi_positive_fraction=1.0)
    variables = task.init_variables(jax.random.PRNGKey(0), batch)
    loss, (metrics, _) = task.loss_fn(variables["params"], {}, batch, jax.random.PRNGKey(1))
    logp = _log_softmax([0.0, 1.0, -1.0])
    cls = -(2 * logp[2] + logp[0]) / 3  # two foreground RoIs of class 2 (fg and gt), one bg
    box = (_smooth_l1(_encode(gt, fg)) + _smooth_l1(_encode(gt, gt))) / 3  # zero predictions
    np.testing.assert_allclose(metrics["roi_cls"], cls, rtol=1e-5)
    np.testing.assert_allclose(metrics["roi_box"], box, rtol=1e-5)
    np.testing.assert_allclose(loss, cls + box, rtol=1e-5)
    assert metrics["num_fg"] == 2 and metrics["num_rois"] == 3 and metrics["num_proposals"] == 2
    # The box weight scales only the regression term; beta changes smooth-L1's transition.
    task2 = FastRCNNTask(
        ConstantHead(), roi_batch_size_per_image=3, roi_positive_fraction=1.0, box_weight=2.0
    )
    loss2, _ = task2.loss_fn(variables["params"], {}, batch, jax.random.PRNGKey(1))
    np.testing.assert_allclose(loss2, cls + 2 * box, rtol=1e-5)


def test_images_without_objects_give_a_finite_background_loss():
    batch = _batch([[[0, 0, 20, 20], [5, 5, 60, 60]]], [[[0, 0, 0, 0]]], [[0]])
    task = FastRCNNTask(ConstantHead(), roi_batch_size_per_image=4)
    variables = task.init_variables(jax.random.PRNGKey(0), batch)
    loss, (metrics, _) = task.loss_fn(variables["params"], {}, batch, jax.random.PRNGKey(1))
    np.testing.assert_allclose(loss, -_log_softmax([0.0, 1.0, -1.0])[0], rtol=1e-5)
    assert metrics["roi_box"] == 0 and metrics["num_fg"] == 0 and metrics["num_rois"] == 2


def _real_batch(rng, num_objects, b=2, p=12):
    gt = np.zeros((b, 4, 4), np.float32)
    classes = np.zeros((b, 4), np.int32)
    for i in range(b):
        for m in range(num_objects):
            x, y = rng.uniform(0, 40, 2)
            gt[i, m] = [x, y, x + rng.uniform(8, 24), y + rng.uniform(8, 24)]
            classes[i, m] = rng.integers(1, K + 1)
    props = np.concatenate([gt + rng.normal(0, 2, gt.shape), rng.uniform(0, 32, (b, p - 4, 4))], 1)
    props[..., 2:] = np.maximum(props[..., 2:], props[..., :2] + 4)
    batch = _batch(props, gt, classes)
    batch["image"] = rng.normal(size=batch["image"].shape).astype(np.float32)
    return batch


def test_one_compilation_whatever_the_object_count_and_finite_gradients():
    model = FastRCNN(
        num_classes=K, backbone_widths=(8, 8, 16, 16), backbone_depth=1, representation_size=16
    )
    task = FastRCNNTask(model, roi_batch_size_per_image=8)
    rng = np.random.default_rng(0)
    variables = task.init_variables(jax.random.PRNGKey(0), _real_batch(rng, 1))
    traces = []

    @jax.jit
    def grad(params, batch, key):
        traces.append(1)
        return jax.grad(lambda p: task.loss_fn(p, {}, batch, key)[0])(params)

    for count in (0, 1, 4):
        g = grad(variables["params"], _real_batch(rng, count), jax.random.PRNGKey(count))
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(g))
    assert len(traces) == 1


def test_predictions_have_fixed_slots_and_scale_to_the_original_size():
    model = FastRCNN(
        num_classes=K, backbone_widths=(8, 8, 16, 16), backbone_depth=1, representation_size=16
    )
    task = FastRCNNTask(model, detections_per_image=5, box_score_threshold=0.0)
    batch = _real_batch(np.random.default_rng(1), 2)
    batch["original_size"] = np.array([[128, 64], [64, 64]], np.int32)
    variables = task.init_variables(jax.random.PRNGKey(0), batch)
    out = jax.jit(task.predict_fn)(variables, batch)
    assert out["pred_boxes"].shape == (2, 5, 4) and out["pred_valid"].shape == (2, 5)
    assert out["pred_valid"].all()  # threshold 0: every slot filled from 12 x 2 candidates
    np.testing.assert_allclose(
        out["pred_boxes"][0], out["pred_input_boxes"][0] * np.array([1, 2, 1, 2]), rtol=1e-6
    )
    assert np.all(np.diff(np.asarray(out["pred_scores"]), axis=1) <= 0)
    assert set(np.unique(out["pred_classes"])) <= {1, 2}


def test_settings_and_missing_proposals():
    with pytest.raises(ValueError, match="unknown setting"):
        FastRCNNTask(ConstantHead(), rpn_fg_iou=0.7)
    assert FastRCNNTask(ConstantHead()).settings == ProposalDetectionSettings()
    batch = _batch([[[0, 0, 4, 4]]], [[[0, 0, 4, 4]]], [[1]])
    del batch["proposals"]
    with pytest.raises(ValueError, match=r"config\.proposals"):
        FastRCNNTask(ConstantHead()).predict_fn({}, batch)
