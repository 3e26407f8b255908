"""Fast R-CNN module: RoI max pooling of the stride-16 map feeds the box head, per RoI."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcv.models import build_model
from jaxcv.models.fast_rcnn import FastRCNN
from jaxcv.ops.roi_pool import roi_pool

KW = dict(num_classes=3, backbone_widths=(8, 8, 16, 16), backbone_depth=1, representation_size=32)


@pytest.fixture(scope="module")
def model_and_vars():
    model = FastRCNN(**KW)
    images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 64, 64, 3)), jnp.float32)
    rois = jnp.array([[[0, 0, 32, 32]], [[8, 8, 60, 40]]], jnp.float32)
    return model, model.init(jax.random.PRNGKey(0), images, rois), images


def test_outputs_are_the_head_on_roi_pooled_features(model_and_vars):
    model, variables, images = model_and_vars
    rois = jnp.array(
        [
            [[0, 0, 64, 64], [10, 12, 30, 50], [40, 3, 63, 20]],
            [[5, 5, 20, 20], [0, 0, 8, 8], [1, 2, 3, 4]],
        ],
        jnp.float32,
    )
    out = model.apply(variables, images, rois)
    assert out["class_logits"].shape == (2, 3, 4) and out["box_deltas"].shape == (2, 3, 4, 4)
    features = model.apply(variables, images, method="features")
    assert features.shape == (2, 4, 4, 16)
    pooled = roi_pool(features, rois, 7, spatial_scale=1 / 16).reshape(2, 3, -1)
    p = variables["params"]["box_head"]
    x = jax.nn.relu(pooled @ p["fc6"]["kernel"] + p["fc6"]["bias"])
    x = jax.nn.relu(x @ p["fc7"]["kernel"] + p["fc7"]["bias"])
    logits = x @ p["cls_score"]["kernel"] + p["cls_score"]["bias"]
    deltas = (x @ p["bbox_pred"]["kernel"] + p["bbox_pred"]["bias"]).reshape(2, 3, 4, 4)
    np.testing.assert_allclose(out["class_logits"], logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["box_deltas"], deltas, rtol=1e-5, atol=1e-7)
    # Each RoI's output depends on that RoI only: permuting RoIs permutes outputs.
    flipped = model.apply(variables, images, rois[:, ::-1])
    np.testing.assert_allclose(flipped["class_logits"][:, ::-1], logits, rtol=1e-5, atol=1e-6)


def test_paper_initialisation_and_registry(model_and_vars):
    _, variables, _ = model_and_vars
    p = variables["params"]["box_head"]
    assert p["cls_score"]["kernel"].shape == (32, 4) and p["bbox_pred"]["kernel"].shape == (32, 16)
    assert 0.005 < float(jnp.std(p["cls_score"]["kernel"])) < 0.015
    assert float(jnp.std(p["bbox_pred"]["kernel"])) < 0.0015
    assert isinstance(build_model("fast_rcnn", **KW), FastRCNN)


def test_dropout_needs_train_and_an_rng():
    model = FastRCNN(**KW, dropout_rate=0.5)
    images = jnp.ones((1, 32, 32, 3))
    rois = jnp.array([[[0, 0, 32, 32]]], jnp.float32)
    variables = model.init(jax.random.PRNGKey(0), images, rois)
    a = model.apply(variables, images, rois)["class_logits"]
    b = model.apply(variables, images, rois)["class_logits"]
    np.testing.assert_array_equal(a, b)
    c = model.apply(variables, images, rois, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
    assert not np.allclose(c["class_logits"], a)


def test_bad_arguments():
    images = jnp.ones((1, 32, 32, 3))
    with pytest.raises(ValueError, match="backbone"):
        FastRCNN(backbone="alexnet").init(jax.random.PRNGKey(0), images, jnp.zeros((1, 1, 4)))
    with pytest.raises(ValueError, match="rois"):
        FastRCNN(**KW).init(jax.random.PRNGKey(0), images, jnp.zeros((2, 1, 4)))
