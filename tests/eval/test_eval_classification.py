"""jaxcv.eval.classification against direct NumPy/sklearn references."""

import numpy as np
import pytest

from jaxcv.eval import classification as cls


def test_top_k_accuracy_matches_sorting_reference():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(200, 7))
    labels = rng.integers(0, 7, 200)
    for k in (1, 3, 7):
        top = np.argsort(-scores, axis=1)[:, :k]
        ref = np.mean([labels[i] in top[i] for i in range(200)])
        assert cls.top_k_accuracy(scores, labels, k) == pytest.approx(ref)


def test_top_k_ties_count_for_the_label():
    scores = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]])
    assert cls.top_k_accuracy(scores, np.array([1, 1]), 1) == 1.0


def test_confusion_matrix_matches_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 5, 300), rng.integers(0, 5, 300)
    np.testing.assert_array_equal(
        cls.confusion_matrix(p, y, 5), metrics.confusion_matrix(y, p, labels=range(5))
    )


def test_localization_accuracy():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    pred = np.array([[0, 0, 10, 5], [0, 0, 10, 6], [0, 0, 10, 10]], np.float32)
    # IoU 0.5 (counts: >= 0.5), 0.6, 1.0; the third has the wrong class
    acc = cls.localization_accuracy([1, 1, 2], pred, [1, 1, 1], boxes)
    assert acc == pytest.approx(2 / 3)
    np.testing.assert_allclose(cls.box_iou_pairs(pred, boxes), [0.5, 0.6, 1.0])


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        cls.top_k_accuracy(np.zeros(3), np.zeros(3, int))
    with pytest.raises(ValueError, match="k must"):
        cls.top_k_accuracy(np.zeros((2, 3)), np.zeros(2, int), k=4)
    with pytest.raises(ValueError, match="labels must be in"):
        cls.top_k_accuracy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        cls.box_iou_pairs(np.zeros((2, 4)), np.zeros((3, 4)))
