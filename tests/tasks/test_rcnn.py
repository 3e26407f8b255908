"""R-CNN task: chunked scoring equals scoring all proposals at once; training is finite."""

import jax
import numpy as np

from jaxcv.models.rcnn import RCNN
from jaxcv.tasks.rcnn import RCNNTask
from tests.tasks.test_fast_rcnn import K, _real_batch

MODEL = RCNN(
    num_classes=K,
    backbone_widths=(8, 8, 16, 16),
    backbone_depth=1,
    warp_size=32,
    context_padding=4.0,
    representation_size=16,
)


def test_chunked_scoring_equals_one_pass_and_detections_match():
    batch = _real_batch(np.random.default_rng(0), 3, p=11)
    whole = RCNNTask(MODEL, test_chunk_size=0, box_score_threshold=0.0)
    chunked = RCNNTask(MODEL, test_chunk_size=4, box_score_threshold=0.0)  # 3 chunks, padded
    variables = whole.init_variables(jax.random.PRNGKey(0), batch)
    images, props = batch["image"], batch["proposals"]
    a = whole.score_proposals(variables, images, props)
    b = jax.jit(chunked.score_proposals)(variables, images, props)
    assert b[0].shape == (2, 11, K + 1) and b[1].shape == (2, 11, K + 1, 4)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-6)
    da, db = whole.predict_fn(variables, batch), chunked.predict_fn(variables, batch)
    np.testing.assert_array_equal(da["pred_valid"], db["pred_valid"])
    np.testing.assert_allclose(da["pred_scores"], db["pred_scores"], rtol=1e-5, atol=1e-6)


def test_defaults_and_finite_training_loss_with_and_without_objects():
    task = RCNNTask(MODEL, roi_batch_size_per_image=6)
    assert RCNNTask(MODEL).settings.roi_batch_size_per_image == 32
    assert RCNNTask(MODEL).settings.test_chunk_size == 64
    rng = np.random.default_rng(1)
    variables = task.init_variables(jax.random.PRNGKey(0), _real_batch(rng, 1))
    step = jax.jit(lambda p, b, k: jax.value_and_grad(lambda q: task.loss_fn(q, {}, b, k)[0])(p))
    for count in (0, 2):
        loss, grads = step(variables["params"], _real_batch(rng, count), jax.random.PRNGKey(2))
        assert np.isfinite(loss) and loss > 0
        assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
