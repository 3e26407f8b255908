"""LocalizationTask and LocalizationEvaluator against float64 NumPy references."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxcv.eval.classification import localization_accuracy
from jaxcv.models.localizer import Localizer
from jaxcv.tasks.localization import (
    LOCALIZATION_KEYS,
    LocalizationEvaluator,
    LocalizationTask,
    image_labels,
    localization_metrics,
    task_from_config,
)
from jaxcv.tasks.window_sampling import WindowSampling, training_windows

FIELDS = {"channels": (4, 8), "hidden_units": (16,), "box_hidden_units": (8,)}
WEIGHTS = (10.0, 10.0, 5.0, 5.0)
HW = 24


def np_encode(boxes, anchor, weights):
    boxes = np.asarray(boxes, np.float64)
    aw, ah = anchor[2] - anchor[0], anchor[3] - anchor[1]
    acx, acy = anchor[0] + aw / 2, anchor[1] + ah / 2
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = boxes[:, 0] + w / 2, boxes[:, 1] + h / 2
    return np.stack(
        [
            weights[0] * (cx - acx) / aw,
            weights[1] * (cy - acy) / ah,
            weights[2] * np.log(w / aw),
            weights[3] * np.log(h / ah),
        ],
        1,
    )


def np_decode(deltas, anchor, weights):
    d = np.asarray(deltas, np.float64) / np.asarray(weights)
    aw, ah = anchor[2] - anchor[0], anchor[3] - anchor[1]
    cx, cy = anchor[0] + aw / 2 + d[:, 0] * aw, anchor[1] + ah / 2 + d[:, 1] * ah
    w, h = aw * np.exp(d[:, 2]), ah * np.exp(d[:, 3])
    out = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    return np.clip(out, 0, HW)


def np_iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def np_ce(logits, labels):
    z = np.asarray(logits, np.float64)
    z = z - z.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return -logp[np.arange(len(labels)), labels]


def np_smooth_l1(x, beta=1.0):
    a = np.abs(x)
    return np.where(a < beta, 0.5 * a * a / beta, a - 0.5 * beta)


def make_batch(seed=0, b=6, m=3, k=3):
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(0, 10, size=(b, m))
    y1 = rng.uniform(0, 10, size=(b, m))
    boxes = np.stack(
        [x1, y1, x1 + rng.uniform(4, 14, (b, m)), y1 + rng.uniform(4, 14, (b, m))], -1
    ).astype(np.float32)
    valid = rng.uniform(size=(b, m)) < 0.6
    valid[0] = [False, True, True]  # first valid box is the second one
    valid[1] = False  # no box at all
    labels = rng.integers(0, k, size=b).astype(np.int32)
    classes = np.where(valid, labels[:, None] + 1, 0)
    valid[2:, 2] = True
    classes[2:, 2] = (labels[2:] + 1) % k + 1  # a valid box of another class: never matched
    return {
        "image": rng.normal(size=(b, HW, HW, 3)).astype(np.float32),
        "label": labels,
        "boxes": boxes,
        "classes": classes.astype(np.int32),
        "valid": valid,
        "example_valid": np.array([True] * (b - 1) + [False]),
    }


@pytest.mark.parametrize("class_specific", [False, True])
@pytest.mark.parametrize("box_loss", ["smooth_l1", "l2"])
def test_loss_matches_numpy(class_specific, box_loss):
    model = Localizer(num_classes=3, class_specific=class_specific, **FIELDS)
    task = LocalizationTask(model, box_loss=box_loss, box_loss_weight=2.0, box_weights=WEIGHTS)
    batch = make_batch()
    variables = task.init_variables(jax.random.PRNGKey(0), batch)
    params = variables.pop("params")
    loss, (metrics, new_state) = jax.jit(lambda p, s, b: task.loss_fn(p, s, b, None, train=False))(
        params, variables, batch
    )
    out = model.apply({"params": params, **variables}, batch["image"])
    logits, deltas = np.asarray(out["logits"]), np.asarray(out["box_deltas"], np.float64)
    labels = batch["label"]
    w = batch["example_valid"].astype(np.float64)
    has_box = batch["valid"].any(1)
    first = batch["valid"].argmax(1)
    gt = batch["boxes"][np.arange(6), first].astype(np.float64)
    window = np.array([0, 0, HW, HW], np.float64)
    gt = np.where(has_box[:, None], gt, window)
    sel = deltas[np.arange(6), labels] if class_specific else deltas
    diff = sel - np_encode(gt, window, WEIGHTS)
    per = (np_smooth_l1(diff) if box_loss == "smooth_l1" else 0.5 * diff**2).sum(1)
    bw = w * has_box
    cls = (np_ce(logits, labels) * w).sum() / w.sum()
    box = (per * bw).sum() / bw.sum()
    np.testing.assert_allclose(float(metrics["cls_loss"]), cls, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["box_loss"]), box, rtol=1e-4)
    np.testing.assert_allclose(float(loss), cls + 2.0 * box, rtol=1e-4)
    pred = logits.argmax(1)
    pdel = deltas[np.arange(6), pred] if class_specific else deltas
    pbox = np_decode(pdel, window, WEIGHTS)
    ious = np.array([np_iou(pbox[i], gt[i]) * has_box[i] for i in range(6)])
    np.testing.assert_allclose(float(metrics["accuracy"]), ((pred == labels) * w).sum() / w.sum())
    np.testing.assert_allclose(float(metrics["mean_iou"]), (ious * bw).sum() / bw.sum(), atol=1e-5)
    np.testing.assert_allclose(
        float(metrics["localization_accuracy"]),
        ((pred == labels) * (ious >= 0.5) * w).sum() / w.sum(),
    )
    chex.assert_trees_all_equal(new_state, variables)


class LocalizationTaskJitTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_predict_shapes_and_boxes(self):
        model = Localizer(num_classes=3, class_specific=True, **FIELDS)
        task = LocalizationTask(model, box_weights=WEIGHTS)
        batch = make_batch(1)
        variables = task.init_variables(jax.random.PRNGKey(1), batch)
        out = self.variant(task.predict_fn)(variables, {"image": batch["image"]})
        chex.assert_shape([out["logits"], out["probs"]], (6, 3))
        chex.assert_shape(out["pred_label"], (6,))
        chex.assert_shape(out["pred_boxes"], (6, 4))
        raw = model.apply(variables, batch["image"])
        pred = np.asarray(raw["logits"]).argmax(1)
        ref = np_decode(np.asarray(raw["box_deltas"])[np.arange(6), pred], [0, 0, HW, HW], WEIGHTS)
        np.testing.assert_allclose(out["pred_boxes"], ref, atol=1e-4)
        np.testing.assert_array_equal(out["pred_label"], pred)

    @chex.variants(with_jit=True, without_jit=True)
    def test_train_step_updates_batch_stats(self):
        model = Localizer(num_classes=3, dropout_rate=0.2, **FIELDS)
        task = LocalizationTask(model)
        batch = make_batch(2)
        variables = task.init_variables(jax.random.PRNGKey(2), batch)
        params = variables.pop("params")
        grad_fn = jax.grad(lambda p, s, b, k: task.loss_fn(p, s, b, k, train=True), has_aux=True)
        grads, (metrics, new_state) = self.variant(grad_fn)(
            params, variables, batch, jax.random.PRNGKey(3)
        )
        chex.assert_trees_all_equal_structs(grads, params)
        chex.assert_tree_all_finite(grads)
        chex.assert_trees_all_equal_structs(new_state, variables)
        assert set(metrics) >= {"loss", "cls_loss", "box_loss", "accuracy", "mean_iou"}
        # The box head gets gradient only through the box loss.
        assert float(jnp.abs(grads["box_out"]["kernel"]).sum()) > 0


def test_evaluator_matches_numpy_reference():
    rng = np.random.default_rng(4)
    evaluator = LocalizationEvaluator()
    all_rows = []
    for seed in range(3):
        batch = make_batch(10 + seed)
        logits = rng.normal(size=(6, 3)).astype(np.float32)
        gt = batch["boxes"]
        # Predictions: near a random ground-truth box, or anywhere.
        logits[np.arange(6), batch["label"]] += rng.choice([0.0, 3.0], size=6)
        pred = gt[:, rng.integers(0, 3)] + rng.normal(0, 1.5, size=(6, 4)).astype(np.float32)
        pred[:, 2:] = np.maximum(pred[:, 2:], pred[:, :2] + 1)
        evaluator.update(batch, {"logits": logits, "pred_boxes": pred})
        for i in np.flatnonzero(batch["example_valid"]):
            ious = [
                np_iou(pred[i], gt[i, j])
                for j in range(3)
                if batch["valid"][i, j] and batch["classes"][i, j] == batch["label"][i] + 1
            ]
            best = max(ious, default=0.0)
            right = logits[i].argmax() == batch["label"][i]
            all_rows.append(
                (right, best, right and best >= 0.5, bool(ious), logits[i], batch["label"][i])
            )
    result = evaluator.result()
    right, best, loc, has = (np.array([r[k] for r in all_rows]) for k in range(4))
    assert result["num_examples"] == len(all_rows) == 15
    assert result["num_with_box"] == has.sum()
    np.testing.assert_allclose(result["accuracy"], right.mean())
    np.testing.assert_allclose(result["localization_accuracy"], loc.mean())
    assert 0 < loc.sum() < len(loc)  # the test exercises both outcomes
    np.testing.assert_allclose(result["mean_iou"], best[has].mean(), rtol=1e-6)
    ce = np_ce(np.stack([r[4] for r in all_rows]), np.array([r[5] for r in all_rows]))
    np.testing.assert_allclose(result["loss"], ce.mean(), rtol=1e-6)


def test_single_box_agrees_with_jaxcv_eval():
    rng = np.random.default_rng(5)
    n = 40
    xy = rng.uniform(0, 30, size=(n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 20, size=(n, 2))], 1)
    pred = boxes + rng.normal(0, 2, size=(n, 4))
    logits = rng.normal(size=(n, 4))
    labels = rng.integers(0, 4, n)
    m = localization_metrics(logits, pred, labels, boxes[:, None], np.ones((n, 1), bool))
    ref = localization_accuracy(logits.argmax(1), pred, labels, boxes)
    np.testing.assert_allclose(m["localized"].mean(), ref)


def test_empty_evaluator_and_errors():
    result = LocalizationEvaluator().result()
    assert np.isnan(result["accuracy"]) and result["num_examples"] == 0
    with pytest.raises(ValueError, match="pred_boxes"):
        localization_metrics(
            np.zeros((2, 3)),
            np.zeros((2, 5)),
            np.zeros(2, int),
            np.zeros((2, 1, 4)),
            np.ones((2, 1), bool),
        )
    with pytest.raises(ValueError, match="box_loss"):
        LocalizationTask(Localizer(num_classes=2), box_loss="l3")
    task = LocalizationTask(Localizer(num_classes=3, **FIELDS))
    batch = make_batch()
    variables = task.init_variables(jax.random.PRNGKey(0), batch)
    params = variables.pop("params")
    bad = dict(batch, boxes=batch["boxes"][:, 0])
    with pytest.raises(ValueError, match=r"boxes.*\(6, M, 4\)"):
        task.loss_fn(params, variables, bad, None, train=False)


def test_constructor_reads_config():
    config = ml_collections.ConfigDict(
        {
            "train": {"label_smoothing": 0.1},
            "localization": {"box_loss": "l2", "box_loss_weight": 3.0, "box_weights": (1, 1, 1, 1)},
        }
    )
    task = task_from_config(config, Localizer(num_classes=2))
    assert (task.box_loss, task.box_loss_weight, task.box_weights) == ("l2", 3.0, (1, 1, 1, 1))
    assert task.label_smoothing == 0.1
    assert set(LOCALIZATION_KEYS) == {"image", "boxes", "classes", "valid"}


def test_labels_from_objects_when_the_dataset_has_none():
    """VOC-style data: the image class is the first valid object's class."""
    batch = make_batch(7)
    first = batch["valid"].argmax(1)
    has_box = batch["valid"].any(1)
    batch["classes"] = np.where(batch["valid"], 1 + np.arange(3)[None] % 3, 0).astype(np.int32)
    derived = np.where(has_box, batch["classes"][np.arange(6), first] - 1, 0)
    labels, known = image_labels({k: v for k, v in batch.items() if k != "label"}, np)
    np.testing.assert_array_equal(labels, derived)
    np.testing.assert_array_equal(known, has_box)
    task = LocalizationTask(Localizer(num_classes=3, **FIELDS))
    variables = task.init_variables(jax.random.PRNGKey(0), batch)
    params = variables.pop("params")
    no_label = {k: v for k, v in batch.items() if k != "label"}
    with_label = dict(
        batch, label=derived.astype(np.int32), example_valid=batch["example_valid"] & has_box
    )
    _, (m1, _) = task.loss_fn(params, variables, no_label, None, train=False)
    _, (m2, _) = task.loss_fn(params, variables, with_label, None, train=False)
    chex.assert_trees_all_close(m1, m2, rtol=1e-6)
    outputs = task.predict_fn({"params": params, **variables}, batch)
    e1, e2 = LocalizationEvaluator(), LocalizationEvaluator()
    e1.update(no_label, outputs)
    e2.update(with_label, outputs)
    assert e1.result() == e2.result()
    assert e1.result()["num_examples"] == (batch["example_valid"] & has_box).sum()


def _scene_batch(seed=8, b=4, size=48):
    """Scenes twice the 24-px window with one box each."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 20, (b, 1, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(8, 20, (b, 1, 2))], -1).astype(np.float32)
    labels = rng.integers(0, 3, b).astype(np.int32)
    return {
        "image": rng.normal(size=(b, size, size, 3)).astype(np.float32),
        "label": labels,
        "boxes": boxes,
        "classes": (labels[:, None] + 1).astype(np.int32),
        "valid": np.ones((b, 1), bool),
    }


@pytest.mark.parametrize("background", [False, True])
def test_window_mode_evaluates_the_resized_scene(background):
    """With a window, evaluation is the whole-image task on scenes resized to the window."""
    model = Localizer(num_classes=3, background=background, **FIELDS)
    windowed = LocalizationTask(model, box_weights=WEIGHTS, window=(HW, HW))
    plain = LocalizationTask(model, box_weights=WEIGHTS)
    batch = _scene_batch()
    variables = windowed.init_variables(jax.random.PRNGKey(0), batch)
    assert variables["params"]["cls_out"]["kernel"].shape[-1] == 3 + background
    resized = dict(
        batch,
        image=np.asarray(jax.image.resize(batch["image"], (4, HW, HW, 3), "linear")),
        boxes=batch["boxes"] / 2,
    )
    params = {k: v for k, v in variables.items() if k != "params"}
    _, (m_win, _) = windowed.loss_fn(variables["params"], params, batch, None, train=False)
    _, (m_ref, _) = plain.loss_fn(variables["params"], params, resized, None, train=False)
    chex.assert_trees_all_close(m_win, m_ref, rtol=1e-5, atol=1e-6)
    out = windowed.predict_fn(variables, batch)
    ref = plain.predict_fn(variables, resized)
    chex.assert_shape(out["logits"], (4, 3))
    np.testing.assert_array_equal(out["pred_label"], ref["pred_label"])
    np.testing.assert_allclose(out["pred_boxes"], 2 * np.asarray(ref["pred_boxes"]), atol=1e-4)
    if background:
        raw = model.apply(variables, resized["image"])["logits"]
        z = np.exp(np.asarray(raw, np.float64))
        np.testing.assert_allclose(out["background_prob"], z[:, 3] / z.sum(1), rtol=1e-5)
    else:
        assert "background_prob" not in out


def test_window_mode_trains_on_sampled_windows():
    """The training loss is the loss of the sampled windows (background = class K)."""
    model = Localizer(num_classes=3, background=True, batch_norm=False, **FIELDS)
    sampling = WindowSampling(num_object=2, num_random=3, random_scale=(0.75, 1.5))
    task = LocalizationTask(model, box_weights=WEIGHTS, window=(HW, HW), sampling=sampling)
    batch = _scene_batch(9)
    variables = task.init_variables(jax.random.PRNGKey(1), batch)
    rng = jax.random.PRNGKey(2)
    loss, (metrics, _) = jax.jit(lambda p, b, k: task.loss_fn(p, {}, b, k, train=True))(
        variables["params"], batch, rng
    )
    _, key = jax.random.split(rng)
    ex = training_windows(
        key,
        jnp.asarray(batch["image"]),
        jnp.asarray(batch["boxes"]),
        jnp.asarray(batch["classes"]),
        jnp.asarray(batch["valid"]),
        (HW, HW),
        sampling,
        num_classes=3,
        background=True,
    )
    out = model.apply(variables, ex["images"].reshape(-1, HW, HW, 3))
    target = np.asarray(ex["class_target"]).reshape(-1)
    cw = np.asarray(ex["class_weight"]).reshape(-1)
    bw = np.asarray(ex["box_weight"]).reshape(-1)
    assert cw.sum() > bw.sum() > 0  # some background and some object windows
    cls = (np_ce(np.asarray(out["logits"]), target) * cw).sum() / cw.sum()
    window = np.array([0, 0, HW, HW], np.float64)
    diff = np.asarray(out["box_deltas"], np.float64) - np_encode(
        np.asarray(ex["box_target"]).reshape(-1, 4), window, WEIGHTS
    )
    box = (np_smooth_l1(diff).sum(1) * bw).sum() / bw.sum()
    np.testing.assert_allclose(float(metrics["cls_loss"]), cls, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["box_loss"]), box, rtol=1e-4)
    np.testing.assert_allclose(float(loss), cls + box, rtol=1e-4)
    bg = (target == 3) & (cw > 0)
    np.testing.assert_allclose(float(metrics["background_fraction"]), bg.sum() / cw.sum())
    grads = jax.grad(lambda p: task.loss_fn(p, {}, batch, rng, train=True)[0])(variables["params"])
    chex.assert_tree_all_finite(grads)
    with pytest.raises(ValueError, match="needs an rng"):
        task.loss_fn(variables["params"], {}, batch, None, train=True)


def test_constructor_reads_window_sampling():
    config = ml_collections.ConfigDict(
        {
            "train": {},
            "localization": {
                "window": (64, 64),
                "sampling": {"num_object": 1, "num_random": 4, "relative_size": [0.2, 0.6]},
            },
        }
    )
    task = task_from_config(config, Localizer(num_classes=2, background=True))
    assert task.window == (64, 64) and task.background
    assert task.sampling == WindowSampling(num_object=1, num_random=4, relative_size=(0.2, 0.6))
    with pytest.raises(ValueError, match="window"):
        LocalizationTask(Localizer(num_classes=2), window=(64,))
