"""SegmentationTask / PatchSegmentationTask: loss, metrics, sampling, evaluator."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from jaxcv.models.fcn import FCN
from jaxcv.models.patch_cnn import PatchCNN
from jaxcv.tasks.base import Evaluator, Task
from jaxcv.tasks.segmentation import (
    PRED_KEY,
    PatchSegmentationTask,
    SegmentationEvaluator,
    SegmentationTask,
    sample_pixels,
    task_from_config,
)

K = 4
PATCH_TINY = {"patch_size": 5, "channels": (4,), "hidden_units": 0}


class PerPixelLinear(nn.Module):
    """A 1x1 conv: logits (B, H, W, K) whose values the test can compute by hand."""

    num_classes: int = K

    @nn.compact
    def __call__(self, images, train: bool = False):
        return nn.Conv(self.num_classes, (1, 1), name="score")(images)


def ce_ref(logits, labels, weights):
    """float64 mean CE over pixels with weight > 0 and label != 255."""
    logits = np.asarray(logits, np.float64)
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    keep = (labels != 255) & (weights > 0)
    safe = np.where(keep, labels, 0)
    nll = lse - np.take_along_axis(logits, safe[..., None], -1)[..., 0]
    return nll[keep].mean(), (logits.argmax(-1) == labels)[keep].mean()


def _batch(rng, b=3, h=6, w=5):
    labels = rng.integers(0, K, size=(b, h, w)).astype(np.int32)
    labels[0, :2] = 255
    return {
        "image": rng.normal(size=(b, h, w, 3)).astype(np.float32),
        "segmentation": labels,
        "example_valid": np.array([True, True, False]),
    }


def test_gradient_zero_for_ignored_pixels():
    task = SegmentationTask(PerPixelLinear(), K)
    rng = np.random.default_rng(1)
    batch = {
        "image": rng.normal(size=(1, 2, 2, 3)).astype(np.float32),
        "segmentation": np.full((1, 2, 2), 255, np.int32),
    }
    params = task.init_variables(jax.random.key(0), batch)["params"]
    grads = jax.grad(lambda p: task.loss_fn(p, {}, batch, jax.random.key(0))[0])(params)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))


def test_protocols_fcn_batch_stats_and_predict():
    model = FCN(
        num_classes=K,
        variant="8s",
        stages=((3,), (4,), (4,), (4,), (4,)),
        batch_norm=True,
        fc_width=4,
        fc6_kernel=1,
    )
    task = SegmentationTask(model, K)
    assert isinstance(task, Task)
    batch = _batch(np.random.default_rng(2), h=32, w=32)
    variables = task.init_variables(jax.random.key(0), batch)
    assert set(variables) == {"params", "batch_stats"}
    params, state = variables["params"], {"batch_stats": variables["batch_stats"]}
    loss, (metrics, new_state) = jax.jit(
        lambda p, s, b: task.loss_fn(p, s, b, jax.random.key(1), train=True)
    )(params, state, batch)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    assert np.isfinite(loss) and set(metrics) == {"loss", "pixel_accuracy"}
    out = jax.jit(task.predict_fn)(variables, batch)
    chex.assert_shape(out[PRED_KEY], (3, 32, 32))
    chex.assert_type(out[PRED_KEY], jnp.int32)
    chex.assert_shape(out["confidence"], (3, 32, 32))
    logits = model.apply(variables, batch["image"])
    np.testing.assert_array_equal(out[PRED_KEY], np.argmax(logits, -1))


def test_wrong_shapes_and_classes_raise():
    task = SegmentationTask(PerPixelLinear(num_classes=3), K)
    batch = _batch(np.random.default_rng(3))
    variables = task.init_variables(jax.random.key(0), batch)
    with pytest.raises(ValueError, match="logits"):
        task.loss_fn(variables["params"], {}, batch, jax.random.key(0))
    bad = dict(batch, segmentation=batch["segmentation"][:, :3])
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        SegmentationTask(PerPixelLinear(), K).loss_fn(variables["params"], {}, bad, None)
    with pytest.raises(ValueError, match="num_classes"):
        SegmentationTask(PerPixelLinear(), 1)


def test_evaluator_equals_numpy_metrics_and_skips_padding():
    rng = np.random.default_rng(4)
    ev = SegmentationEvaluator(K)
    assert isinstance(ev, Evaluator)
    preds, targets = [], []
    for _ in range(3):
        batch = _batch(rng)
        pred = rng.integers(0, K, size=batch["segmentation"].shape).astype(np.int32)
        pred[2] = 0  # the padded example predicts garbage: must be ignored
        ev.update(batch, {PRED_KEY: pred})
        preds.append(pred[:2])
        targets.append(batch["segmentation"][:2])
    p, t = np.concatenate(preds).ravel(), np.concatenate(targets).ravel()
    keep = t != 255
    p, t = p[keep], t[keep]
    cm = np.zeros((K, K))
    for a, b in zip(t, p, strict=True):
        cm[a, b] += 1
    iou = np.diag(cm) / (cm.sum(0) + cm.sum(1) - np.diag(cm))
    result = ev.result()
    np.testing.assert_allclose(result["pixel_accuracy"], np.mean(p == t))
    np.testing.assert_allclose(result["mean_accuracy"], np.mean(np.diag(cm) / cm.sum(1)))
    np.testing.assert_allclose(result["mIoU"], np.mean(iou))
    np.testing.assert_allclose(result["fwIoU"], np.sum(cm.sum(1) / cm.sum() * iou))
    assert result["num_examples"] == 6
    np.testing.assert_allclose([result[f"class_iou/{k}"] for k in range(K)], iou)
    np.testing.assert_array_equal(ev.confusion, cm)


class VariantsTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_loss_matches_reference_with_ignore_and_padding(self):
        rng = np.random.default_rng(0)
        task = SegmentationTask(PerPixelLinear(), K)
        batch = _batch(rng)
        variables = task.init_variables(jax.random.key(0), batch)
        fn = lambda p, b: task.loss_fn(p, {}, b, jax.random.key(1), train=True)
        loss, (metrics, state) = self.variant(fn)(variables["params"], batch)
        logits = task.model.apply(variables, batch["image"])
        weights = np.broadcast_to(
            batch["example_valid"][:, None, None], batch["segmentation"].shape
        )
        ref_loss, ref_acc = ce_ref(logits, batch["segmentation"], weights)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
        np.testing.assert_allclose(metrics["pixel_accuracy"], ref_acc, rtol=1e-6)
        assert state == {}
        # the padded example does not influence the loss at all
        batch2 = dict(batch, image=batch["image"].copy())
        batch2["image"][2] = 100.0
        np.testing.assert_allclose(fn(variables["params"], batch2)[0], loss, rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_sample_pixels_static_valid_and_never_ignored(self):
        labels = np.full((2, 4, 5), 255, np.int32)
        labels[0, 1, 2], labels[0, 3, 4] = 2, 0  # image 0: only 2 labelled pixels
        labels[1] = np.arange(20).reshape(4, 5) % 3
        fn = lambda key, lab: sample_pixels(key, lab, 6, 3, balance_classes=True)
        coords, targets, valid = self.variant(fn)(jax.random.key(0), labels)
        chex.assert_shape((coords, targets, valid), ((2, 6, 2), (2, 6), (2, 6)))
        np.testing.assert_array_equal(valid.sum(1), [2, 6])
        c, t, v = (np.asarray(a) for a in (coords, targets, valid))
        np.testing.assert_array_equal(labels[np.arange(2)[:, None], c[..., 0], c[..., 1]][v], t[v])
        assert np.all(t[v] != 255)
        assert {tuple(x) for x in c[0][v[0]]} == {(1, 2), (3, 4)}
        assert len({tuple(x) for x in c[1]}) == 6  # without replacement


def test_balanced_sampling_equalises_classes():
    labels = np.zeros((64, 10, 10), np.int32)
    labels[:, :2, :2] = 1  # class 1: 4 pixels of 100
    keys = jax.random.split(jax.random.key(0), 1)[0]
    _, t_bal, _ = sample_pixels(keys, labels, 4, 2, balance_classes=True)
    _, t_uni, _ = sample_pixels(keys, labels, 4, 2, balance_classes=False)
    frac_bal, frac_uni = float(np.mean(t_bal == 1)), float(np.mean(t_uni == 1))
    assert frac_bal > 0.3 and frac_uni < 0.15, (frac_bal, frac_uni)


def test_patch_task_trains_on_samples_and_predicts_densely():
    model = PatchCNN(num_classes=K, **PATCH_TINY)
    task = PatchSegmentationTask(model, K, pixels_per_image=8, chunk_size=7)
    batch = _batch(np.random.default_rng(5))
    variables = task.init_variables(jax.random.key(0), batch)
    loss, (metrics, _) = jax.jit(
        lambda p, b: task.loss_fn(p, {}, b, jax.random.key(1), train=True)
    )(variables["params"], batch)
    assert np.isfinite(loss)
    assert set(metrics) == {"loss", "pixel_accuracy", "sampled_fraction"}
    # image 0 has 20 labelled pixels (>= 8): every requested pixel was sampled
    np.testing.assert_allclose(metrics["sampled_fraction"], 1.0)
    out = jax.jit(task.predict_fn)(variables, batch)
    chex.assert_shape(out[PRED_KEY], (3, 6, 5))
    np.testing.assert_array_equal(
        out[PRED_KEY], np.argmax(model.apply(variables, batch["image"]), -1)
    )


def test_task_from_config():
    import ml_collections

    config = ml_collections.ConfigDict(
        {"model": {"name": "patch_cnn", "num_classes": K}, "segmentation": {"chunk_size": 64}}
    )
    patch = task_from_config(config, PatchCNN(num_classes=K, **PATCH_TINY))
    assert isinstance(patch, PatchSegmentationTask) and patch.chunk_size == 64
    assert patch.pixels_per_image == 256 and patch.balance_classes
    dense = task_from_config(
        ml_collections.ConfigDict({"model": {"num_classes": K}}), PerPixelLinear()
    )
    assert type(dense) is SegmentationTask and dense.num_classes == K
    config.segmentation.stride = 2
    with pytest.raises(ValueError, match="stride"):
        task_from_config(config, PatchCNN(num_classes=K, **PATCH_TINY))
