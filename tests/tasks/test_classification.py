"""ClassificationTask and ClassificationEvaluator against float64 NumPy references."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcv.tasks.classification import (
    ClassificationEvaluator,
    ClassificationTask,
    softmax_cross_entropy,
)


class TinyClassifier(nn.Module):
    """Stand-in classifier: flatten -> Dense -> BatchNorm -> Dropout -> Dense."""

    num_classes: int = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(8)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)
        x = nn.relu(x)
        x = nn.Dropout(0.5, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)


class LinearClassifier(nn.Module):
    """Stand-in without batch_stats or dropout: one Dense layer."""

    num_classes: int = 3

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(self.num_classes)(x.reshape((x.shape[0], -1)))


def np_cross_entropy(logits, labels, eps=0.0):
    logits = np.asarray(logits, np.float64)
    k = logits.shape[1]
    shifted = logits - logits.max(1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    target = np.eye(k)[labels] * (1 - eps) + eps / k
    return -(target * log_p).sum(1)


def _batch(rng, b=6, k=4, hw=3):
    images = rng.normal(size=(b, hw, hw, 1)).astype(np.float32)
    labels = rng.integers(0, k, size=(b,)).astype(np.int32)
    return {"image": images, "label": labels}


class SoftmaxCrossEntropyTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_numpy(self):
        rng = np.random.default_rng(0)
        logits = rng.normal(size=(7, 5)).astype(np.float32) * 4
        labels = rng.integers(0, 5, size=(7,)).astype(np.int32)
        for eps in (0.0, 0.1, 0.5):
            fn = self.variant(
                lambda lg, lb, e=eps: softmax_cross_entropy(lg, lb, label_smoothing=e)
            )
            got = fn(logits, labels)
            chex.assert_shape(got, (7,))
            np.testing.assert_allclose(got, np_cross_entropy(logits, labels, eps), rtol=1e-5)

    def test_rank_errors(self):
        with self.assertRaisesRegex(ValueError, r"\(B, K\).*\(5,\)"):
            softmax_cross_entropy(jnp.zeros(5), jnp.zeros(5, jnp.int32))
        with self.assertRaisesRegex(ValueError, r"labels.*\(3, 1\)"):
            softmax_cross_entropy(jnp.zeros((3, 2)), jnp.zeros((3, 1), jnp.int32))
        with self.assertRaisesRegex(ValueError, "label_smoothing"):
            softmax_cross_entropy(jnp.zeros((3, 2)), jnp.zeros(3, jnp.int32), label_smoothing=1.0)


class ClassificationTaskTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_eval_loss_and_accuracy_match_numpy(self):
        rng = np.random.default_rng(1)
        batch = _batch(rng)
        task = ClassificationTask(TinyClassifier(), label_smoothing=0.2)
        variables = task.init_variables(jax.random.PRNGKey(0), batch)
        assert set(variables) == {"params", "batch_stats"}
        params = variables["params"]
        state = {"batch_stats": variables["batch_stats"]}

        loss_fn = self.variant(lambda p, s, b, r: task.loss_fn(p, s, b, r, train=False))
        loss, (metrics, new_state) = loss_fn(params, state, batch, jax.random.PRNGKey(1))
        logits = task.model.apply(variables, batch["image"], train=False)
        ref = np_cross_entropy(logits, batch["label"], 0.2)
        np.testing.assert_allclose(loss, ref.mean(), rtol=1e-5)
        np.testing.assert_allclose(metrics["loss"], ref.mean(), rtol=1e-5)
        ref_acc = np.mean(np.argmax(np.asarray(logits), 1) == batch["label"])
        np.testing.assert_allclose(metrics["accuracy"], ref_acc)
        chex.assert_trees_all_close(new_state, state)

    def test_example_valid_weights_out_padding(self):
        rng = np.random.default_rng(2)
        batch = _batch(rng, b=5)
        task = ClassificationTask(LinearClassifier(num_classes=4))
        variables = task.init_variables(jax.random.PRNGKey(0), batch)
        valid = np.array([True, True, False, True, False])
        padded = dict(batch, example_valid=valid)
        # Garbage in the padded rows must not matter.
        padded["image"] = batch["image"].copy()
        padded["image"][~valid] = 1e3
        loss, (metrics, _) = task.loss_fn(
            variables["params"], {}, padded, jax.random.PRNGKey(1), train=False
        )
        logits = task.model.apply(variables, batch["image"][valid])
        ref = np_cross_entropy(logits, batch["label"][valid])
        np.testing.assert_allclose(loss, ref.mean(), rtol=1e-5)
        ref_acc = np.mean(np.argmax(np.asarray(logits), 1) == batch["label"][valid])
        np.testing.assert_allclose(metrics["accuracy"], ref_acc)

    def test_train_mode_updates_batch_stats_and_uses_dropout(self):
        rng = np.random.default_rng(3)
        batch = _batch(rng)
        task = ClassificationTask(TinyClassifier())
        variables = task.init_variables(jax.random.PRNGKey(0), batch)
        state = {"batch_stats": variables["batch_stats"]}
        loss_fn = jax.jit(lambda p, s, b, r: task.loss_fn(p, s, b, r, train=True))
        l1, (_, s1) = loss_fn(variables["params"], state, batch, jax.random.PRNGKey(1))
        l2, _ = loss_fn(variables["params"], state, batch, jax.random.PRNGKey(2))
        assert np.isfinite(l1) and float(l1) != float(l2)  # different dropout masks
        # BatchNorm running mean moved towards the batch mean (momentum 0.5, init 0).
        x = batch["image"].reshape(6, -1) @ np.asarray(variables["params"]["Dense_0"]["kernel"])
        x = x + np.asarray(variables["params"]["Dense_0"]["bias"])
        np.testing.assert_allclose(
            s1["batch_stats"]["BatchNorm_0"]["mean"], 0.5 * x.mean(0), rtol=1e-4, atol=1e-6
        )

    def test_loss_is_differentiable_without_model_state(self):
        rng = np.random.default_rng(4)
        batch = _batch(rng, k=3)
        task = ClassificationTask(LinearClassifier())
        variables = task.init_variables(jax.random.PRNGKey(0), batch)
        grads = jax.grad(lambda p: task.loss_fn(p, {}, batch, jax.random.PRNGKey(0))[0])(
            variables["params"]
        )
        # d/dW of mean CE for a linear model: X^T (softmax - onehot) / B.
        x = batch["image"].reshape(6, -1).astype(np.float64)
        logits = x @ np.asarray(variables["params"]["Dense_0"]["kernel"], np.float64)
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        ref = x.T @ (p - np.eye(3)[batch["label"]]) / 6
        np.testing.assert_allclose(grads["Dense_0"]["kernel"], ref, rtol=1e-4, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_predict_fn(self):
        rng = np.random.default_rng(5)
        batch = _batch(rng)
        task = ClassificationTask(TinyClassifier())
        variables = task.init_variables(jax.random.PRNGKey(0), batch)
        out = self.variant(task.predict_fn)(variables, batch)
        chex.assert_shape(out["logits"], (6, 4))
        chex.assert_shape(out["probs"], (6, 4))
        chex.assert_shape(out["pred_label"], (6,))
        logits = np.asarray(out["logits"], np.float64)
        p = np.exp(logits - logits.max(1, keepdims=True))
        np.testing.assert_allclose(out["probs"], p / p.sum(1, keepdims=True), rtol=1e-5)
        np.testing.assert_array_equal(out["pred_label"], logits.argmax(1))
        assert out["pred_label"].dtype == jnp.int32

    def test_bad_ranks(self):
        task = ClassificationTask(LinearClassifier())
        with self.assertRaisesRegex(ValueError, r"\(B, H, W, C\).*\(2, 3\)"):
            task.init_variables(jax.random.PRNGKey(0), {"image": np.zeros((2, 3))})
        with self.assertRaisesRegex(ValueError, "label_smoothing"):
            ClassificationTask(LinearClassifier(), label_smoothing=-0.1)


class EvaluatorTest(chex.TestCase):
    def test_matches_numpy_over_batches_with_padding(self):
        rng = np.random.default_rng(6)
        k = 7
        all_logits, all_labels = [], []
        ev = ClassificationEvaluator()
        for b in (8, 8, 8):
            logits = rng.normal(size=(b, k)) * 3
            labels = rng.integers(0, k, size=(b,))
            valid = rng.random(b) > 0.3
            ev.update(
                {"label": labels, "example_valid": valid},
                {"logits": logits.astype(np.float32)},
            )
            all_logits.append(logits.astype(np.float32)[valid])
            all_labels.append(labels[valid])
        logits = np.concatenate(all_logits).astype(np.float64)
        labels = np.concatenate(all_labels)
        res = ev.result()
        n = labels.size
        assert res["num_examples"] == n
        np.testing.assert_allclose(res["accuracy"], np.mean(logits.argmax(1) == labels))
        np.testing.assert_allclose(res["loss"], np_cross_entropy(logits, labels).mean(), rtol=1e-9)
        top5 = np.argsort(-logits, axis=1)[:, :5]
        np.testing.assert_allclose(res["top5_accuracy"], np.mean((top5 == labels[:, None]).any(1)))
        cm = np.zeros((k, k), int)
        for t, p in zip(labels, logits.argmax(1), strict=True):
            cm[t, p] += 1
        np.testing.assert_array_equal(ev.confusion_matrix, cm)
        assert cm.sum() == n

    def test_no_top5_for_few_classes_and_empty(self):
        ev = ClassificationEvaluator(num_classes=3)
        ev.update(
            {"label": np.array([0]), "example_valid": np.array([False])},
            {"logits": np.zeros((1, 3))},
        )
        res = ev.result()
        assert "top5_accuracy" not in res
        assert res["num_examples"] == 0 and np.isnan(res["accuracy"])
        ev.update({"label": np.array([2, 1])}, {"logits": np.array([[0, 0, 1.0], [1.0, 0, 0]])})
        assert ev.result()["accuracy"] == 0.5
        np.testing.assert_array_equal(ev.confusion_matrix, [[0, 0, 0], [1, 0, 0], [0, 0, 1]])

    def test_errors(self):
        ev = ClassificationEvaluator(num_classes=3)
        with self.assertRaisesRegex(ValueError, r"labels must be in 0..2"):
            ev.update({"label": np.array([3])}, {"logits": np.zeros((1, 3))})
        with self.assertRaisesRegex(ValueError, r"\(B, 3\).*\(B, 4\)"):
            ev.update({"label": np.array([0])}, {"logits": np.zeros((1, 4))})
        with self.assertRaisesRegex(ValueError, r"example_valid.*\(2,\)"):
            ev.update(
                {"label": np.array([0]), "example_valid": np.array([True, False])},
                {"logits": np.zeros((1, 3))},
            )


def test_implements_the_task_protocols():
    from jaxcv.tasks import Evaluator, Task

    task = ClassificationTask(LinearClassifier())
    assert isinstance(task, Task)
    assert isinstance(task.make_evaluator(), Evaluator)
