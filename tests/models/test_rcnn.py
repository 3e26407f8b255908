"""R-CNN module: context-padded warps of each RoI through the CNN, one crop per RoI."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcv.models import build_model
from jaxcv.models.rcnn import RCNN
from jaxcv.ops.warp import context_boxes, crop_and_resize

KW = dict(
    num_classes=2,
    backbone_widths=(8, 8, 16, 16),
    backbone_depth=1,
    warp_size=32,
    context_padding=4.0,
    representation_size=16,
)


@pytest.fixture(scope="module")
def setup():
    model = RCNN(**KW)
    images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 48, 40, 3)), jnp.float32)
    rois = jnp.array(
        [
            [[0, 0, 40, 48], [5, 6, 20, 30], [30, 2, 39, 12]],
            [[2, 2, 9, 9], [-5, 10, 30, 60], [10, 10, 11, 11]],
        ],
        jnp.float32,
    )
    return model, model.init(jax.random.PRNGKey(0), images, rois), images, rois


def test_warp_is_the_context_padded_crop(setup):
    model, variables, images, rois = setup
    crops = model.apply(variables, images, rois, method="warp")
    want = crop_and_resize(images, context_boxes(rois, 32, 4.0), 32)
    assert crops.shape == (2, 3, 32, 32, 3)
    np.testing.assert_allclose(crops, want, atol=1e-6)


def test_each_roi_is_scored_from_its_own_crop(setup):
    model, variables, images, rois = setup
    out = model.apply(variables, images, rois)
    assert out["class_logits"].shape == (2, 3, 3) and out["box_deltas"].shape == (2, 3, 3, 4)
    # The same RoI alone (or in another position) gives the same outputs.
    alone = model.apply(variables, images, rois[:, 1:2])
    np.testing.assert_allclose(alone["class_logits"][:, 0], out["class_logits"][:, 1], atol=1e-5)
    np.testing.assert_allclose(alone["box_deltas"][:, 0], out["box_deltas"][:, 1], atol=1e-6)
    # An image that differs only outside a RoI's context window gives the same score.
    changed = images.at[0, :, 30:].set(5.0)  # the first image's columns right of RoI 1
    moved = model.apply(variables, changed, rois[:, 1:2])
    np.testing.assert_allclose(moved["class_logits"][0, 0], out["class_logits"][0, 1], atol=1e-5)


def test_box_regressor_reads_pool5_or_fc7(setup):
    _, variables, _, _ = setup
    head = variables["params"]["box_head"]
    assert head["bbox_pred"]["kernel"].shape == (2 * 2 * 16, 12)  # pool5: 2x2x16 at 32 px
    fc7 = RCNN(**KW, box_features="fc7")
    v = fc7.init(jax.random.PRNGKey(0), jnp.ones((1, 32, 32, 3)), jnp.ones((1, 1, 4)))
    assert v["params"]["box_head"]["bbox_pred"]["kernel"].shape == (16, 12)
    assert isinstance(build_model("rcnn", **KW), RCNN)


def test_bad_arguments():
    images, rois = jnp.ones((1, 32, 32, 3)), jnp.ones((1, 1, 4))
    with pytest.raises(ValueError, match="backbone"):
        RCNN(**{**KW, "backbone": "resnet50"}).init(jax.random.PRNGKey(0), images, rois)
    with pytest.raises(ValueError, match="box_features"):
        RCNN(**KW, box_features="fc6").init(jax.random.PRNGKey(0), images, rois)
    with pytest.raises(ValueError, match="rois"):
        RCNN(**KW).init(jax.random.PRNGKey(0), images, jnp.ones((1, 4)))
