"""Optimizers, schedules, clipping, weight-decay masks and freezing against float64 NumPy."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcv.train.optim import decay_mask, learning_rate_fn, make_optimizer, param_path
from jaxcv.train.step import current_learning_rate

SHAPES = {
    "Conv_0": {"kernel": (3, 3, 2, 4), "bias": (4,)},
    "BatchNorm_0": {"scale": (4,), "bias": (4,)},
    "Dense_0": {"kernel": (4, 3), "bias": (3,)},
}


def _params(seed=0):
    rs = np.random.RandomState(seed)
    return jax.tree.map(
        lambda s: rs.normal(size=s).astype(np.float32),
        SHAPES,
        is_leaf=lambda x: isinstance(x, tuple),
    )


def _grads(n, scale=1.0, seed=1):
    return [jax.tree.map(lambda p: p * scale, _params(seed + i)) for i in range(n)]


def _flat(tree):
    return {
        param_path(p): np.asarray(v, np.float64)
        for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def _decayed(path):
    return path.endswith("kernel")  # ndim > 1 and not bias/scale


def _run(tx, params, grads):
    state = tx.init(params)
    for g in grads:
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


# ----------------------------------------------------------------------------- schedules
def _ref_lr(t, *, base, schedule, warmup, decay_steps=None, end=0.0, boundaries=(), factor=0.1):
    if t < warmup:
        return base * t / warmup
    if schedule == "cosine":
        progress = min((t - warmup) / (decay_steps - warmup), 1.0)
        return end + (base - end) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "step":
        return base * factor ** sum(t >= b for b in boundaries)
    return base


@pytest.mark.parametrize(
    "cfg",
    [
        {"schedule": "constant", "warmup_steps": 0},
        {"schedule": "constant", "warmup_steps": 4},
        {"schedule": "cosine", "warmup_steps": 5, "decay_steps": 30, "end_learning_rate": 0.01},
        {"schedule": "cosine", "warmup_steps": 0},
        {"schedule": "step", "warmup_steps": 3, "boundaries": [10, 20], "decay_factor": 0.5},
        {"schedule": "step", "warmup_steps": 0, "boundaries": [7]},
    ],
)
def test_schedules_match_reference(cfg):
    num_steps = 40
    opt = {"name": "sgd", "learning_rate": 0.3, **cfg}
    fn = learning_rate_fn(opt, num_steps)
    ref_kwargs = {
        "base": 0.3,
        "schedule": cfg["schedule"],
        "warmup": cfg["warmup_steps"],
        "decay_steps": cfg.get("decay_steps", num_steps),
        "end": cfg.get("end_learning_rate", 0.0),
        "boundaries": cfg.get("boundaries", ()),
        "factor": cfg.get("decay_factor", 0.1),
    }
    for t in range(num_steps + 5):
        np.testing.assert_allclose(float(fn(t)), _ref_lr(t, **ref_kwargs), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"schedule": "linear"}, "unknown schedule"),
        ({"schedule": "step", "boundaries": [5, 3]}, "increasing"),
        ({"schedule": "step", "warmup_steps": 5, "boundaries": [5]}, "warmup"),
        ({"schedule": "cosine", "warmup_steps": 50}, "decay_steps"),
        ({"schedule": "constant", "warmup_steps": -1}, "warmup"),
    ],
)
def test_bad_schedule_raises(cfg, match):
    with pytest.raises(ValueError, match=match):
        learning_rate_fn({"name": "sgd", "learning_rate": 0.1, **cfg}, 40)


def test_bad_optimizer_config_raises():
    with pytest.raises(ValueError, match=r"unknown optimizer 'rmsprop'.*sgd.*adamw"):
        make_optimizer({"name": "rmsprop", "learning_rate": 0.1}, 10)
    with pytest.raises(ValueError, match="learning_rate"):
        make_optimizer({"name": "sgd"}, 10)
    with pytest.raises(ValueError, match="grad_clip_norm"):
        make_optimizer({"name": "sgd", "learning_rate": 0.1, "grad_clip_norm": 0.0}, 10)


def test_config_dict_accepted():
    ml_collections = pytest.importorskip("ml_collections")
    cfg = ml_collections.ConfigDict({"name": "adamw", "learning_rate": 0.01, "weight_decay": 0.1})
    params, _ = _run(make_optimizer(cfg, 10), _params(), _grads(2))
    assert jax.tree.structure(params) == jax.tree.structure(_params())


# ---------------------------------------------------------------------------- optimizers
def test_decay_mask_skips_bias_and_norm():
    mask = _flat(decay_mask(_params()))
    assert {k for k, v in mask.items() if v} == {"Conv_0/kernel", "Dense_0/kernel"}


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("clip", [None, 1.0])
def test_sgd_matches_reference(nesterov, clip):
    cfg = {
        "name": "sgd",
        "learning_rate": 0.1,
        "momentum": 0.9,
        "nesterov": nesterov,
        "weight_decay": 0.01,
        "schedule": "cosine",
        "warmup_steps": 2,
        "grad_clip_norm": clip,
    }
    n = 5
    grads = _grads(n, scale=3.0)
    params, _ = _run(make_optimizer(cfg, 10), _params(), grads)
    lr = learning_rate_fn(cfg, 10)
    p, buf = _flat(_params()), {k: 0.0 for k in _flat(_params())}
    for t, g in enumerate(grads):
        g = _flat(g)
        if clip is not None:
            norm = math.sqrt(sum(float(np.sum(v**2)) for v in g.values()))
            g = {k: v * min(1.0, clip / norm) for k, v in g.items()}
        for k in p:
            gk = g[k] + (0.01 * p[k] if _decayed(k) else 0.0)
            buf[k] = gk + 0.9 * buf[k]
            update = gk + 0.9 * buf[k] if nesterov else buf[k]
            p[k] = p[k] - float(lr(t)) * update
    got = _flat(params)
    for k in p:
        np.testing.assert_allclose(got[k], p[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_adamw_matches_reference():
    cfg = {"name": "adamw", "learning_rate": 0.01, "weight_decay": 0.1, "schedule": "constant"}
    n, b1, b2, eps, lr, wd = 6, 0.9, 0.999, 1e-8, 0.01, 0.1
    grads = _grads(n)
    params, state = _run(make_optimizer(cfg, 10), _params(), grads)
    p = _flat(_params())
    m = {k: 0.0 for k in p}
    v = {k: 0.0 for k in p}
    for t, g in enumerate(grads, start=1):
        g = _flat(g)
        for k in p:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            mhat, vhat = m[k] / (1 - b1**t), v[k] / (1 - b2**t)
            update = mhat / (np.sqrt(vhat) + eps) + (wd * p[k] if _decayed(k) else 0.0)
            p[k] = p[k] - lr * update
    got = _flat(params)
    for k in p:
        np.testing.assert_allclose(got[k], p[k], rtol=1e-5, atol=1e-6, err_msg=k)
    np.testing.assert_allclose(float(current_learning_rate(state)), lr, rtol=1e-6)


def test_recorded_learning_rate_is_the_one_applied():
    cfg = {"name": "sgd", "learning_rate": 0.2, "momentum": 0.0, "warmup_steps": 4}
    tx = make_optimizer(cfg, 10)
    params = _params()
    state = tx.init(params)
    for t, g in enumerate(_grads(6)):
        updates, state = tx.update(g, state, params)
        expected = 0.2 * min(t, 4) / 4
        np.testing.assert_allclose(float(current_learning_rate(state)), expected, atol=1e-7)
        # plain SGD: the update is exactly -lr * g
        chex.assert_trees_all_close(
            updates, jax.tree.map(lambda x, lr=expected: -lr * x, g), atol=1e-7
        )


# -------------------------------------------------------------------------------- freeze
def test_freeze_keeps_params_bit_identical():
    cfg = {
        "name": "adamw",
        "learning_rate": 0.05,
        "weight_decay": 0.1,
        "grad_clip_norm": 0.5,
        "freeze": ["^Conv_0/", "BatchNorm_0/scale"],
    }
    start = _params()
    params, state = _run(make_optimizer(cfg, 10), start, _grads(4))
    got, before = _flat(params), _flat(start)
    frozen = {"Conv_0/kernel", "Conv_0/bias", "BatchNorm_0/scale"}
    for k in got:
        if k in frozen:
            np.testing.assert_array_equal(got[k], before[k], err_msg=k)
        else:
            assert np.all(got[k] != before[k]), k
    # the trainable part equals an unfrozen optimizer run on the trainable params alone
    trainable = {"BatchNorm_0": {"bias": start["BatchNorm_0"]["bias"]}, "Dense_0": start["Dense_0"]}
    sub_grads = [
        {"BatchNorm_0": {"bias": g["BatchNorm_0"]["bias"]}, "Dense_0": g["Dense_0"]}
        for g in _grads(4)
    ]
    cfg_sub = {k: v for k, v in cfg.items() if k != "freeze"}
    ref, _ = _run(make_optimizer(cfg_sub, 10), trainable, sub_grads)
    chex.assert_trees_all_close(ref["Dense_0"], params["Dense_0"], rtol=1e-6)
    chex.assert_trees_all_close(
        ref["BatchNorm_0"]["bias"], params["BatchNorm_0"]["bias"], rtol=1e-6
    )
    np.testing.assert_allclose(float(current_learning_rate(state)), 0.05, rtol=1e-6)


def test_freeze_unknown_pattern_lists_paths():
    tx = make_optimizer({"name": "sgd", "learning_rate": 0.1, "freeze": ["^backbone/"]}, 10)
    with pytest.raises(ValueError, match=r"\^backbone/.*match no parameter.*Conv_0/kernel"):
        tx.init(_params())


def test_freeze_everything_gives_zero_updates():
    tx = make_optimizer({"name": "sgd", "learning_rate": 0.1, "freeze": [".*"]}, 10)
    params, _ = _run(tx, _params(), _grads(2))
    chex.assert_trees_all_equal(params, _params())


# ------------------------------------------------------------------------- lr_multipliers
def test_lr_multipliers_scale_each_update_including_weight_decay():
    base = {"name": "adamw", "learning_rate": 0.05, "weight_decay": 0.1, "warmup_steps": 0}
    scaled = {**base, "lr_multipliers": [("^Conv_0/", 0.1), ("Dense_0/kernel", 0.0)]}
    start = _params()
    ref, _ = _run(make_optimizer(base, 10), start, _grads(1))
    got, state = _run(make_optimizer(scaled, 10), start, _grads(1))
    before, ref, got = _flat(start), _flat(ref), _flat(got)
    for k in got:
        factor = 0.1 if k.startswith("Conv_0/") else 0.0 if k == "Dense_0/kernel" else 1.0
        np.testing.assert_allclose(
            got[k] - before[k], factor * (ref[k] - before[k]), rtol=1e-5, atol=1e-7, err_msg=k
        )
    np.testing.assert_allclose(float(current_learning_rate(state)), 0.05, rtol=1e-6)


def test_lr_multipliers_first_matching_pattern_wins_and_jit():
    cfg = {"name": "sgd", "momentum": 0.0, "learning_rate": 1.0}
    tx = make_optimizer({**cfg, "lr_multipliers": [("Conv_0/kernel", 0.5), ("Conv_0", 2.0)]}, 10)
    params = jax.tree.map(jnp.asarray, _params())
    g = _grads(1)[0]
    updates, _ = jax.jit(tx.update)(g, tx.init(params), params)
    np.testing.assert_allclose(updates["Conv_0"]["kernel"], -0.5 * g["Conv_0"]["kernel"], rtol=1e-6)
    np.testing.assert_allclose(updates["Conv_0"]["bias"], -2.0 * g["Conv_0"]["bias"], rtol=1e-6)
    np.testing.assert_allclose(updates["Dense_0"]["bias"], -g["Dense_0"]["bias"], rtol=1e-6)


def test_lr_multipliers_bad_entries_are_named():
    cfg = {"name": "sgd", "learning_rate": 0.1}
    tx = make_optimizer({**cfg, "lr_multipliers": [("^trunk/", 0.1)]}, 10)
    with pytest.raises(ValueError, match=r"lr_multipliers patterns \['\^trunk/'\] match no"):
        tx.init(_params())
    with pytest.raises(ValueError, match="factor >= 0"):
        make_optimizer({**cfg, "lr_multipliers": [("Conv", -1.0)]}, 10)
    with pytest.raises(ValueError, match="factor >= 0"):
        make_optimizer({**cfg, "lr_multipliers": [("Conv",)]}, 10)


def test_optimizer_is_jittable():
    tx = make_optimizer({"name": "adamw", "learning_rate": 0.1, "freeze": ["Dense"]}, 10)
    params = jax.tree.map(jnp.asarray, _params())
    state = tx.init(params)
    updates, _ = jax.jit(tx.update)(_grads(1)[0], state, params)
    chex.assert_trees_all_equal(updates["Dense_0"], jax.tree.map(jnp.zeros_like, params["Dense_0"]))
