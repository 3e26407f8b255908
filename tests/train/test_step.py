"""The generic train/eval step: update rule, metrics, rng handling, non-finite policy, bf16."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcv.train.optim import make_optimizer
from jaxcv.train.state import create_train_state
from jaxcv.train.step import make_eval_step, make_train_step

from . import TinyTask, make_batches

PLAIN_SGD = {"name": "sgd", "learning_rate": 0.1, "momentum": 0.0, "schedule": "constant"}


def _state(task, cfg=PLAIN_SGD, batch_size=8):
    batch = make_batches(1, batch_size=batch_size)[0]
    return create_train_state(task, jax.random.PRNGKey(0), batch, make_optimizer(cfg, 10))


class TrainStepTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_one_step_is_sgd_on_the_task_loss(self):
        task = TinyTask(input_bn=True)
        state = _state(task)
        batch = jax.tree.map(jnp.asarray, make_batches(1, batch_size=8, seed=3)[0])
        step = self.variant(make_train_step(task))
        new, metrics = step(state, batch)

        _, step_rng = jax.random.split(state.rng)

        def loss_of(p):
            return task.loss_fn(p, state.model_state, batch, step_rng, train=True)

        (loss, (aux, model_state)), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
        expected = jax.tree.map(lambda p, g: p - 0.1 * g, state.params, grads)
        chex.assert_trees_all_close(new.params, expected, rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_close(new.model_state, model_state, rtol=1e-6)
        assert int(new.step) == 1 and new.step.dtype == jnp.int32
        np.testing.assert_array_equal(new.rng, jax.random.split(state.rng)[0])
        assert not np.array_equal(new.rng, state.rng)
        norm = np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in jax.tree.leaves(grads)))
        np.testing.assert_allclose(metrics["grad_norm"], norm, rtol=1e-5)
        np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-6)
        np.testing.assert_allclose(metrics["accuracy"], aux["accuracy"])
        np.testing.assert_allclose(metrics["learning_rate"], 0.1, rtol=1e-6)
        assert float(metrics["nonfinite"]) == 0.0
        for v in metrics.values():
            assert v.shape == () and v.dtype == jnp.float32
        # running batch statistics moved: the BN model state was updated
        assert not np.allclose(new.model_state["batch_stats"]["BatchNorm_0"]["mean"], 0.0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_eval_step_is_predict_fn(self):
        task = TinyTask(input_bn=True)
        state = _state(task)
        batch = jax.tree.map(jnp.asarray, make_batches(1, batch_size=6, seed=4)[0])
        outputs = self.variant(make_eval_step(task))(state, batch)
        chex.assert_shape(outputs["logits"], (6, 5))
        expected = task.model.apply(state.variables, batch["image"], train=False)
        chex.assert_trees_all_close(outputs["logits"], expected, rtol=1e-6)


def test_training_reduces_loss_and_rng_never_repeats():
    task = TinyTask()
    state = _state(task, {"name": "adamw", "learning_rate": 0.02}, batch_size=16)
    batch = jax.tree.map(jnp.asarray, make_batches(1, batch_size=16, seed=5)[0])
    step = jax.jit(make_train_step(task))
    losses, keys = [], {tuple(np.asarray(state.rng))}
    for _ in range(30):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
        keys.add(tuple(np.asarray(state.rng)))
    assert losses[-1] < 0.5 * losses[0]
    assert len(keys) == 31


def _nan_batch(batch_size=8):
    batch = make_batches(1, batch_size=batch_size, seed=6)[0]
    batch["image"][0, 0, 0, 0] = np.nan
    return jax.tree.map(jnp.asarray, batch)


def test_skip_keeps_params_and_opt_state():
    task = TinyTask(input_bn=True)
    state = _state(task, {"name": "adamw", "learning_rate": 0.01})
    step = jax.jit(make_train_step(task, on_nonfinite="skip"))
    good = jax.tree.map(jnp.asarray, make_batches(1, batch_size=8, seed=7)[0])
    state, _ = step(state, good)
    new, metrics = step(state, _nan_batch())
    assert float(metrics["nonfinite"]) == 1.0
    assert not np.isfinite(float(metrics["loss"]))
    chex.assert_trees_all_equal(new.params, state.params)
    chex.assert_trees_all_equal(new.opt_state, state.opt_state)
    chex.assert_trees_all_equal(new.model_state, state.model_state)
    assert int(new.step) == int(state.step) + 1
    assert not np.array_equal(new.rng, state.rng)
    # the next good step still trains
    after, metrics = step(new, good)
    assert float(metrics["nonfinite"]) == 0.0
    assert not np.allclose(after.params["Dense_0"]["kernel"], new.params["Dense_0"]["kernel"])


def test_stop_reports_nonfinite_loss():
    task = TinyTask()
    state = _state(task)
    new, metrics = jax.jit(make_train_step(task, on_nonfinite="stop"))(state, _nan_batch())
    assert float(metrics["nonfinite"]) == 1.0 and np.isnan(float(metrics["loss"]))
    assert int(new.step) == 1


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match=r"on_nonfinite.*'ignore'"):
        make_train_step(TinyTask(), on_nonfinite="ignore")
    task = TinyTask()
    with pytest.raises(ValueError, match="dict"):
        make_train_step(task)(_state(task), np.zeros((8, 8, 8, 3)))


def test_bf16_compute_keeps_float32_params_and_close_loss():
    batch = jax.tree.map(jnp.asarray, make_batches(1, batch_size=16, seed=8)[0])
    cfg = {"name": "adamw", "learning_rate": 0.01}
    results = {}
    for name, dtype in (("f32", jnp.float32), ("bf16", jnp.bfloat16)):
        task = TinyTask(input_bn=True, dtype=dtype)
        state = _state(task, cfg, batch_size=16)
        step = jax.jit(make_train_step(task))
        for _ in range(3):
            state, metrics = step(state, batch)
        results[name] = (state, metrics)
    state, metrics = results["bf16"]
    for tree in (state.params, state.opt_state, state.model_state):
        floats = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
        assert floats and all(x.dtype == jnp.float32 for x in floats)
    assert metrics["loss"].dtype == jnp.float32
    # the model really computed in bfloat16
    logits = state.params and TinyTask(input_bn=True, dtype=jnp.bfloat16).model.apply(
        state.variables, batch["image"], train=False
    )
    assert logits.dtype == jnp.bfloat16
    np.testing.assert_allclose(metrics["loss"], results["f32"][1]["loss"], rtol=3e-2)
    assert float(metrics["loss"]) != float(results["f32"][1]["loss"])
    chex.assert_trees_all_close(state.params, results["f32"][0].params, atol=3e-2)


def test_custom_tx_without_recorded_learning_rate():
    task = TinyTask()
    batch = make_batches(1, batch_size=4)[0]
    state = create_train_state(task, jax.random.PRNGKey(0), batch, optax.sgd(0.1))
    _, metrics = jax.jit(make_train_step(task))(state, jax.tree.map(jnp.asarray, batch))
    assert "learning_rate" not in metrics and {"loss", "grad_norm", "nonfinite"} <= set(metrics)
