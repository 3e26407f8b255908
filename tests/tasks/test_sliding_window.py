"""Sliding windows: crop extraction, the winning window, Overfeat box merging (greedy and the
paper's pairwise rule) and per-class NMS."""

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
    merge_boxes_paper,
    merge_candidates,
    nms_boxes,
    paper_match_scores,
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


def np_match(a, b):
    """Float64 match score of two xyxy boxes: centre distance / mean size + 1 - IoU."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    union = area_a + area_b - iw * ih
    iou = iw * ih / union if union > 0 else 0.0
    d = np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2)
    size = max(0.5 * (np.sqrt(max(area_a, 0.0)) + np.sqrt(max(area_b, 0.0))), 1e-6)
    return d / size + 1.0 - iou


def np_merge_paper(boxes, scores, classes, valid, threshold, max_output):
    """Float64 reference of the paper's merging: the best-matching same-class pair of groups
    merges (mean of the member boxes, sum of the scores) until the best match is above
    ``threshold``; plain Python loops over the groups."""
    boxes = np.asarray(boxes, np.float64)
    groups = {
        i: {"members": [i], "score": float(scores[i]), "class": int(classes[i])}
        for i in range(len(boxes))
        if valid[i]
    }

    def box(g):
        return boxes[g["members"]].mean(0)

    while True:
        best, pair = np.inf, None
        keys = sorted(groups)
        for a, i in enumerate(keys):
            for j in keys[a + 1 :]:
                if groups[i]["class"] != groups[j]["class"]:
                    continue
                m = np_match(box(groups[i]), box(groups[j]))
                if m < best:
                    best, pair = m, (i, j)
        if pair is None or best > threshold:
            break
        i, j = pair
        groups[i]["members"] += groups.pop(j)["members"]
        groups[i]["score"] = sum(float(scores[k]) for k in groups[i]["members"])
    out = [(box(g), g["score"], g["class"], len(g["members"])) for g in groups.values()]
    out.sort(key=lambda r: -r[1])
    return out[:max_output]


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


def _clustered_candidates(rng, n, clusters=4, num_classes=2):
    centers = rng.uniform(20, 100, size=(clusters, 2))[rng.integers(0, clusters, n)]
    centers = centers + rng.normal(0, 5, size=(n, 2))
    half = rng.uniform(6, 16, size=(n, 2))
    boxes = np.concatenate([centers - half, centers + half], 1).astype(np.float32)
    scores = rng.uniform(0.05, 1, n).astype(np.float32)
    classes = rng.integers(0, num_classes, n).astype(np.int32)
    valid = rng.uniform(size=n) < 0.85
    return boxes, scores, classes, valid


def test_paper_match_scores_match_numpy():
    rng = np.random.default_rng(4)
    a = _clustered_candidates(rng, 9)[0]
    b = _clustered_candidates(rng, 7)[0]
    b[0] = [5, 5, 5, 9]  # zero width: size 0, IoU 0
    got = np.asarray(paper_match_scores(jnp.asarray(a), jnp.asarray(b)))
    want = np.array([[np_match(x, y) for y in b.astype(np.float64)] for x in a.astype(np.float64)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    same = np.asarray(paper_match_scores(jnp.asarray(a), jnp.asarray(a)))
    np.testing.assert_allclose(np.diag(same), 0.0, atol=1e-6)


@pytest.mark.parametrize(("seed", "threshold"), [(0, 0.7), (1, 0.9), (2, 1.4), (3, 3.0)])
def test_paper_merge_matches_numpy_reference(seed, threshold):
    rng = np.random.default_rng(seed)
    n, max_output = 36, 12
    boxes, scores, classes, valid = _clustered_candidates(rng, n)
    out = merge_boxes_paper(
        jnp.asarray(boxes),
        jnp.asarray(scores),
        jnp.asarray(classes),
        jnp.asarray(valid),
        match_threshold=threshold,
        max_output=max_output,
    )
    ref = np_merge_paper(boxes, scores, classes, valid, threshold, max_output)
    k = len(ref)
    assert 0 < k <= max_output
    np.testing.assert_array_equal(out["valid"], np.arange(max_output) < k)
    np.testing.assert_allclose(out["scores"][:k], [r[1] for r in ref], rtol=1e-5)
    np.testing.assert_allclose(out["boxes"][:k], np.stack([r[0] for r in ref]), atol=1e-3)
    np.testing.assert_array_equal(out["classes"][:k], [r[2] for r in ref])
    np.testing.assert_array_equal(out["num_merged"][:k], [r[3] for r in ref])
    np.testing.assert_array_equal(out["scores"][k:], 0.0)
    if threshold >= 3.0:  # everything of a class within reach merged: few groups
        assert int(np.asarray(out["num_merged"]).sum()) == int(valid.sum()) and k <= 4


def test_paper_merge_edge_cases():
    box = jnp.array([[10.0, 10.0, 30.0, 30.0]])
    far = jnp.array([[80.0, 80.0, 100.0, 100.0]])

    def run(boxes, scores, classes, valid=None, threshold=1.0, max_output=4):
        out = merge_boxes_paper(
            jnp.asarray(boxes, jnp.float32),
            jnp.asarray(scores, jnp.float32),
            jnp.asarray(classes),
            None if valid is None else jnp.asarray(valid),
            match_threshold=threshold,
            max_output=max_output,
        )
        return {k: np.asarray(v) for k, v in out.items()}

    # No valid candidate: no detection, zeros everywhere.
    out = run(jnp.concatenate([box, far]), [0.9, 0.8], [0, 0], [False, False])
    assert not out["valid"].any() and not out["scores"].any() and not out["boxes"].any()
    # One candidate: itself, in 4 slots although N = 1.
    out = run(box, [0.7], [2])
    np.testing.assert_array_equal(out["valid"], [True, False, False, False])
    np.testing.assert_allclose(out["boxes"][0], box[0])
    assert out["scores"][0] == pytest.approx(0.7) and out["classes"][0] == 2
    # Two identical boxes (match 0) merge, whatever the threshold >= 0; scores add up.
    out = run(jnp.concatenate([box, box]), [0.6, 0.3], [1, 1], threshold=0.0)
    np.testing.assert_array_equal(out["valid"], [True, False, False, False])
    np.testing.assert_allclose(out["boxes"][0], box[0])
    assert out["scores"][0] == pytest.approx(0.9) and out["num_merged"][0] == 2
    # Two far boxes (match > 5) stay apart under threshold 1.
    out = run(jnp.concatenate([far, box]), [0.4, 0.6], [1, 1])
    np.testing.assert_array_equal(out["valid"], [True, True, False, False])
    np.testing.assert_allclose(out["boxes"][:2], np.concatenate([box, far]))  # by score
    np.testing.assert_array_equal(out["num_merged"][:2], [1, 1])
    # ... but merge under a threshold above their match score: the mean box.
    out = run(jnp.concatenate([far, box]), [0.4, 0.6], [1, 1], threshold=100.0)
    np.testing.assert_allclose(out["boxes"][0], [45, 45, 65, 65])
    # Identical boxes of different classes never merge.
    out = run(jnp.concatenate([box, box, box]), [0.5, 0.2, 0.9], [0, 1, 0], threshold=100.0)
    np.testing.assert_array_equal(out["valid"], [True, True, False, False])
    np.testing.assert_allclose(out["scores"][:2], [1.4, 0.2], rtol=1e-6)
    np.testing.assert_array_equal(out["classes"][:2], [0, 1])
    # The mean is over members, not groups: a pair merged first weighs twice.
    boxes = [[0, 0, 20, 20], [0, 0, 20, 20], [6, 0, 26, 20]]
    out = run(boxes, [0.5, 0.5, 0.5], [0, 0, 0], threshold=1.0)
    np.testing.assert_allclose(out["boxes"][0], [2, 0, 22, 20], rtol=1e-6)
    assert out["num_merged"][0] == 3


def test_merge_candidates_batches_each_rule():
    rng = np.random.default_rng(5)
    per_image = [_clustered_candidates(rng, 20) for _ in range(3)]
    cand = {
        key: jnp.asarray(np.stack([c[i] for c in per_image]))
        for i, key in enumerate(("boxes", "scores", "classes", "valid"))
    }
    for method, single in (
        ("paper_merge", lambda *a: merge_boxes_paper(*a, match_threshold=0.8, max_output=6)),
        ("merge", lambda *a: merge_boxes(*a, iou_threshold=0.3, max_output=6)),
        ("nms", lambda *a: nms_boxes(*a, iou_threshold=0.3, max_output=6)),
    ):
        out = merge_candidates(
            cand, method=method, min_score=0.3, match_threshold=0.8, max_output=6
        )
        for b, (boxes, scores, classes, valid) in enumerate(per_image):
            want = single(boxes, scores, classes, valid & (scores >= 0.3))
            for key in want:
                np.testing.assert_allclose(out[key][b], want[key], rtol=1e-6, err_msg=method)
    # max_candidates keeps the best-scoring candidates: the same when all valid ones fit.
    few = merge_candidates(cand, method="paper_merge", min_score=0.9, max_candidates=8)
    every = merge_candidates(cand, method="paper_merge", min_score=0.9)
    assert int(np.asarray(cand["valid"] & (cand["scores"] >= 0.9)).sum(1).max()) <= 8
    for key in every:
        np.testing.assert_allclose(few[key], every[key], rtol=1e-6)
    with pytest.raises(ValueError, match="method"):
        merge_candidates(cand, method="vote")


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
    for method in ("merge", "nms", "paper_merge"):
        det = detect(outs, method=method, max_output=4)
        chex.assert_shape(det["boxes"], (2, 4, 4))
        chex.assert_shape([det["scores"], det["classes"], det["valid"]], (2, 4))
    with pytest.raises(ValueError, match="method"):
        detect(outs, method="vote")
