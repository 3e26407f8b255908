"""R-CNN's SVMs and ridge regressors: mining, ridge, features, labels, predictions, errors."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxcv.models.fast_rcnn import FastRCNN
from jaxcv.models.rcnn import RCNN
from jaxcv.tasks.detection import postprocess_detections
from jaxcv.tasks.rcnn import RCNNTask
from jaxcv.tasks.rcnn_svm import (
    SVM_KEYS,
    RCNNSVMTask,
    SVMSettings,
    fit_ridge,
    fit_svms,
    mine_hard_negatives,
    svm_labels,
    svm_settings_from_config,
)
from tests.tasks.test_fast_rcnn import K, _encode, _real_batch

MODEL = RCNN(
    num_classes=K,
    backbone_widths=(8, 8, 8, 8),
    backbone_depth=1,
    warp_size=32,
    context_padding=4.0,
    representation_size=16,
)
W = (10.0, 10.0, 5.0, 5.0)


@pytest.fixture(scope="module")
def variables():
    batch = _real_batch(np.random.default_rng(0), 1)
    return RCNNTask(MODEL).init_variables(jax.random.PRNGKey(0), batch)


def _decode(deltas, ref, w=W):
    rw, rh = ref[2] - ref[0], ref[3] - ref[1]
    cx, cy = ref[0] + 0.5 * rw + deltas[0] / w[0] * rw, ref[1] + 0.5 * rh + deltas[1] / w[1] * rh
    bw, bh = np.exp(deltas[2] / w[2]) * rw, np.exp(deltas[3] / w[3]) * rh
    return np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])


def test_hard_negative_mining_converges_to_the_svm_of_all_negatives():
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(0)
    num_images, f = 20, 16
    features = np.concatenate([rng.normal(size=(40, f)) + 1.5, rng.normal(size=(2000, f))])
    features = (features * 20 / np.linalg.norm(features, axis=1).mean()).astype(np.float32)
    groups = np.concatenate([np.arange(40) % num_images, np.repeat(np.arange(num_images), 100)])
    positives, negatives = np.arange(40), np.arange(40, 2040)
    settings = SVMSettings(hard_negative_rounds=20, max_negatives_per_image=5)
    w, b, record = mine_hard_negatives(
        features, positives, negatives, groups, settings, np.random.default_rng(0)
    )
    assert record["rounds"] >= 2 and record["hard_left"] == 0
    assert record["positives"] == 40 and record["negative_candidates"] == 2000
    assert 100 < record["negatives"] < 2000  # 5 per image first, then the hard ones
    assert record["negatives"] == 100 + sum(record["hard_added"])
    svc = LinearSVC(
        C=0.001,
        loss="hinge",
        dual=True,
        class_weight={1: 2.0, -1: 1.0},
        intercept_scaling=10.0,
        max_iter=10_000,
        random_state=0,
    ).fit(features, np.r_[np.ones(40), -np.ones(2000)])
    want = svc.decision_function(features)
    assert np.abs(want).max() > 1.0  # a non-trivial SVM
    np.testing.assert_allclose(features.astype(np.float64) @ w + b, want, atol=1e-3)
    # The round cap stops the mining before convergence.
    capped = SVMSettings(hard_negative_rounds=0, max_negatives_per_image=5)
    *_, record = mine_hard_negatives(
        features, positives, negatives, groups, capped, np.random.default_rng(0)
    )
    assert record["rounds"] == 1 and record["negatives"] == 100 and record["hard_left"] > 0


@pytest.mark.parametrize("n", [50, 10])  # more and fewer examples than features
def test_ridge_equals_the_closed_form_with_an_unpenalised_intercept(n):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 20)) + rng.normal(size=20)
    y = x @ rng.normal(size=(20, 4)) + rng.normal(size=(n, 4)) + 3.0
    alpha = 3.0
    w, b = fit_ridge(x.astype(np.float32), y, alpha)
    xm, ym = x.mean(0), y.mean(0)
    xc, yc = x - xm, y - ym
    want_w = np.linalg.solve(xc.T @ xc + alpha * np.eye(20), xc.T @ yc)
    want_b = ym - xm @ want_w
    assert w.shape == (20, 4) and b.shape == (4,)
    np.testing.assert_allclose(w, want_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b, want_b, rtol=1e-5, atol=1e-6)


def test_features_are_the_heads_pool5_and_fc7(variables):
    batch = _real_batch(np.random.default_rng(1), 2)
    images, rois = jnp.asarray(batch["image"]), jnp.asarray(batch["proposals"])
    feats = MODEL.apply(variables, images, rois, method=RCNN.features)
    out = MODEL.apply(variables, images, rois)
    assert feats["pool5"].shape == (2, 12, 2 * 2 * 8) and feats["fc7"].shape == (2, 12, 16)
    assert feats["fc7"].dtype == jnp.float32 and np.all(np.asarray(feats["fc7"]) >= 0)
    head = variables["params"]["box_head"]
    logits = feats["fc7"] @ head["cls_score"]["kernel"] + head["cls_score"]["bias"]
    np.testing.assert_allclose(logits, out["class_logits"], atol=1e-5)
    deltas = feats["pool5"] @ head["bbox_pred"]["kernel"] + head["bbox_pred"]["bias"]
    np.testing.assert_allclose(deltas.reshape(2, 12, K + 1, 4), out["box_deltas"], atol=1e-5)
    fc6 = jax.nn.relu(feats["pool5"] @ head["fc6"]["kernel"] + head["fc6"]["bias"])
    fc7 = jax.nn.relu(fc6 @ head["fc7"]["kernel"] + head["fc7"]["bias"])
    np.testing.assert_allclose(fc7, feats["fc7"], atol=1e-5)


def _shifted(d):
    """``[10, 10, 30, 30]`` moved right by ``d``: IoU ``(20 - d) / (20 + d)`` with it."""
    return [10.0 + d, 10.0, 30.0 + d, 30.0]


def test_labels_positives_are_the_ground_truth_and_negatives_below_the_iou():
    gt = np.array([[10, 10, 30, 30], [60, 60, 80, 80]], np.float32)
    proposals = np.array(
        [
            _shifted(20 * 0.71 / 1.29),  # IoU 0.29 with the class-1 object
            _shifted(20 * 0.69 / 1.31),  # IoU 0.31
            gt[0],  # the class-1 box itself, as a proposal
            [62, 60, 82, 80],  # IoU 0.82 with the class-2 object only
            [0, 50, 8, 58],  # touches nothing
        ],
        np.float32,
    )
    labels = svm_labels(proposals, gt, [1, 2], K)
    # Windows: gt 1, gt 2, then the 5 proposals.
    assert labels["windows"].shape == (7, 4)
    np.testing.assert_array_equal(labels["positive"][:, 0], [1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(labels["positive"][:, 1], [0, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(labels["negative"][:, 0], [0, 1, 1, 0, 0, 1, 1])
    np.testing.assert_array_equal(labels["negative"][:, 1], [1, 0, 1, 1, 1, 0, 1])
    np.testing.assert_array_equal(labels["regression_class"], [1, 2, 0, 0, 1, 2, 0])
    np.testing.assert_allclose(labels["regression_target"][5], _encode(gt[1], proposals[3]))
    np.testing.assert_allclose(labels["regression_target"][[0, 1, 4]], 0.0, atol=1e-6)
    assert not labels["regression_target"][[2, 3, 6]].any()


def _tree(rng, f5, f7):
    return {
        "svm_w": rng.normal(size=(f7, K)).astype(np.float32),
        "svm_b": np.array([0.5, -0.5], np.float32),
        "feature_scale": np.float32(3.0),
        "ridge_w": (0.01 * rng.normal(size=(f5, K, 4))).astype(np.float32),
        "ridge_b": np.array([[1.0, -2.0, 0.5, 0.3], [-1.0, 1.0, -0.2, 0.1]], np.float32),
        "pool5_scale": np.float32(0.5),
    }


def test_predict_fn_ranks_by_svm_score_and_decodes_the_ridge_box(variables):
    batch = _real_batch(np.random.default_rng(2), 2, b=1)
    tree = _tree(np.random.default_rng(3), 32, 16)
    task = RCNNSVMTask(MODEL, test_chunk_size=5, detections_per_image=6)  # 3 chunks
    feats = MODEL.apply(
        variables, jnp.asarray(batch["image"]), jnp.asarray(batch["proposals"]), method="features"
    )
    fc7, pool5 = (np.asarray(feats[k][0], np.float64) for k in ("fc7", "pool5"))
    scores = fc7 * 3.0 @ tree["svm_w"] + tree["svm_b"]  # (P, K)
    deltas = np.einsum("pf,fkd->pkd", pool5 * 0.5, tree["ridge_w"]) + tree["ridge_b"]
    predict = jax.jit(task.predict_fn)
    best = []
    for _ in range(2):  # then without the best proposal: another one comes first
        out = predict({**variables, "svm": tree}, batch)
        valid_scores = np.where(batch["proposal_valid"][0, :, None], scores, -np.inf)
        p, c = np.unravel_index(np.argmax(valid_scores), scores.shape)
        assert out["pred_valid"][0].all() and out["pred_classes"][0, 0] == c + 1
        np.testing.assert_allclose(out["pred_scores"][0, 0], scores[p, c], rtol=1e-5)
        box = np.clip(_decode(deltas[p, c], batch["proposals"][0, p]), 0, 64)
        np.testing.assert_allclose(out["pred_boxes"][0, 0], box, rtol=1e-5, atol=1e-4)
        assert np.all(np.diff(out["pred_scores"][0]) <= 0)
        best.append((p, scores[p, c]))
        batch["proposal_valid"][0, p] = False
    assert best[1][0] != best[0][0] and best[1][1] < best[0][1]


def test_postprocess_with_class_scores_equals_the_softmax_path():
    rng = np.random.default_rng(6)
    logits = jnp.asarray(rng.normal(size=(2, 9, K + 1)), jnp.float32)
    deltas = jnp.asarray(rng.normal(size=(2, 9, K + 1, 4)), jnp.float32)
    xy = rng.uniform(0, 40, (2, 9, 2))
    proposals = jnp.asarray(np.concatenate([xy, xy + rng.uniform(4, 20, (2, 9, 2))], -1))
    valid = jnp.asarray(rng.random((2, 9)) < 0.8)
    kw = dict(score_threshold=0.1, nms_threshold=0.3, detections_per_image=5)
    want = postprocess_detections(logits, deltas, proposals, valid, (64, 64), **kw)
    scores = jax.nn.softmax(logits, axis=-1)[..., 1:]
    got = postprocess_detections(
        scores, deltas[:, :, 1:], proposals, valid, (64, 64), class_scores=True, **kw
    )
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6)


def test_fit_svms_end_to_end(variables):
    rng = np.random.default_rng(4)
    batches = [_real_batch(rng, 2) for _ in range(3)]
    classes = np.concatenate([b["classes"][:, :2].ravel() for b in batches[:2]])
    task = RCNNTask(MODEL, test_chunk_size=7)
    settings = SVMSettings(num_images=4, max_negatives_per_image=4)
    tree, stats = fit_svms(task, variables, batches, settings)
    assert set(tree) == set(SVM_KEYS)
    shapes = {k: v.shape for k, v in tree.items()}
    assert shapes == {
        "svm_w": (16, K),
        "svm_b": (K,),
        "feature_scale": (),
        "ridge_w": (32, K, 4),
        "ridge_b": (K, 4),
        "pool5_scale": (),
    }
    assert all(v.dtype == np.float32 for v in tree.values())
    assert stats["num_images"] == 4 and stats["num_windows"] == 4 * (2 + 12)
    for record in stats["classes"]:
        assert record["positives"] == np.sum(classes == record["class"]) > 0
        assert record["regression_examples"] >= record["positives"]
        assert record["rounds"] >= 1 and record["negatives"] >= 1
    assert set(stats["seconds"]) == {"features", "svm", "ridge", "total"}
    out = jax.jit(RCNNSVMTask(MODEL).predict_fn)({**variables, "svm": tree}, batches[2])
    assert out["pred_boxes"].shape == (2, 100, 4) and np.isfinite(out["pred_scores"]).all()


def test_settings_from_config():
    config = ml_collections.ConfigDict({"svm": {"C": 0.01, "hard_negative_rounds": 2}})
    settings = svm_settings_from_config(config)
    assert settings.C == 0.01 and settings.hard_negative_rounds == 2
    assert settings.positive_weight == 2.0 and settings.ridge_alpha == 1000.0
    assert svm_settings_from_config(ml_collections.ConfigDict()) == SVMSettings()
    with pytest.raises(ValueError, match=r"unknown key 'c' in config.svm"):
        svm_settings_from_config({"svm": {"c": 1.0}})


def test_bad_inputs(variables):
    rng = np.random.default_rng(5)
    batch = _real_batch(rng, 1)
    batch["classes"][:, 0] = 1  # class 2 never occurs
    with pytest.raises(ValueError, match=r"^class 2 has no SVM positives among the 2 training"):
        fit_svms(RCNNTask(MODEL), variables, [batch], SVMSettings())
    with pytest.raises(ValueError, match="no training images"):
        fit_svms(RCNNTask(MODEL), variables, [], SVMSettings())
    fast = FastRCNN(num_classes=K, backbone_widths=(8, 8, 8, 8), representation_size=16)
    with pytest.raises(ValueError, match=r"need an R-CNN model.*got FastRCNN"):
        fit_svms(RCNNTask(fast), variables, [batch], SVMSettings())
    with pytest.raises(ValueError, match="need an R-CNN model"):
        RCNNSVMTask(fast)
    task = RCNNSVMTask(MODEL)
    with pytest.raises(ValueError, match="no 'svm' collection"):
        task.predict_fn(variables, batch)
    tree = _tree(rng, 32, 16)
    with pytest.raises(ValueError, match=r"variables\['svm'\]\['ridge_w'\] must be \(32, 2, 4\)"):
        task.predict_fn({**variables, "svm": {**tree, "ridge_w": tree["ridge_w"][:, :1]}}, batch)
    with pytest.raises(ValueError, match="must have the keys"):
        task.predict_fn({**variables, "svm": {"svm_w": tree["svm_w"]}}, batch)
    with pytest.raises(ValueError, match=r"SVMSettings\.C must be > 0"):
        SVMSettings(C=0.0)
    with pytest.raises(ValueError, match="negative_iou must be in"):
        SVMSettings(negative_iou=1.5)
    with pytest.raises(ValueError, match=r"gt_classes must be in 1\.\.2"):
        svm_labels(np.zeros((1, 4)), np.ones((1, 4)), [3], K)
