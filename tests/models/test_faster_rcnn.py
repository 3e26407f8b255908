"""Faster R-CNN module and the small backbone: shapes (with and without jit), the stride-16
feature map of every backbone, parameter names, and argument errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from jaxcv.models.backbones.small import SmallBackbone
from jaxcv.models.faster_rcnn import BACKBONES, FasterRCNN
from jaxcv.ops.roi_align import roi_align


class SmallBackboneTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters("group", "batch", "none")
    def test_strides_and_widths(self, norm):
        net = SmallBackbone(widths=(4, 8, 8, 12), depth=2, norm=norm)
        images = jnp.ones((2, 48, 64, 3))
        variables = net.init(jax.random.PRNGKey(0), images)
        assert ("batch_stats" in variables) == (norm == "batch")
        out = self.variant(lambda v, x: net.apply(v, x))(variables, images)
        for s, width in enumerate((4, 8, 8, 12), start=1):
            chex.assert_shape(out[f"c{s}"], (2, 48 // 2**s, 64 // 2**s, width))

    def test_errors(self):
        with pytest.raises(ValueError, match="at least 16x16"):
            SmallBackbone().init(jax.random.PRNGKey(0), jnp.ones((1, 8, 32, 3)))
        with pytest.raises(ValueError, match="norm must be one of"):
            SmallBackbone(norm="layer").init(jax.random.PRNGKey(0), jnp.ones((1, 32, 32, 3)))
        with pytest.raises(ValueError, match="NHWC"):
            SmallBackbone().init(jax.random.PRNGKey(0), jnp.ones((32, 32, 3)))


def tiny_detector(**fields):
    defaults = dict(
        num_classes=4, backbone_widths=(8, 8, 8, 16), backbone_depth=1, representation_size=32
    )
    return FasterRCNN(**{**defaults, **fields})


class FasterRCNNModuleTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_rpn_and_box_head_shapes(self):
        model = tiny_detector(anchor_sizes=(16.0, 32.0), aspect_ratios=(1.0, 2.0))
        images = jnp.ones((2, 64, 96, 3))
        rois = jnp.tile(jnp.array([[[0.0, 0.0, 32.0, 32.0]]]), (2, 5, 1))
        variables = model.init(jax.random.PRNGKey(0), images, rois)
        features, objectness, deltas = self.variant(lambda v, x: model.apply(v, x, method="rpn"))(
            variables, images
        )
        chex.assert_shape(features, (2, 4, 6, 16))
        chex.assert_shape(objectness, (2, 4 * 6 * 4))
        chex.assert_shape(deltas, (2, 4 * 6 * 4, 4))
        logits, box_deltas = self.variant(lambda v, f, r: model.apply(v, f, r, method="box_head"))(
            variables, features, rois
        )
        chex.assert_shape(logits, (2, 5, 5))
        chex.assert_shape(box_deltas, (2, 5, 5, 4))
        chex.assert_type([logits, box_deltas], jnp.float32)
        assert set(variables["params"]) == {
            "backbone", "rpn", "fc6", "fc7", "cls_score", "bbox_pred",
        }  # fmt: skip

    def test_box_head_uses_roi_align_at_stride_16(self):
        model = tiny_detector()
        images = jax.random.normal(jax.random.PRNGKey(1), (1, 64, 64, 3))
        rois = jnp.array([[[4.0, 8.0, 40.0, 60.0], [0.0, 0.0, 64.0, 64.0]]])
        variables = model.init(jax.random.PRNGKey(0), images, rois)
        features, _, _ = model.apply(variables, images, method="rpn")
        logits, _ = model.apply(variables, features, rois, method="box_head")
        pooled = roi_align(features, rois, 7, 1.0 / 16, 2, aligned=False).reshape(1, 2, -1)
        p = variables["params"]
        x = jax.nn.relu(pooled @ p["fc6"]["kernel"] + p["fc6"]["bias"])
        x = jax.nn.relu(x @ p["fc7"]["kernel"] + p["fc7"]["bias"])
        expected = x @ p["cls_score"]["kernel"] + p["cls_score"]["bias"]
        np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)

    def test_errors(self):
        with pytest.raises(ValueError, match="unknown backbone 'alexnet'"):
            tiny_detector(backbone="alexnet").init(
                jax.random.PRNGKey(0), jnp.ones((1, 32, 32, 3)), jnp.zeros((1, 1, 4))
            )
        model = tiny_detector()
        with pytest.raises(ValueError, match=r"rois must be \(B, R, 4\)"):
            model.init(jax.random.PRNGKey(0), jnp.ones((2, 32, 32, 3)), jnp.zeros((1, 3, 4)))


@pytest.mark.parametrize(
    "backbone,channels", [("vgg16", 512), ("resnet18", 256), ("resnet50", 1024)]
)
def test_lecture_backbones_give_stride_16_maps(backbone, channels):
    """VGG-16 conv5 and ResNet C4, shape-checked without running them (eval_shape)."""
    assert backbone in BACKBONES
    model = FasterRCNN(num_classes=20, backbone=backbone, representation_size=64)
    images = jax.ShapeDtypeStruct((2, 96, 128, 3), jnp.float32)
    rois = jax.ShapeDtypeStruct((2, 8, 4), jnp.float32)
    variables = jax.eval_shape(lambda x, r: model.init(jax.random.PRNGKey(0), x, r), images, rois)
    features, objectness, _ = jax.eval_shape(
        lambda v, x: model.apply(v, x, method="rpn"), variables, images
    )
    assert features.shape == (2, 6, 8, channels)
    assert objectness.shape == (2, 6 * 8 * 9)
    assert variables["params"]["fc6"]["kernel"].shape == (7 * 7 * channels, 64)
