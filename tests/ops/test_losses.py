"""Losses against torch.nn.functional / torch.distributions and float64 NumPy references."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from jaxcv import ops

torch = pytest.importorskip("torch")
F = torch.nn.functional


def t(x):
    return torch.from_numpy(np.asarray(x))


class SmoothL1Test(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((1.0,), (1.0 / 9,), (0.0,), (2.5,))
    def test_matches_torch(self, beta):
        rng = np.random.default_rng(0)
        pred = rng.normal(0, 2, (40, 4)).astype(np.float32)
        target = rng.normal(0, 2, (40, 4)).astype(np.float32)
        loss = self.variant(lambda p, q: ops.smooth_l1(p, q, beta, reduction="none"))
        want = F.smooth_l1_loss(t(pred), t(target), beta=beta, reduction="none").numpy()
        chex.assert_trees_all_close(loss(pred, target), want, atol=1e-6, rtol=1e-6)
        total = ops.smooth_l1(pred, target, beta)
        chex.assert_trees_all_close(total, want.sum(), rtol=1e-5)

    def test_weights_and_mean_over_valid(self):
        rng = np.random.default_rng(1)
        pred, target = rng.normal(size=(10, 4)), rng.normal(size=(10, 4))
        positive = rng.random((10, 1)) < 0.5
        positive[0] = True
        elementwise = F.smooth_l1_loss(t(pred), t(target), beta=0.5, reduction="none").numpy()
        want_sum = (elementwise * positive).sum()
        got_sum = ops.smooth_l1(pred, target, 0.5, weights=positive, reduction="sum")
        chex.assert_trees_all_close(got_sum, want_sum, rtol=1e-5)
        got_mean = ops.smooth_l1(pred, target, 0.5, weights=positive, reduction="mean")
        chex.assert_trees_all_close(got_mean, want_sum / (4 * positive.sum()), rtol=1e-5)

    def test_errors(self):
        with pytest.raises(ValueError, match=r"same shape, got \(3, 4\) and \(3,\)"):
            ops.smooth_l1(np.zeros((3, 4)), np.zeros(3))
        with pytest.raises(ValueError, match="reduction must be one of"):
            ops.smooth_l1(np.zeros(3), np.zeros(3), reduction="avg")
        with pytest.raises(ValueError, match=r"do not broadcast to the loss shape \(3, 4\)"):
            ops.smooth_l1(np.zeros((3, 4)), np.zeros((3, 4)), weights=np.ones(3))


class SoftmaxCrossEntropyTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(
        (None, 0.0, "mean"), (255, 0.0, "mean"), (255, 0.1, "mean"), (None, 0.2, "sum")
    )
    def test_matches_torch(self, ignore_index, smoothing, reduction):
        rng = np.random.default_rng(2)
        logits = rng.normal(0, 3, (6, 5, 7)).astype(np.float32)
        labels = rng.integers(0, 7, (6, 5))
        if ignore_index is not None:
            labels[rng.random((6, 5)) < 0.3] = ignore_index
        loss = self.variant(
            lambda z, y: ops.softmax_cross_entropy(
                z, y, ignore_index=ignore_index, label_smoothing=smoothing, reduction=reduction
            )
        )
        want = F.cross_entropy(
            t(logits).permute(0, 2, 1),  # torch wants the class axis second
            t(labels),
            ignore_index=-100 if ignore_index is None else ignore_index,
            label_smoothing=smoothing,
            reduction=reduction,
        )
        chex.assert_trees_all_close(loss(logits, labels), want.numpy(), rtol=1e-5, atol=1e-6)

    def test_per_example_weights_against_float64(self):
        rng = np.random.default_rng(3)
        logits = rng.normal(0, 4, (12, 3))
        labels = rng.integers(0, 3, 12)
        weights = rng.random(12)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        nll = -log_p[np.arange(12), labels]
        got = ops.softmax_cross_entropy(logits, labels, weights)
        chex.assert_trees_all_close(got, (nll * weights).sum() / weights.sum(), rtol=1e-5)
        none = ops.softmax_cross_entropy(logits, labels, weights, reduction="none")
        chex.assert_shape(none, (12,))
        chex.assert_trees_all_close(none, nll * weights, rtol=1e-5, atol=1e-6)

    def test_extreme_logits_and_all_ignored(self):
        logits = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]])
        labels = jnp.array([1, 1])
        loss, grad = jax.value_and_grad(lambda z: ops.softmax_cross_entropy(z, labels))(logits)
        chex.assert_trees_all_close(loss, 1e4, rtol=1e-6)
        chex.assert_tree_all_finite(grad)
        masked = ops.softmax_cross_entropy(logits, jnp.array([255, 255]), ignore_index=255)
        assert masked == 0.0

    def test_errors(self):
        with pytest.raises(ValueError, match=r"labels must have shape logits.shape\[:-1\]"):
            ops.softmax_cross_entropy(np.zeros((4, 3)), np.zeros(5, int))
        with pytest.raises(ValueError, match="labels must be integer class ids"):
            ops.softmax_cross_entropy(np.zeros((4, 3)), np.zeros(4))
        with pytest.raises(ValueError, match=r"weights must have the labels' shape \(4,\)"):
            ops.softmax_cross_entropy(np.zeros((4, 3)), np.zeros(4, int), np.ones(3))


class SigmoidBceTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_torch_including_extremes(self):
        rng = np.random.default_rng(4)
        logits = rng.normal(0, 5, (8, 28, 28)).astype(np.float32)
        logits[0, 0, :4] = [1e4, -1e4, 200.0, -200.0]
        targets = (rng.random((8, 28, 28)) < 0.5).astype(np.float32)
        targets[1] = rng.random((28, 28))  # soft targets
        bce = self.variant(lambda x, y: ops.sigmoid_binary_cross_entropy(x, y, reduction="none"))
        want = F.binary_cross_entropy_with_logits(t(logits), t(targets), reduction="none")
        got = bce(logits, targets)
        chex.assert_tree_all_finite(got)
        chex.assert_trees_all_close(got, want.numpy(), rtol=1e-5, atol=1e-6)
        mean = ops.sigmoid_binary_cross_entropy(logits, targets)
        chex.assert_trees_all_close(mean, want.mean().item(), rtol=1e-5)

    def test_weighted_mean_and_finite_gradient(self):
        logits = jnp.array([1e4, -3.0, 2.0, -1e4])
        targets = jnp.array([0.0, 1.0, 1.0, 1.0])
        mask = jnp.array([False, True, True, False])
        loss, grad = jax.value_and_grad(
            lambda z: ops.sigmoid_binary_cross_entropy(z, targets, mask)
        )(logits)
        want = (np.log1p(np.exp(3.0)) + np.log1p(np.exp(-2.0))) / 2
        chex.assert_trees_all_close(loss, want, rtol=1e-6)
        np.testing.assert_array_equal(grad[np.array([0, 3])], 0.0)
        chex.assert_tree_all_finite(grad)


class KlTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_torch_distributions(self):
        rng = np.random.default_rng(5)
        mean = rng.normal(0, 1.5, (9, 6)).astype(np.float32)
        logvar = rng.normal(0, 1.5, (9, 6)).astype(np.float32)
        posterior = torch.distributions.Normal(t(mean), t(np.exp(0.5 * logvar)))
        prior = torch.distributions.Normal(torch.zeros(9, 6), torch.ones(9, 6))
        want = torch.distributions.kl_divergence(posterior, prior).sum(-1).numpy()
        got = self.variant(ops.kl_divergence_standard_normal)(mean, logvar)
        chex.assert_shape(got, (9,))
        chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-5)

    def test_precise_near_the_prior_and_reductions(self):
        logvar = np.array(
            [[1e-4, -3e-3, 9e-3], [0.011, -2e-6, 0.0], [0.09, -0.099, 0.2]], np.float32
        )
        mean = np.zeros((3, 3), np.float32)
        got = ops.kl_divergence_standard_normal(mean, logvar)
        v = logvar.astype(np.float64)
        want = 0.5 * (np.expm1(v) - v).sum(-1)  # float64: no cancellation at these sizes
        chex.assert_trees_all_close(got, want, rtol=1e-5)
        total = ops.kl_divergence_standard_normal(mean + 1, logvar, reduction="mean")
        chex.assert_trees_all_close(total, 1.5 + want.mean(), rtol=1e-6)

    def test_errors(self):
        with pytest.raises(ValueError, match=r"mean and logvar must have the same shape"):
            ops.kl_divergence_standard_normal(np.zeros((2, 3)), np.zeros((2, 4)))
