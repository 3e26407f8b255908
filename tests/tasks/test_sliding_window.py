"""Sliding windows: crop extraction, the winning window, Overfeat box merging and per-class NMS."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcv.models.overfeat import ScaleOutput
from jaxcv.tasks.sliding_window import (
    best_window,
    detect,
    extract_windows,
    merge_boxes,
    nms_boxes,
    window_candidates,
)


def np_merge(boxes, scores, classes, valid, iou_thr, center_thr, max_output):
    """Float64 reference of the greedy merge, one Python loop."""
    boxes = np.asarray(boxes, np.float64)
    assigned = ~np.asarray(valid, bool)
    out = []
    while len(out) < max_output and not assigned.all():
        rem = np.where(assigned, -np.inf, scores)
        s = int(np.argmax(rem))
        seed = boxes[s]
        members = []
        for i in range(len(boxes)):
            if assigned[i] or classes[i] != classes[s]:
                continue
            b = boxes[i]
            iw = max(0, min(b[2], seed[2]) - max(b[0], seed[0]))
            ih = max(0, min(b[3], seed[3]) - max(b[1], seed[1]))
            inter = iw * ih
            union = (b[2] - b[0]) * (b[3] - b[1]) + (seed[2] - seed[0]) * (seed[3] - seed[1])
            iou = inter / (union - inter)
            d = np.hypot(
                (b[0] + b[2] - seed[0] - seed[2]) / 2, (b[1] + b[3] - seed[1] - seed[3]) / 2
            )
            size = np.sqrt((seed[2] - seed[0]) * (seed[3] - seed[1]))
            if i == s or (iou >= iou_thr and d <= center_thr * size):
                members.append(i)
        w = np.asarray(scores, np.float64)[members]
        out.append((boxes[members].T @ w / w.sum(), w.sum(), classes[s], len(members)))
        assigned[members] = True
    out.sort(key=lambda r: -r[1])
    return out


def test_extract_windows_matches_slicing():
    images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 11, 13, 3)), jnp.float32)
    crops = extract_windows(images, (5, 4), 3, (3, 4))
    chex.assert_shape(crops, (2, 3, 4, 5, 4, 3))
    for i in range(3):
        for j in range(4):
            np.testing.assert_array_equal(
                crops[:, i, j], images[:, 3 * i : 3 * i + 5, 3 * j : 3 * j + 4]
            )
    with pytest.raises(ValueError, match="do not fit"):
        extract_windows(images, (5, 4), 3, (4, 4))


def test_best_window_takes_the_winning_box():
    probs = np.full((1, 1, 5, 2), 0.5, np.float32)
    probs[0, 0, :, 1] = [0.02, 0.1, 0.3, 0.6, 0.8]  # "location 4 -> score 0.8"
    probs[0, 0, :, 0] = 1 - probs[0, 0, :, 1]
    boxes = np.arange(20, dtype=np.float32).reshape(1, 1, 5, 4)
    out = best_window(jnp.asarray(probs), jnp.asarray(boxes))
    # Location 0's class 0 scores 0.98: it wins over location 4's class 1 (0.8).
    assert int(out["index"][0]) == 0 and int(out["label"][0]) == 0
    np.testing.assert_allclose(out["score"], [0.98], rtol=1e-6)
    probs[0, 0, 0] = [0.1, 0.9]
    specific = np.tile(boxes[..., None, :], (1, 1, 1, 2, 1))
    specific[0, 0, 0, 1] = [7, 7, 9, 9]
    out = best_window(jnp.asarray(probs), jnp.asarray(specific))
    assert int(out["index"][0]) == 0 and int(out["label"][0]) == 1
    np.testing.assert_array_equal(out["box"][0], [7, 7, 9, 9])


class MergeBoxesTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_hand_made_cases(self):
        boxes = jnp.array(
            [
                [10, 10, 30, 30],  # seed of cluster A (class 1)
                [12, 10, 32, 30],  # matches A
                [10, 12, 30, 32],  # matches A
                [11, 11, 31, 31],  # same place, other class: its own detection
                [60, 60, 80, 80],  # far away: its own detection
                [10, 10, 30, 30],  # invalid: ignored
                [14, 14, 50, 50],  # overlaps A's seed a little (IoU < 0.3): its own
            ],
            jnp.float32,
        )
        scores = jnp.array([0.9, 0.6, 0.5, 0.7, 0.4, 5.0, 0.3])
        classes = jnp.array([1, 1, 1, 2, 1, 1, 1])
        valid = jnp.array([True, True, True, True, True, False, True])
        out = self.variant(lambda *a: merge_boxes(*a, iou_threshold=0.3, max_output=6))(
            boxes, scores, classes, valid
        )
        chex.assert_shape(out["boxes"], (6, 4))
        np.testing.assert_array_equal(out["valid"], [True, True, True, True, False, False])
        np.testing.assert_allclose(out["scores"][:4], [2.0, 0.7, 0.4, 0.3], rtol=1e-6)
        np.testing.assert_array_equal(out["classes"][:4], [1, 2, 1, 1])
        np.testing.assert_array_equal(out["num_merged"][:4], [3, 1, 1, 1])
        expected_a = (
            0.9 * np.array([10, 10, 30, 30])
            + 0.6 * np.array([12, 10, 32, 30])
            + 0.5 * np.array([10, 12, 30, 32])
        ) / 2.0
        np.testing.assert_allclose(out["boxes"][0], expected_a, rtol=1e-6)
        np.testing.assert_allclose(out["boxes"][2], [60, 60, 80, 80])
        np.testing.assert_array_equal(out["boxes"][4:], 0)

    def test_center_distance_blocks_a_merge(self):
        # IoU 0.6 but centres 5.3 px apart: merged with center_threshold 0.5 (10 px for a
        # 20 px box), kept apart with 0.2 (4 px).
        boxes = jnp.array([[0, 0, 20, 20], [3, 4.5, 23, 24.5]], jnp.float32)
        args = (boxes, jnp.array([0.5, 0.5]), jnp.array([0, 0]))
        assert int(merge_boxes(*args, center_threshold=0.5)["valid"].sum()) == 1
        assert int(merge_boxes(*args, center_threshold=0.2)["valid"].sum()) == 2

    def test_matches_numpy_reference_on_random_candidates(self):
        rng = np.random.default_rng(1)
        for trial in range(4):
            n = 40
            centers = rng.uniform(20, 100, size=(4, 2))[rng.integers(0, 4, n)]
            centers = centers + rng.normal(0, 4, size=(n, 2))
            half = rng.uniform(8, 16, size=(n, 1))
            boxes = np.concatenate([centers - half, centers + half], 1).astype(np.float32)
            scores = rng.uniform(0.1, 1, n).astype(np.float32)
            classes = rng.integers(0, 2, n)
            valid = rng.uniform(size=n) < 0.9
            out = merge_boxes(
                jnp.asarray(boxes),
                jnp.asarray(scores),
                jnp.asarray(classes),
                jnp.asarray(valid),
                iou_threshold=0.25,
                center_threshold=0.6,
                max_output=12,
            )
            ref = np_merge(boxes, scores, classes, valid, 0.25, 0.6, 12)
            k = len(ref)
            assert int(out["valid"].sum()) == k, trial
            np.testing.assert_allclose(out["scores"][:k], [r[1] for r in ref], rtol=1e-5)
            np.testing.assert_allclose(out["boxes"][:k], np.stack([r[0] for r in ref]), atol=1e-3)
            np.testing.assert_array_equal(out["classes"][:k], [r[2] for r in ref])
            np.testing.assert_array_equal(out["num_merged"][:k], [r[3] for r in ref])


def test_nms_variant_matches_torchvision():
    torchvision = pytest.importorskip("torchvision")
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 50, size=(30, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 30, size=(30, 2))], 1).astype(np.float32)
    scores = rng.uniform(size=30).astype(np.float32)
    classes = rng.integers(0, 3, 30)
    out = nms_boxes(
        jnp.asarray(boxes),
        jnp.asarray(scores),
        jnp.asarray(classes),
        iou_threshold=0.4,
        max_output=30,
    )
    keep = torchvision.ops.batched_nms(
        torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(classes), 0.4
    ).numpy()
    k = len(keep)
    assert int(out["valid"].sum()) == k
    np.testing.assert_allclose(out["boxes"][:k], boxes[keep])
    np.testing.assert_allclose(out["scores"][:k], scores[keep])
    np.testing.assert_array_equal(out["classes"][:k], classes[keep])


def test_candidates_and_detect_shapes():
    rng = np.random.default_rng(3)
    outs = []
    for scale, (h, w) in ((1.0, (2, 3)), (0.5, (1, 1))):
        logits = rng.normal(size=(2, h, w, 3)) * 3
        probs = jax.nn.softmax(jnp.asarray(logits, jnp.float32))
        xy = rng.uniform(0, 40, size=(2, h, w, 3, 2))
        boxes = np.concatenate([xy, xy + 10], -1).astype(np.float32)
        outs.append(ScaleOutput(scale, (h, w), probs, jnp.asarray(boxes), np.zeros((h, w, 4))))
    cand = window_candidates(outs, min_score=0.5)
    chex.assert_shape(cand["boxes"], (2, 7, 4))
    p0 = np.asarray(outs[0].probs).reshape(2, 6, 3)
    np.testing.assert_array_equal(cand["classes"][:, :6], p0.argmax(-1))
    np.testing.assert_allclose(cand["scores"][:, :6], p0.max(-1))
    np.testing.assert_array_equal(cand["valid"], np.asarray(cand["scores"]) >= 0.5)
    b0 = np.asarray(outs[0].boxes).reshape(2, 6, 3, 4)
    np.testing.assert_allclose(
        cand["boxes"][:, :6], np.take_along_axis(b0, p0.argmax(-1)[..., None, None], 2)[:, :, 0]
    )
    np.testing.assert_array_equal(cand["scale_index"][0], [0] * 6 + [1])
    for method in ("merge", "nms"):
        det = detect(outs, method=method, max_output=4)
        chex.assert_shape(det["boxes"], (2, 4, 4))
        chex.assert_shape([det["scores"], det["classes"], det["valid"]], (2, 4))
    with pytest.raises(ValueError, match="method"):
        detect(outs, method="vote")
