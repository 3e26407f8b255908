"""RPN head: shapes with and without jit, output order and values against torchvision's RPNHead
(+ concat_box_prediction_layers) with the same weights, and anchor alignment."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcv.models.rpn import RPNHead
from jaxcv.ops.anchors import make_anchors, num_anchors_per_location


class RPNHeadShapeTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_shapes(self):
        head = RPNHead(num_anchors=9, channels=16)
        features = jnp.ones((2, 5, 6, 8))
        variables = head.init(jax.random.PRNGKey(0), features)
        objectness, deltas = self.variant(head.apply)(variables, features)
        chex.assert_shape(objectness, (2, 5 * 6 * 9))
        chex.assert_shape(deltas, (2, 5 * 6 * 9, 4))
        chex.assert_type([objectness, deltas], jnp.float32)
        # One output per anchor of make_anchors on the same map.
        anchors = make_anchors((5, 6), 16, (32, 64, 128), (0.5, 1.0, 2.0))
        assert anchors.shape[0] == objectness.shape[1]
        assert num_anchors_per_location((32, 64, 128), (0.5, 1.0, 2.0)) == 9


def test_rejects_wrong_rank():
    head = RPNHead(num_anchors=3)
    with pytest.raises(ValueError, match=r"features must be \(B, h, w, C\)"):
        head.init(jax.random.PRNGKey(0), jnp.ones((5, 6, 8)))


def test_matches_torchvision_rpn_head():
    torch = pytest.importorskip("torch")
    from torchvision.models.detection.rpn import RPNHead as TorchRPNHead
    from torchvision.models.detection.rpn import concat_box_prediction_layers

    c, a = 8, 6
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 5, 7, c)).astype(np.float32)
    head = RPNHead(num_anchors=a)
    params = head.init(jax.random.PRNGKey(0), features)["params"]
    params = jax.tree.map(lambda p: rng.normal(scale=0.2, size=p.shape).astype(np.float32), params)
    objectness, deltas = head.apply({"params": params}, features)

    ref = TorchRPNHead(c, a, conv_depth=1)

    def copy_conv(torch_conv, flax_conv):
        torch_conv.weight.data = torch.from_numpy(
            np.asarray(flax_conv["kernel"]).transpose(3, 2, 0, 1).copy()
        )
        torch_conv.bias.data = torch.from_numpy(np.asarray(flax_conv["bias"]).copy())

    copy_conv(ref.conv[0][0], params["conv"])
    copy_conv(ref.cls_logits, params["cls_logits"])
    copy_conv(ref.bbox_pred, params["bbox_pred"])
    with torch.no_grad():
        logits, regs = ref([torch.from_numpy(features.transpose(0, 3, 1, 2).copy())])
        ref_obj, ref_deltas = concat_box_prediction_layers(logits, regs)
    np.testing.assert_allclose(
        np.asarray(objectness).reshape(-1), ref_obj.numpy().reshape(-1), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(
        np.asarray(deltas).reshape(-1, 4), ref_deltas.numpy(), rtol=1e-4, atol=1e-4
    )


def test_init_matches_torchvision():
    head = RPNHead(num_anchors=9, channels=64)
    params = head.init(jax.random.PRNGKey(1), jnp.ones((1, 8, 8, 64)))["params"]
    for name in ("conv", "cls_logits", "bbox_pred"):
        np.testing.assert_array_equal(params[name]["bias"], 0.0)
        assert abs(float(jnp.std(params[name]["kernel"])) - 0.01) < 0.002
