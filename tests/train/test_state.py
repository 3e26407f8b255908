"""TrainState and create_train_state."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcv.tasks import Evaluator, Task
from jaxcv.train.optim import make_optimizer
from jaxcv.train.state import TrainState, create_train_state, raw_key

from . import SGD, TinyTask, make_batches


def test_create_train_state_fields():
    task = TinyTask(input_bn=True)
    batch = make_batches(1, batch_size=4)[0]
    tx = make_optimizer(SGD, 10)
    state = create_train_state(task, jax.random.PRNGKey(3), batch, tx)
    assert state.step.dtype == jnp.int32 and state.step.shape == () and int(state.step) == 0
    assert state.rng.dtype == jnp.uint32 and state.rng.shape == (2,)
    assert set(state.model_state) == {"batch_stats"}
    chex.assert_shape(state.params["Conv_0"]["kernel"], (3, 3, 3, 4))
    chex.assert_shape(state.params["Dense_0"]["kernel"], (64, 5))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.params))
    # params equal a direct init with the first half of the split key
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(3))
    direct = task.init_variables(init_rng, batch)
    chex.assert_trees_all_close(state.params, direct["params"])
    np.testing.assert_array_equal(state.rng, state_rng)
    # the optimizer state matches tx.init(params); the variables view is what apply needs
    chex.assert_trees_all_close(state.opt_state, tx.init(state.params))
    assert set(state.variables) == {"params", "batch_stats"}


def test_protocols_are_checkable():
    task = TinyTask()
    assert isinstance(task, Task) and isinstance(task.make_evaluator(), Evaluator)
    assert not isinstance(object(), Task)


def test_tx_is_static_and_state_is_jittable():
    task = TinyTask()
    batch = make_batches(1, batch_size=2)[0]
    tx = optax.sgd(0.1)
    state = create_train_state(task, jax.random.PRNGKey(0), batch, tx)
    assert state.model_state == {}
    leaves, treedef = jax.tree.flatten(state)
    assert all(isinstance(x, jax.Array) for x in leaves)  # tx contributes no leaf
    rebuilt = jax.tree.unflatten(treedef, leaves)
    assert rebuilt.tx is tx
    out = jax.jit(lambda s: s.replace(step=s.step + 1))(state)
    assert int(out.step) == 1 and out.tx is tx


def test_typed_key_accepted_and_abstract_state():
    task = TinyTask()
    batch = make_batches(1, batch_size=2)[0]
    tx = optax.adam(1e-3)
    typed = create_train_state(task, jax.random.key(5), batch, tx)
    raw = create_train_state(task, jax.random.PRNGKey(5), batch, tx)
    chex.assert_trees_all_equal(typed.params, raw.params)
    np.testing.assert_array_equal(typed.rng, raw.rng)
    abstract = jax.eval_shape(lambda: create_train_state(task, jax.random.PRNGKey(5), batch, tx))
    assert isinstance(abstract, TrainState)
    assert jax.tree.structure(abstract) == jax.tree.structure(raw)
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(abstract))


@pytest.mark.parametrize(
    "bad", [np.zeros((3,), np.uint32), np.zeros((2,), np.int32), np.zeros((2, 2), np.uint32)]
)
def test_bad_rng_raises(bad):
    with pytest.raises(ValueError, match="shape"):
        raw_key(bad)


def test_bad_batch_raises():
    with pytest.raises(ValueError, match="dict"):
        create_train_state(TinyTask(), jax.random.PRNGKey(0), np.zeros((2, 8, 8, 3)), optax.sgd(1))
