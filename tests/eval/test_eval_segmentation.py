"""jaxcv.eval.segmentation against float64 references of the FCN paper's formulas."""

import chex
import numpy as np
import pytest

from jaxcv.eval import segmentation as seg


def ref_confusion(pred, target, k, ignore=255):
    cm = np.zeros((k, k), np.int64)
    for p, t in zip(pred.ravel(), target.ravel(), strict=True):
        if t != ignore:
            cm[t, p] += 1
    return cm


def ref_metrics(cm):
    """Long et al. (2015), section 5, with classes of undefined ratio left out of the means."""
    cm = cm.astype(np.float64)
    k = cm.shape[0]
    n_ii = np.array([cm[i, i] for i in range(k)])
    t_i = np.array([cm[i, :].sum() for i in range(k)])
    p_i = np.array([cm[:, i].sum() for i in range(k)])
    accs = [n_ii[i] / t_i[i] for i in range(k) if t_i[i] > 0]
    ious = [n_ii[i] / (t_i[i] + p_i[i] - n_ii[i]) for i in range(k) if t_i[i] + p_i[i] > 0]
    fw = (
        sum(t_i[i] * n_ii[i] / (t_i[i] + p_i[i] - n_ii[i]) for i in range(k) if t_i[i] + p_i[i] > 0)
        / t_i.sum()
    )
    return {
        "pixel_accuracy": n_ii.sum() / t_i.sum(),
        "mean_accuracy": np.mean(accs),
        "mIoU": np.mean(ious),
        "fwIoU": fw,
    }


def _random(rng, shape, k, ignore_frac=0.1, absent=()):
    target = rng.integers(0, k, shape)
    pred = np.where(rng.random(shape) < 0.6, target, rng.integers(0, k, shape))
    for c in absent:  # a class absent from both prediction and target
        target[target == c] = (c + 1) % k
        pred[pred == c] = (c + 1) % k
    target[rng.random(shape) < ignore_frac] = 255
    return pred.astype(np.int32), target.astype(np.int32)


@pytest.mark.parametrize("seed", range(4))
def test_confusion_and_metrics_match_reference(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 8))
    pred, target = _random(rng, (3, 17, 13), k, absent=(k - 1,) if seed % 2 else ())
    cm = seg.confusion_matrix(pred, target, k)
    chex.assert_shape(cm, (k, k))
    np.testing.assert_array_equal(cm, ref_confusion(pred, target, k))
    got = seg.metrics_from_confusion(cm)
    for key, v in ref_metrics(cm).items():
        assert got[key] == pytest.approx(v, abs=1e-12), key
    if seed % 2:
        assert np.isnan(got["per_class_iou"][k - 1]) and np.isnan(got["per_class_accuracy"][k - 1])


def test_hand_computed():
    # 2 classes; target [0 0 1 1 255], pred [0 1 1 1 0]
    target = np.array([[0, 0, 1, 1, 255]])
    pred = np.array([[0, 1, 1, 1, 0]])
    cm = seg.confusion_matrix(pred, target, 2)
    np.testing.assert_array_equal(cm, [[1, 1], [0, 2]])
    m = seg.metrics_from_confusion(cm)
    assert m["pixel_accuracy"] == pytest.approx(3 / 4)
    assert m["mean_accuracy"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["mIoU"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m["fwIoU"] == pytest.approx((2 * 1 / 2 + 2 * 2 / 3) / 4)


def test_class_predicted_but_absent_from_target_counts_in_iou_only():
    target = np.array([0, 0, 0, 0])
    pred = np.array([0, 0, 1, 1])
    m = seg.metrics_from_confusion(seg.confusion_matrix(pred, target, 3))
    assert m["mean_accuracy"] == pytest.approx(0.5)  # class 1 undefined: not in target
    assert m["mIoU"] == pytest.approx((0.5 + 0.0) / 2)  # class 1 IoU 0; class 2 undefined


def test_streaming_equals_one_shot_and_valid_mask():
    rng = np.random.default_rng(1)
    pred, target = _random(rng, (6, 9, 11), 4)
    acc = seg.SegmentationMetrics(4)
    for b in range(0, 6, 2):
        acc.update(pred[b : b + 2], target[b : b + 2])
    one = seg.metrics_from_confusion(seg.confusion_matrix(pred, target, 4))
    assert acc.result() == {k: one[k] for k in acc.result()}
    padded = seg.SegmentationMetrics(4)
    junk = np.zeros_like(pred[:2])
    padded.update(
        np.concatenate([pred, junk]), np.concatenate([target, junk]), np.r_[[1] * 6, 0, 0]
    )
    np.testing.assert_array_equal(padded.confusion, acc.confusion)
    acc.reset()
    assert acc.confusion.sum() == 0 and np.isnan(acc.result()["mIoU"])


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="shapes differ"):
        seg.confusion_matrix(np.zeros((2, 3), int), np.zeros((3, 2), int), 2)
    with pytest.raises(ValueError, match="integer"):
        seg.confusion_matrix(np.zeros((2, 3)), np.zeros((2, 3), int), 2)
    with pytest.raises(ValueError, match=r"pred labels must be in \[0, 2\)"):
        seg.confusion_matrix(np.full((2, 3), 5), np.zeros((2, 3), int), 2)
    with pytest.raises(ValueError, match="target labels"):
        seg.confusion_matrix(np.zeros((2, 3), int), np.full((2, 3), 7), 2)
    with pytest.raises(ValueError, match=r"\(K, K\)"):
        seg.metrics_from_confusion(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="valid"):
        seg.SegmentationMetrics(2).update(np.zeros((2, 3), int), np.zeros((2, 3), int), [1])
