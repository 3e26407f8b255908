"""NMS and class-aware NMS against torchvision.ops.nms / batched_nms, plus properties."""

import functools

import chex
import hypothesis.extra.numpy as hnp
import jax
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcv import ops

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
from torchvision.ops.boxes import _batched_nms_vanilla  # noqa: E402

N = 96  # one padded size for all random trials: each jitted variant compiles once


def random_boxes(rng, n, size=60.0, max_wh=30.0, integer=False):
    xy = rng.uniform(-5, size, (n, 2))
    wh = rng.uniform(0, max_wh, (n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    return (np.round(boxes) if integer else boxes).astype(np.float32)


def kept(indices, valid):
    return np.asarray(indices)[np.asarray(valid)]


def torch_nms(boxes, scores, thr):
    return torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr).numpy()


@functools.partial(jax.jit, static_argnames=("thr", "max_output", "block_size"))
def jit_nms(boxes, scores, valid, thr, max_output, block_size=64):
    return ops.nms(boxes, scores, thr, max_output, valid=valid, block_size=block_size)


@functools.partial(jax.jit, static_argnames=("thr", "max_output"))
def jit_batched_nms(boxes, scores, classes, valid, thr, max_output):
    return ops.batched_nms(boxes, scores, classes, thr, max_output, valid=valid)


class NmsParityTest(chex.TestCase):
    @parameterized.parameters(0.3, 0.5, 0.7)
    def test_random_trials_match_torchvision(self, thr):
        rng = np.random.default_rng(int(thr * 10))
        total_kept = 0
        for trial in range(12):
            n = int(rng.integers(1, N + 1))
            boxes = random_boxes(rng, N, integer=trial % 2 == 0)
            # Few distinct values: many exact ties in score (and, for integer boxes, in IoU).
            scores = rng.integers(0, 5, N).astype(np.float32) if trial % 3 else rng.random(N)
            scores = scores.astype(np.float32)
            valid = np.arange(N) < n
            want = torch_nms(boxes[:n], scores[:n], thr)
            idx, ok = jit_nms(boxes, scores, valid, thr=thr, max_output=N)
            np.testing.assert_array_equal(kept(idx, ok), want)
            total_kept += len(want)
            # Truncated to max_output.
            idx, ok = jit_nms(boxes, scores, valid, thr=thr, max_output=8)
            chex.assert_shape((idx, ok), (8,))
            np.testing.assert_array_equal(kept(idx, ok), want[:8])
        assert 0 < total_kept < 12 * N  # suppression happened, and not everything was dropped

    @chex.variants(with_jit=True, without_jit=True)
    def test_results_do_not_depend_on_block_size(self):
        rng = np.random.default_rng(7)
        boxes, scores = random_boxes(rng, 70), rng.random(70).astype(np.float32)
        want = torch_nms(boxes, scores, 0.4)
        for block in (1, 5, 64, 256):
            nms = self.variant(lambda b, s, block=block: ops.nms(b, s, 0.4, 70, block_size=block))
            np.testing.assert_array_equal(kept(*nms(boxes, scores)), want)

    def test_threshold_compared_like_torchvision(self):
        # IoU = 1/10 exactly in float32 (0.10000000149) is above the double 0.1: suppressed.
        boxes = np.array([[0, 0, 10, 1], [0, 0, 1, 1]], np.float32)
        scores = np.array([0.9, 0.8], np.float32)
        want = torch_nms(boxes, scores, 0.1)
        np.testing.assert_array_equal(want, [0])
        np.testing.assert_array_equal(kept(*ops.nms(boxes, scores, 0.1, 2)), want)
        # With a traced threshold the float32 comparison is used (the box survives).
        traced = jax.jit(lambda t: ops.nms(boxes, scores, t, 2))(0.1)
        np.testing.assert_array_equal(kept(*traced), [0, 1])

    def test_decisions_at_the_exact_threshold(self):
        # Pairs whose IoU (torchvision's float32 value v) is used as the threshold itself, or
        # one float below it: a one-ulp difference in our IoU (e.g. from an FMA) would flip the
        # decision. Far-away filler boxes make XLA vectorise the loop as on real inputs.
        rng = np.random.default_rng(8)
        filler = np.array([[1000 + 20 * i, 1000, 1010 + 20 * i, 1010] for i in range(126)])
        scores = np.concatenate([[0.9, 0.8], np.full(126, 0.1)]).astype(np.float32)
        run = jax.jit(lambda b, thr: ops.nms(b, scores, thr, 3))
        outcomes = set()
        for _ in range(40):
            pair = random_boxes(rng, 2, size=50, max_wh=40) + np.float32(1)
            pair[1, :2] = pair[0, :2] + rng.uniform(0, 8, 2).astype(np.float32)
            boxes = np.concatenate([pair, filler]).astype(np.float32)
            v = torchvision.ops.box_iou(torch.from_numpy(pair), torch.from_numpy(pair))[0, 1]
            for thr in (v.item(), float(np.nextafter(v.numpy(), np.float32(0)))):
                want = torch_nms(boxes, scores, thr)[:3]
                got = kept(*run(boxes, np.float32(thr)))
                np.testing.assert_array_equal(got, want)
                outcomes.add(1 in want)
        assert outcomes == {True, False}  # both decisions were exercised

    def test_edge_cases(self):
        boxes = np.array(
            [
                [0, 0, 10, 10],
                [0, 0, 10, 10],  # duplicate, same score: index order decides
                [5, 5, 5, 5],  # zero area
                [5, 5, 5, 5],  # identical zero-area box: IoU 0/0, never suppressed
                [-40, -40, -20, -20],  # outside the image
                [8, 8, 3, 3],  # inverted (x2 < x1)
                [100, 100, 110, 110],
            ],
            np.float32,
        )
        scores = np.array([0.5, 0.5, 0.9, 0.9, 0.1, 0.3, 0.5], np.float32)
        want = torch_nms(boxes, scores, 0.5)
        np.testing.assert_array_equal(kept(*ops.nms(boxes, scores, 0.5, 7)), want)
        np.testing.assert_array_equal(want, [2, 3, 0, 6, 5, 4])

    def test_all_kept_when_nothing_overlaps(self):
        boxes = np.array([[10 * i, 0, 10 * i + 5, 5] for i in range(20)], np.float32)
        scores = np.random.default_rng(0).random(20).astype(np.float32)
        idx, ok = ops.nms(boxes, scores, 0.01, 25)
        np.testing.assert_array_equal(kept(idx, ok), torch_nms(boxes, scores, 0.01))
        np.testing.assert_array_equal(ok, np.arange(25) < 20)
        np.testing.assert_array_equal(np.asarray(idx)[20:], 0)

    def test_empty_inputs(self):
        idx, ok = ops.nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5, 4)
        chex.assert_shape((idx, ok), (4,))
        assert not np.any(ok)
        idx, ok = ops.nms(random_boxes(np.random.default_rng(0), 5), np.ones(5), 0.5, 4,
                          valid=np.zeros(5, bool))  # fmt: skip
        assert not np.any(ok)
        chex.assert_shape(ops.nms(np.zeros((3, 4)), np.ones(3), 0.5, 0)[0], (0,))

    def test_vmap_over_images(self):
        rng = np.random.default_rng(3)
        boxes = np.stack([random_boxes(rng, N) for _ in range(3)])
        scores = rng.random((3, N)).astype(np.float32)
        valid = np.ones((3, N), bool)
        idx, ok = jax.vmap(lambda b, s, v: jit_nms(b, s, v, thr=0.5, max_output=20))(
            boxes, scores, valid
        )
        chex.assert_shape((idx, ok), (3, 20))
        for i in range(3):
            np.testing.assert_array_equal(
                kept(idx[i], ok[i]), torch_nms(boxes[i], scores[i], 0.5)[:20]
            )

    def test_errors(self):
        with pytest.raises(ValueError, match=r"boxes must have rank 2, got shape \(2, 3, 4\)"):
            ops.nms(np.zeros((2, 3, 4)), np.zeros(3), 0.5, 4)
        with pytest.raises(ValueError, match=r"boxes must have shape \(N, 4\), got shape \(3, 5\)"):
            ops.nms(np.zeros((3, 5)), np.zeros(3), 0.5, 4)
        with pytest.raises(ValueError, match=r"scores must have shape \(N,\) = \(3,\), got"):
            ops.nms(np.zeros((3, 4)), np.zeros(4), 0.5, 4)
        with pytest.raises(ValueError, match="max_output must be a non-negative int"):
            ops.nms(np.zeros((3, 4)), np.zeros(3), 0.5, -1)
        with pytest.raises(ValueError, match=r"classes must have shape \(N,\) = \(3,\)"):
            ops.batched_nms(np.zeros((3, 4)), np.zeros(3), np.zeros(2, int), 0.5, 4)


class BatchedNmsTest(chex.TestCase):
    @parameterized.parameters(0.3, 0.6)
    def test_matches_torchvision(self, thr):
        rng = np.random.default_rng(11)
        for trial in range(8):
            n = int(rng.integers(1, N + 1))
            boxes = random_boxes(rng, N, integer=trial % 2 == 0)
            scores = rng.integers(0, 6, N).astype(np.float32)
            classes = rng.integers(0, 4, N).astype(np.int32)
            valid = np.arange(N) < n
            tb, ts, tc = (torch.from_numpy(x[:n]) for x in (boxes, scores, classes))
            # The kept set from torchvision's per-class loop, in (stable) descending score order
            # (its own final sort is unstable on ties).
            kept_set = _batched_nms_vanilla(tb, ts, tc, thr).numpy()
            want = np.sort(kept_set)[np.argsort(-scores[np.sort(kept_set)], kind="stable")]
            idx, ok = jit_batched_nms(boxes, scores, classes, valid, thr=thr, max_output=N)
            np.testing.assert_array_equal(kept(idx, ok), want)
            if trial % 2 == 0:  # integer boxes: the coordinate-offset trick is exact, same order
                trick = torchvision.ops.boxes._batched_nms_coordinate_trick(tb, ts, tc, thr)
                np.testing.assert_array_equal(trick.numpy(), want)

    def test_vmap_over_images(self):
        rng = np.random.default_rng(12)
        boxes = np.stack([random_boxes(rng, N, integer=True) for _ in range(2)])
        scores = rng.random((2, N)).astype(np.float32)
        classes = rng.integers(0, 3, (2, N)).astype(np.int32)
        valid = np.ones((2, N), bool)
        idx, ok = jax.vmap(lambda *a: jit_batched_nms(*a, thr=0.5, max_output=30))(
            boxes, scores, classes, valid
        )
        for i in range(2):
            want = torchvision.ops.batched_nms(
                *(torch.from_numpy(x[i]) for x in (boxes, scores, classes)), 0.5
            )
            np.testing.assert_array_equal(kept(idx[i], ok[i]), want.numpy()[:30])

    def test_classes_do_not_suppress_each_other(self):
        boxes = np.tile(np.array([[0, 0, 10, 10]], np.float32), (4, 1))
        scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
        idx, ok = ops.batched_nms(boxes, scores, np.array([0, 1, 0, 2]), 0.5, 4)
        np.testing.assert_array_equal(kept(idx, ok), [0, 1, 3])
        idx, ok = ops.nms(boxes, scores, 0.5, 4)
        np.testing.assert_array_equal(kept(idx, ok), [0])


@functools.partial(jax.jit, static_argnames=("thr",))
def _prop_nms(boxes, scores, thr):
    return ops.nms(boxes, scores, thr, 16, block_size=4)


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(np.float32, (16, 4), elements=st.floats(0, 40, width=32)),
    hnp.arrays(np.float32, (16,), elements=st.floats(0, 1, width=32)),
    st.sampled_from([0.2, 0.5, 0.8]),
)
def test_nms_output_is_a_greedy_independent_set(raw, scores, thr):
    boxes = np.concatenate(
        [np.minimum(raw[:, :2], raw[:, 2:]), np.maximum(raw[:, :2], raw[:, 2:])], 1
    )
    keep = kept(*_prop_nms(boxes, scores, thr))
    iou = np.asarray(ops.box_iou(boxes, boxes))
    # No kept pair overlaps above the threshold ...
    sub = iou[np.ix_(keep, keep)]
    assert not np.any(sub[~np.eye(len(keep), dtype=bool)] > np.float32(thr))
    # ... kept scores are non-increasing, and every dropped box overlaps a kept one.
    assert np.all(np.diff(scores[keep]) <= 0)
    dropped = np.setdiff1d(np.arange(16), keep)
    assert np.all(np.any(iou[np.ix_(dropped, keep)] >= np.float32(thr), axis=1))
    np.testing.assert_array_equal(keep, torch_nms(boxes, scores, thr))
