"""IoU matching against torchvision's Matcher; balanced sampling against its sampler's counts."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from jaxcv import ops
from jaxcv.ops import MatchLabel

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
from torchvision.models.detection._utils import Matcher  # noqa: E402


def random_boxes(rng, n, size=100.0, max_wh=40.0):
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(4, max_wh, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def torchvision_match(iou, high, low, allow_low_quality):
    """torchvision's Matcher on (N, M) IoU -> (index, MatchLabel) per row."""
    matches = Matcher(high, low, allow_low_quality)(torch.from_numpy(iou.T.copy())).numpy()
    labels = np.where(
        matches >= 0,
        MatchLabel.POSITIVE,
        np.where(matches == Matcher.BELOW_LOW_THRESHOLD, MatchLabel.NEGATIVE, MatchLabel.IGNORE),
    )
    return matches, labels


class MatchBoxesTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((0.7, 0.3, True), (0.7, 0.3, False), (0.5, 0.5, False))
    def test_matches_torchvision(self, high, low, allow):
        rng = np.random.default_rng(0)
        anchors = random_boxes(rng, 300)
        gt = random_boxes(rng, 6)
        gt[1] = gt[0]  # duplicate ground truth: ties across columns
        anchors[10] = anchors[11] = gt[2]  # tied best anchors for one ground truth
        iou = np.asarray(ops.box_iou(anchors, gt))
        assert iou.max(axis=0).min() > 0  # every gt overlaps some anchor
        match = self.variant(lambda q, v: ops.match_boxes(q, v, high, low, allow))
        index, labels = match(iou, np.ones(6, bool))
        chex.assert_shape((index, labels), (300,))
        want_index, want_labels = torchvision_match(iou, high, low, allow)
        np.testing.assert_array_equal(labels, want_labels)
        positive = want_labels == MatchLabel.POSITIVE
        assert positive.sum() >= 6 if allow else positive.sum() > 0
        np.testing.assert_array_equal(np.asarray(index)[positive], want_index[positive])
        if allow:
            assert labels[10] == labels[11] == MatchLabel.POSITIVE

    def test_padded_ground_truth_is_never_matched(self):
        rng = np.random.default_rng(1)
        anchors = random_boxes(rng, 200)
        gt = random_boxes(rng, 5)
        gt[3:] = anchors[:2]  # padding slots that would match perfectly
        valid = np.array([True, True, True, False, False])
        index, labels = ops.match_boxes(ops.box_iou(anchors, gt), valid, 0.7, 0.3)
        assert not np.any(np.isin(np.asarray(index)[labels == MatchLabel.POSITIVE], [3, 4]))
        # Equal to torchvision run on the real columns only.
        want_index, want_labels = torchvision_match(
            np.asarray(ops.box_iou(anchors, gt[:3])), 0.7, 0.3, True
        )
        np.testing.assert_array_equal(labels, want_labels)
        pos = want_labels == MatchLabel.POSITIVE
        np.testing.assert_array_equal(np.asarray(index)[pos], want_index[pos])

    @chex.variants(with_jit=True, without_jit=True)
    def test_no_valid_ground_truth_gives_all_negative(self):
        iou = np.random.default_rng(2).uniform(0, 1, (50, 4)).astype(np.float32)
        index, labels = self.variant(lambda q, v: ops.match_boxes(q, v, 0.7, 0.3))(
            iou, np.zeros(4, bool)
        )
        np.testing.assert_array_equal(labels, MatchLabel.NEGATIVE)
        assert np.all((np.asarray(index) >= 0) & (np.asarray(index) < 4))

    def test_zero_ground_truth_columns(self):
        index, labels = ops.match_boxes(np.zeros((7, 0)), np.zeros(0, bool), 0.7, 0.3)
        chex.assert_shape((index, labels), (7,))
        np.testing.assert_array_equal(labels, MatchLabel.NEGATIVE)

    def test_ground_truth_without_overlap_makes_no_low_quality_match(self):
        anchors = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
        gt = np.array([[0, 0, 9, 9], [50, 50, 50, 50]], np.float32)  # 2nd: zero-area, far
        _, labels = ops.match_boxes(ops.box_iou(anchors, gt), np.ones(2, bool), 0.9, 0.3)
        np.testing.assert_array_equal(labels, [MatchLabel.POSITIVE, MatchLabel.NEGATIVE])

    def test_vmap_over_images(self):
        rng = np.random.default_rng(3)
        anchors = random_boxes(rng, 100)
        gt = np.stack([random_boxes(rng, 4) for _ in range(3)])
        valid = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], bool)
        iou = jax.vmap(lambda g: ops.box_iou(anchors, g))(gt)
        index, labels = jax.vmap(lambda q, v: ops.match_boxes(q, v, 0.7, 0.3))(iou, valid)
        for i in range(3):
            want = ops.match_boxes(iou[i], valid[i], 0.7, 0.3)
            chex.assert_trees_all_equal((index[i], labels[i]), want)

    def test_errors(self):
        with pytest.raises(ValueError, match=r"iou must have rank 2, got shape \(5,\)"):
            ops.match_boxes(np.zeros(5), np.ones(5, bool), 0.7, 0.3)
        with pytest.raises(ValueError, match=r"gt_valid must have shape \(M,\) = \(3,\)"):
            ops.match_boxes(np.zeros((5, 3)), np.ones(4, bool), 0.7, 0.3)
        with pytest.raises(ValueError, match="low_threshold must be <= high_threshold"):
            ops.match_boxes(np.zeros((5, 3)), np.ones(3, bool), 0.3, 0.7)


def make_labels(rng, n, num_pos, num_neg):
    labels = np.full(n, MatchLabel.IGNORE, np.int32)
    perm = rng.permutation(n)
    labels[perm[:num_pos]] = MatchLabel.POSITIVE
    labels[perm[num_pos : num_pos + num_neg]] = MatchLabel.NEGATIVE
    return labels


class SampleBalancedTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(
        (5, 400, 256, 0.5),  # few positives: negatives fill the rest
        (300, 400, 256, 0.5),  # plenty of both
        (3, 10, 256, 0.25),  # too few candidates: padding slots
        (0, 0, 16, 0.5),  # nothing to sample
        (50, 0, 16, 0.5),  # no negatives at all
    )
    def test_counts_follow_torchvision_sampler(self, num_pos, num_neg, num_samples, fraction):
        rng = np.random.default_rng(num_pos + num_neg)
        labels = make_labels(rng, 1000, num_pos, num_neg)
        sample = self.variant(lambda k, lab: ops.sample_balanced(k, lab, num_samples, fraction))
        indices, valid = sample(jax.random.key(0), labels)
        chex.assert_shape((indices, valid), (num_samples,))
        want_pos = min(num_pos, int(num_samples * fraction))
        want_neg = min(num_neg, num_samples - want_pos)
        chosen = np.asarray(indices)[np.asarray(valid)]
        np.testing.assert_array_equal(valid, np.arange(num_samples) < want_pos + want_neg)
        assert len(np.unique(chosen)) == len(chosen)
        np.testing.assert_array_equal(labels[chosen[:want_pos]], MatchLabel.POSITIVE)
        np.testing.assert_array_equal(labels[chosen[want_pos:]], MatchLabel.NEGATIVE)

    def test_subsets_are_uniform_and_keyed(self):
        labels = make_labels(np.random.default_rng(5), 40, 10, 30)
        sample = jax.jit(jax.vmap(lambda k: ops.sample_balanced(k, labels, 8, 0.25)[0]))
        picks = np.asarray(sample(jax.random.split(jax.random.key(1), 4000)))
        counts = np.bincount(picks[:, :2].ravel(), minlength=40)[labels == MatchLabel.POSITIVE]
        # Each of 10 positives is drawn with probability 2/10: 800 of 4000 times.
        assert np.all(np.abs(counts - 800) < 120), counts
        assert not np.array_equal(picks[0], picks[1])

    def test_indices_to_mask(self):
        mask = ops.indices_to_mask(jnp.array([3, 1, 0]), jnp.array([True, True, False]), 5)
        np.testing.assert_array_equal(mask, [False, True, False, True, False])

    def test_errors(self):
        with pytest.raises(ValueError, match=r"labels must have rank 1, got shape \(2, 3\)"):
            ops.sample_balanced(jax.random.key(0), np.zeros((2, 3)), 4, 0.5)
        with pytest.raises(ValueError, match="positive_fraction must be in"):
            ops.sample_balanced(jax.random.key(0), np.zeros(3), 4, 1.5)
