"""The mask branch against torchvision's MaskRCNNHeads + MaskRCNNPredictor (copied weights),
the MaskRCNN module's parameter tree, its mask_head method and input checks."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcv.models import build_model
from jaxcv.models.mask_head import MaskHead, MaskRCNN
from jaxcv.ops.roi_align import roi_align


def tiny_model(**kw):
    fields = dict(
        num_classes=3,
        backbone_widths=(8, 8, 16, 16),
        backbone_depth=1,
        anchor_sizes=(16.0, 32.0),
        representation_size=32,
        mask_channels=8,
        mask_num_convs=2,
    )
    fields.update(kw)
    return MaskRCNN(**fields)


def rois_for(batch, n, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 40, (batch, n, 2))
    wh = rng.uniform(4, 30, (batch, n, 2))
    return np.concatenate([xy, xy + wh], -1).astype(np.float32)


def test_mask_head_matches_torchvision_heads_and_predictor():
    torch = pytest.importorskip("torch")
    from torch_to_flax import conv_params, nchw_to_nhwc, to_numpy
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    c_in, width, k = 6, 10, 4
    torch.manual_seed(0)
    heads = MaskRCNNHeads(c_in, [width] * 4, 1).eval()
    predictor = MaskRCNNPredictor(width, width, k).eval()
    with torch.no_grad():  # non-zero biases, so their layout is checked too
        for module in [*heads.modules(), *predictor.modules()]:
            if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
                module.bias.normal_(0.0, 0.1)
    x = torch.randn(5, c_in, 14, 14)
    with torch.no_grad():
        expected = predictor(heads(x))  # (N, K, 28, 28)
    deconv = predictor.conv5_mask
    params = {f"mask_fcn{i + 1}": conv_params(heads[i][0]) for i in range(4)}
    params["conv5_mask"] = {
        # torch ConvTranspose2d weight (in, out, kh, kw) -> Upsample2x's (kh, kw, in, out).
        "kernel": np.transpose(to_numpy(deconv.weight), (2, 3, 0, 1)),
        "bias": to_numpy(deconv.bias),
    }
    params["mask_fcn_logits"] = conv_params(predictor.mask_fcn_logits)
    head = MaskHead(num_classes=k, channels=width, num_convs=4)
    ours = head.apply({"params": params}, jnp.asarray(nchw_to_nhwc(x)))
    chex.assert_shape(ours, (5, 28, 28, k))
    np.testing.assert_allclose(np.asarray(ours), nchw_to_nhwc(expected), rtol=1e-4, atol=1e-5)


def test_mask_head_init_is_kaiming_fan_out_with_zero_bias():
    head = MaskHead(num_classes=3, channels=64, num_convs=4)
    params = jax.jit(head.init)(jax.random.PRNGKey(0), jnp.zeros((1, 14, 14, 64)))["params"]
    kernel = np.asarray(params["mask_fcn2"]["kernel"])  # (3, 3, 64, 64): fan_out = 9 * 64
    np.testing.assert_allclose(kernel.std(), np.sqrt(2.0 / (9 * 64)), rtol=0.05)
    assert np.abs(kernel).max() > 2.5 * kernel.std()  # untruncated normal, like torch
    for name in ("mask_fcn1", "conv5_mask", "mask_fcn_logits"):
        np.testing.assert_array_equal(params[name]["bias"], 0.0)


def test_mask_rcnn_is_faster_rcnn_plus_one_parameter_subtree():
    model = tiny_model()
    images, rois = jnp.zeros((2, 64, 64, 3)), jnp.asarray(rois_for(2, 5))
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), images, rois)
    assert set(variables) == {"params"}
    assert set(variables["params"]) == {
        "backbone",
        "rpn",
        "fc6",
        "fc7",
        "cls_score",
        "bbox_pred",
        "mask_head",
    }
    assert set(variables["params"]["mask_head"]) == {
        "mask_fcn1",
        "mask_fcn2",
        "conv5_mask",
        "mask_fcn_logits",
    }
    out = jax.eval_shape(model.apply, variables, images, rois)
    chex.assert_shape(out["mask_logits"], (2, 5, 28, 28, 3))
    chex.assert_shape(out["class_logits"], (2, 5, 4))
    assert model.mask_size == 28
    assert isinstance(build_model("mask_rcnn", num_classes=3, mask_channels=8), MaskRCNN)


def test_mask_head_method_is_roi_align_then_the_branch():
    model = tiny_model(mask_roi_size=7)
    features = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 4, 16))
    rois = jnp.asarray(rois_for(2, 3, seed=1))
    # Initialising through the method creates only the mask branch's parameters.
    init = jax.jit(lambda k, f, r: model.init(k, f, r, method="mask_head"))
    variables = init(jax.random.PRNGKey(0), features, rois)
    assert set(variables["params"]) == {"mask_head"}
    logits = jax.jit(lambda v, f, r: model.apply(v, f, r, method="mask_head"))(
        variables, features, rois
    )
    chex.assert_shape(logits, (2, 3, 14, 14, 3))
    head = MaskHead(num_classes=3, channels=8, num_convs=2)

    @jax.jit
    def reference(params, features, rois):
        pooled = roi_align(features, rois, 7, spatial_scale=1 / 16, sampling_ratio=2, aligned=False)
        return head.apply({"params": params}, pooled.reshape(6, 7, 7, -1)).reshape(2, 3, 14, 14, 3)

    expected = reference(variables["params"]["mask_head"], features, rois)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(expected), rtol=1e-5, atol=1e-6)


def test_mask_head_rejects_bad_shapes():
    model = tiny_model()
    rois = jnp.asarray(rois_for(1, 2))
    variables = {"params": {}}  # the shapes are checked before any parameter is read
    features = jnp.zeros((1, 4, 4, 16))
    with pytest.raises(ValueError, match="rois must be"):
        model.apply(variables, features, rois[0], method="mask_head")
    with pytest.raises(ValueError, match="features must be"):
        model.apply(variables, features[0], rois, method="mask_head")
    with pytest.raises(ValueError, match="RoI features"):
        MaskHead(num_classes=2).init(jax.random.PRNGKey(0), jnp.zeros((14, 14, 4)))
