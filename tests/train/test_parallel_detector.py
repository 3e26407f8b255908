"""Faster R-CNN's whole train step through ``jaxcv.train.parallel`` on 8 forced CPU devices.

Mesh mode shards the global batch under one ``jax.jit``: the step key is split per image exactly
as on one device, so the random anchor and RoI sampling, hence the parameters after a few steps,
equal the single-device run. Under pmap every device computes the loss of its own sub-batch
with its own key (the step key folded with the device index) and the gradients are averaged:
the RPN and RoI losses are normalised by each device's sampled counts, which differ between
images, so pmap is not the global-batch step. It is compared with that semantics computed on
one device: per-device losses and keys, gradients averaged, one optimizer update.
"""

import chex
import jax
import numpy as np
import optax
import pytest

from jaxcv.models.faster_rcnn import FasterRCNN
from jaxcv.tasks.faster_rcnn import FasterRCNNTask
from jaxcv.train.optim import make_optimizer
from jaxcv.train.parallel import Parallel
from jaxcv.train.state import create_train_state
from jaxcv.train.step import make_train_step

IMAGE, BATCH, STEPS = 64, 8, 2
SGD = {"name": "sgd", "learning_rate": 0.02, "momentum": 0.9, "schedule": "constant"}
# 4 x 4 x 6 = 96 anchors, 24 proposals + 4 ground truth: both stages subsample at random.
SUBSAMPLED = {"rpn_batch_size_per_image": 32, "roi_batch_size_per_image": 16}


def _task(settings):
    model = FasterRCNN(
        num_classes=3,
        backbone_widths=(8, 8, 16, 16),
        backbone_depth=1,
        anchor_sizes=(16.0, 32.0),
        representation_size=32,
    )
    return FasterRCNNTask(
        model,
        rpn_pre_nms_top_n_train=48,
        rpn_post_nms_top_n_train=24,
        rpn_pre_nms_top_n_test=48,
        rpn_post_nms_top_n_test=24,
        detections_per_image=10,
        **settings,
    )


def _batches():
    rng = np.random.default_rng(0)
    out = []
    for _ in range(STEPS):
        count = rng.integers(0, 5, BATCH)  # 0..4 objects, one image may have none
        xy = rng.uniform(0, 34, (BATCH, 4, 2))
        wh = rng.uniform(12, 30, (BATCH, 4, 2))
        classes = np.where(np.arange(4) < count[:, None], rng.integers(1, 4, (BATCH, 4)), 0)
        out.append(
            {
                "image": rng.normal(size=(BATCH, IMAGE, IMAGE, 3)).astype(np.float32),
                "boxes": np.concatenate([xy, xy + wh], -1).astype(np.float32),
                "classes": classes.astype(np.int32),
                "valid": classes > 0,
            }
        )
    return out


def _run(settings, mode):
    task, batches = _task(settings), _batches()
    parallel = Parallel(mode)
    state = create_train_state(task, jax.random.PRNGKey(0), batches[0], make_optimizer(SGD, 10))
    init = state.params
    step = parallel.compile_train_step(make_train_step(task, axis_name=parallel.axis_name))
    state = parallel.put_state(state)
    history = []
    for batch in batches:
        state, metrics = step(state, parallel.put_batch(batch))
        history.append(parallel.get_metrics(metrics))
    return init, parallel.get_state(state), history


def _per_device_reference(settings):
    """pmap's semantics on one device: the loss of each device's sub-batch with its folded key,
    gradients and metrics averaged, one update (``jaxcv.train.step`` under ``axis_name``)."""
    task, batches = _task(settings), _batches()
    tx = make_optimizer(SGD, 10)
    state = create_train_state(task, jax.random.PRNGKey(0), batches[0], tx)
    devices = jax.device_count()

    def loss(params, batch, key):
        return task.loss_fn(params, state.model_state, batch, key, train=True)

    grad_fn = jax.jit(jax.value_and_grad(loss, has_aux=True))
    history = []
    for batch in batches:
        new_rng, step_rng = jax.random.split(state.rng)
        size = BATCH // devices
        grads, metrics = [], []
        for d in range(devices):
            sub = {k: v[d * size : (d + 1) * size] for k, v in batch.items()}
            (_, (m, _)), g = grad_fn(state.params, sub, jax.random.fold_in(step_rng, d))
            grads.append(g)
            metrics.append(m)
        mean = jax.tree.map(lambda *xs: sum(xs) / devices, *grads)
        updates, opt_state = tx.update(mean, state.opt_state, state.params)
        history.append({k: np.mean([float(m[k]) for m in metrics]) for k in metrics[0]})
        state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            opt_state=opt_state,
            rng=new_rng,
        )
    return None, jax.device_get(state), history


RUNS = {
    "none": lambda: _run(SUBSAMPLED, "none"),
    "mesh": lambda: _run(SUBSAMPLED, "mesh"),
    "pmap": lambda: _run(SUBSAMPLED, "pmap"),
    "per_device": lambda: _per_device_reference(SUBSAMPLED),
}


@pytest.fixture(scope="module")
def runs():
    """Each run on first use (each compiles a whole detector step), then shared."""
    assert jax.device_count() == 8, "tests/conftest.py forces 8 CPU devices"
    done = {}

    def get(name):
        if name not in done:
            done[name] = RUNS[name]()
        return done[name]

    return get


# pmap (the legacy mode) compiles two more detector steps; its classifier step is compared with
# one device in tests/train/test_parallel.py.
PMAP = pytest.mark.extended("pmap's detector step: two more whole-detector compiles")


@pytest.mark.parametrize(
    ("mode", "reference"), [("mesh", "none"), pytest.param("pmap", "per_device", marks=PMAP)]
)
def test_detector_step_equals_its_reference(runs, mode, reference):
    _, ref, ref_hist = runs(reference)
    init, got, hist = runs(mode)
    assert int(got.step) == STEPS
    # Float reductions run in another order across devices.
    chex.assert_trees_all_close(got.params, ref.params, rtol=1e-4, atol=2e-5)
    np.testing.assert_array_equal(got.rng, ref.rng)
    for name in ("loss", "rpn_cls", "rpn_box", "roi_cls", "roi_box", "num_fg", "num_pos"):
        np.testing.assert_allclose(
            [h[name] for h in hist], [h[name] for h in ref_hist], rtol=1e-4, atol=1e-6, err_msg=name
        )
    # The updates are not vacuous: every head moved.
    for head in ("rpn", "cls_score", "bbox_pred", "backbone"):
        moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), got.params[head], init[head])
        assert max(jax.tree.leaves(moved)) > 1e-5, head


@PMAP
def test_pmap_is_not_the_global_batch_step(runs):
    """Per-device normalisation and keys: pmap differs from the single-device step."""
    diff = jax.tree.map(
        lambda a, b: np.abs(a - b).max(), runs("pmap")[1].params, runs("none")[1].params
    )
    assert max(jax.tree.leaves(diff)) > 1e-4
