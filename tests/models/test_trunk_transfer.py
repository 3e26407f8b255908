"""jaxcv.train.trunk: a converted torchvision classifier's trunk inside detectors and FCN.

torchvision's randomly initialised ``vgg16``/``vgg16_bn``/``resnet50`` are converted
(:func:`jaxcv.models.convert.convert_state_dict`) and loaded into Faster R-CNN, Fast R-CNN and
FCN; their trunk features (and FCN's ``fc7`` map) must equal torchvision's on the same images to
1e-4 relative, in inference and in training mode (BatchNorm on batch statistics). VGG's
``fc6``/``fc7`` are narrowed (32 units) so the checkpoints stay small; their layout is VGG's.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcv.errors import InitFromError
from jaxcv.models import VGGBackbone, build_model, convert
from jaxcv.train.trunk import is_classifier, transfer_trunk

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from torch_to_flax import (  # noqa: E402
    narrow_torch_vgg,
    nchw_to_nhwc,
    randomize_batch_norms,
    relative_error,
)

pytestmark = pytest.mark.parity

FC_WIDTH = 32
# Index just past conv5_3's ReLU in torchvision's flat features list (before pool5).
VGG_CONV5_END = {"vgg16": 30, "vgg16_bn": 43}


def _converted(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    if arch.startswith("vgg"):
        tmodel = narrow_torch_vgg(arch, fc_width=FC_WIDTH, num_classes=6)
    else:
        tmodel = getattr(torchvision.models, arch)(weights=None, num_classes=6)
    randomize_batch_norms(tmodel, seed)
    state = {k: v.numpy() for k, v in tmodel.state_dict().items()}
    return tmodel, convert.convert_state_dict(arch, state).variables


def _images(size: int, seed: int = 1):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))
    return x, jnp.asarray(nchw_to_nhwc(x))


def _fresh(model, *inputs):
    return jax.jit(model.init)(jax.random.PRNGKey(0), *inputs)


def _apply(model, variables, images, train, method):
    if not train or "batch_stats" not in variables:
        return model.apply(variables, images, train=train, method=method)
    out, _ = model.apply(variables, images, train=True, method=method, mutable=["batch_stats"])
    return out


def _torch_forward(module, x, train: bool):
    module.train(train)
    with torch.no_grad():
        return module(x)


@pytest.mark.parametrize(("arch", "train"), [("vgg16", False), ("vgg16_bn", True)])
def test_vgg_trunk_in_faster_rcnn_gives_torchvisions_conv5(arch, train):
    tmodel, source = _converted(arch)
    model = build_model("faster_rcnn", num_classes=3, backbone=arch, representation_size=FC_WIDTH)
    x, images = _images(48)
    target = _fresh(model, images, jnp.zeros((2, 4, 4)))
    variables, transfer = transfer_trunk(target, source)

    def conv5(v, im):
        return _apply(model, v, im, train, "rpn")[0]

    expected = nchw_to_nhwc(_torch_forward(tmodel.features[: VGG_CONV5_END[arch]], x, train))
    actual = jax.jit(conv5)(variables, images)
    assert actual.shape == expected.shape and np.abs(expected).max() > 0.05
    assert relative_error(actual, expected) < 1e-4
    # fc6/fc7 are the box head's, the classifier layer and the RPN stay fresh.
    np.testing.assert_array_equal(
        variables["params"]["fc6"]["kernel"], source["params"]["fc6"]["kernel"]
    )
    np.testing.assert_array_equal(
        variables["params"]["fc7"]["bias"], source["params"]["fc7"]["bias"]
    )
    assert {"fc6", "fc7", "backbone/conv1_1", "backbone/conv5_3"} <= set(transfer.loaded)
    assert {"cls_score", "bbox_pred", "rpn/conv"} <= set(transfer.fresh)
    assert transfer.unused == ["fc8"]
    for name in ("cls_score", "rpn"):
        chex_equal = jax.tree.map(np.array_equal, variables["params"][name], target["params"][name])
        assert all(jax.tree.leaves(chex_equal)), name


def test_fast_rcnn_box_head_takes_fc6_and_fc7():
    _, source = _converted("vgg16")
    model = build_model("fast_rcnn", num_classes=3, backbone="vgg16", representation_size=FC_WIDTH)
    target = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), jnp.zeros((1, 2, 4)))
    )
    target = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), target)
    variables, transfer = transfer_trunk(target, source)
    assert transfer.loaded["box_head/fc6"] == "fc6" and transfer.loaded["box_head/fc7"] == "fc7"
    np.testing.assert_array_equal(
        variables["params"]["box_head"]["fc6"]["kernel"], source["params"]["fc6"]["kernel"]
    )
    vgg16_minus_fc8 = sum(
        np.size(v)
        for k, v in jax.tree_util.tree_leaves_with_path(source["params"])
        if "fc8" not in jax.tree_util.keystr(k)
    )
    assert transfer.num_loaded == vgg16_minus_fc8


def test_fcn_fc7_map_is_torchvisions_fc7():
    """VGG's fc6 (25088 x F) becomes FCN's 7x7 convolution: on a 224 x 224 image the fc7 map's
    centre cell (whose 7x7 window is all of pool5) is torchvision's classifier fc7 (pre-ReLU).
    Inference mode: dropout makes training-mode fc7 random."""
    tmodel, source = _converted("vgg16")
    model = build_model("fcn32s", num_classes=4, fc_width=FC_WIDTH, fc6_kernel=7)
    x, images = _images(224)
    target = _fresh(model, images[:1])
    variables, transfer = transfer_trunk(target, source)
    assert transfer.loaded["fc6"] == "fc6" and "score_fr" in transfer.fresh

    def fc7(v, im):
        _, state = model.apply(
            v, im, capture_intermediates=lambda m, _: m.name == "fc7", mutable=["intermediates"]
        )
        return state["intermediates"]["fc7"]["__call__"][0]

    actual = jax.jit(fc7)(variables, images)[:, 3, 3]
    tmodel.eval()
    with torch.no_grad():
        pool5 = torch.flatten(tmodel.avgpool(tmodel.features(x)), 1)
        expected = tmodel.classifier[:4](pool5).numpy()
    assert np.abs(expected).max() > 0.05
    assert relative_error(actual, expected) < 1e-4


@pytest.mark.parametrize("train", [False, True])
def test_resnet50_trunk_in_faster_rcnn_gives_torchvisions_layer3(train):
    tmodel, source = _converted("resnet50")
    model = build_model("faster_rcnn", num_classes=3, backbone="resnet50", representation_size=8)
    x, images = _images(64)
    target = _fresh(model, images, jnp.zeros((2, 4, 4)))
    variables, transfer = transfer_trunk(target, source)
    assert "backbone/layer4/block0/conv1" in transfer.unused and "fc" in transfer.unused
    trunk = torch.nn.Sequential(
        tmodel.conv1, tmodel.bn1, tmodel.relu, tmodel.maxpool, tmodel.layer1, tmodel.layer2,
        tmodel.layer3,
    )  # fmt: skip
    expected = nchw_to_nhwc(_torch_forward(trunk, x, train))
    actual = jax.jit(lambda v, im: _apply(model, v, im, train, "rpn")[0])(variables, images)
    assert actual.shape == expected.shape
    assert relative_error(actual, expected) < 1e-4


def test_resnet_trunk_in_the_fpn_detector_lands_under_backbone_body():
    """The ImageNet classifier's trunk under ``backbone/body`` of ``faster_rcnn_fpn``: every
    ResNet variable loaded as it is, the FPN and the heads fresh, ``fc`` left out."""
    from flax.traverse_util import flatten_dict

    _, source = _converted("resnet18")
    model = build_model("faster_rcnn_fpn", num_classes=3, depth=18, representation_size=8)
    target = _fresh(model, jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 4, 4)))
    variables, transfer = transfer_trunk(target, source)
    assert transfer.unused == ["fc"]
    assert transfer.loaded["backbone/body/layer4/block1/conv2"] == "backbone/layer4/block1/conv2"
    assert "backbone/fpn/inner_block0/conv" in transfer.fresh and "rpn/conv" in transfer.fresh
    assert not any(m.startswith("backbone/body") for m in transfer.fresh)
    loaded, src = flatten_dict(variables), flatten_dict(source)
    for (collection, *path), value in src.items():
        if path[0] == "backbone":
            key = (collection, "backbone", "body", *path[1:])
            np.testing.assert_array_equal(np.asarray(loaded[key]), value)
    fpn = ("params", "backbone", "fpn", "layer_block0", "conv", "kernel")
    np.testing.assert_array_equal(loaded[fpn], flatten_dict(target)[fpn])


def _classifier_vars(widths, names=None):
    names = names or [f"conv{i + 1}" for i in range(len(widths))]
    backbone, c = {}, 3
    for name, w in zip(names, widths, strict=True):
        backbone[name] = {"kernel": np.ones((3, 3, c, w), np.float32), "bias": np.zeros(w)}
        c = w
    return {"params": {"backbone": backbone, "logits": {"kernel": np.ones((c, 5)), "bias": 0}}}


def test_a_trunk_that_does_not_fit_names_both_sides():
    source = _classifier_vars((8, 16))
    assert is_classifier(source) and not is_classifier({"params": {"backbone": {}}})
    with pytest.raises(
        InitFromError, match=r"shapes differ.*backbone/conv2/kernel \(3, 3, 8, 16\)"
    ):
        transfer_trunk(_classifier_vars((8, 12)), source)
    deeper = _classifier_vars((8, 16, 32))
    with pytest.raises(InitFromError, match=r"backbone has 2 variables init_from lacks: .*conv3"):
        transfer_trunk(deeper, source)
    resnet_like = _classifier_vars((8, 16), names=["stem", "layer1"])
    with pytest.raises(
        InitFromError, match=r"no module in common .*'backbone/stem'.*backbone/conv1"
    ):
        transfer_trunk(_classifier_vars((8, 16)), resnet_like, source_name="init_from")


def test_cnn_classifier_trunk_in_the_localizer_and_init_fresh():
    """A jaxcv classification run's trunk (the small CNN) under the localizer: the backbone
    loads, the two heads stay fresh; init_fresh keeps a backbone module fresh on purpose."""
    fields = {"channels": (8, 16), "batch_norm": True}
    classifier = build_model("cnn", num_classes=5, hidden_units=(16,), **fields)
    images = jnp.ones((1, 16, 16, 3))
    source = classifier.init(jax.random.PRNGKey(1), images)
    localizer = build_model("localizer", num_classes=5, **fields)
    target = localizer.init(jax.random.PRNGKey(2), images)
    variables, transfer = transfer_trunk(target, source)
    got, want = variables["params"]["backbone"], source["params"]["backbone"]
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, got, want)))
    assert (
        "logits" in transfer.unused
        and transfer.fresh
        and not any(f.startswith("backbone") for f in transfer.fresh)
    )
    _, kept = transfer_trunk(target, source, fresh=["backbone/conv1"])
    assert "backbone/conv1" in kept.fresh and "backbone/conv2" in kept.loaded


SMALL_STAGES = ((4,), (8,), (8, 8), (8, 8), (16, 16))


def _small_vgg_classifier():
    """The segmentation family's pre-training at toy widths: a VGG with BatchNorm and fc6 on
    the flattened 3x3 pool5 of a 96x96 input, random BatchNorm statistics."""
    model = build_model(
        "vgg", num_classes=4, stages=SMALL_STAGES, batch_norm=True, fc_width=8, pool_output=None
    )
    variables = model.init(jax.random.PRNGKey(0), jnp.ones((1, 96, 96, 3)))
    stats = jax.tree_util.tree_map_with_path(
        lambda p, v: (
            jax.random.uniform(jax.random.PRNGKey(len(str(p))), v.shape, minval=0.5)
            if p[-1].key == "var"
            else 0.1 * jax.random.normal(jax.random.PRNGKey(len(str(p))), v.shape)
        ),
        variables["batch_stats"],
    )
    params = jax.tree_util.tree_map_with_path(  # conv biases are zero at initialisation
        lambda p, v: (
            0.3 * jax.random.normal(jax.random.PRNGKey(len(str(p))), v.shape)
            if p[-1].key == "bias"
            else v
        ),
        variables["params"],
    )
    return model, {"params": params, "batch_stats": stats}


def test_vgg_classifier_in_fcn_deconvnet_and_patch_cnn():
    """The segmentation family's transfers: FCN takes the backbone and fc6 convolutionalised
    (its fc6 map at the centre of a 96x96 image is the classifier's fc6); DeconvNet takes the
    conv and BatchNorm layers and fc6; the patch CNN takes the first three stages, whose last
    pool equals the classifier's on the same patch."""
    vgg, source = _small_vgg_classifier()
    images = jax.random.normal(jax.random.PRNGKey(3), (2, 96, 96, 3))
    fields = {"num_classes": 5, "stages": SMALL_STAGES, "batch_norm": True, "fc_width": 8}
    fcn = build_model("fcn32s", fc6_kernel=3, **fields)
    merged, transfer = transfer_trunk(fcn.init(jax.random.PRNGKey(4), images), source)
    assert {"fc6", "fc7", "backbone/conv5_2"} <= set(transfer.loaded) and "fc8" in transfer.unused
    pool5 = vgg.apply(source, images, method="features")["pool5"]  # (2, 3, 3, 16)
    want = (
        pool5.reshape(2, -1) @ source["params"]["fc6"]["kernel"] + source["params"]["fc6"]["bias"]
    )
    got = (
        jax.lax.conv_general_dilated(
            pool5,
            merged["params"]["fc6"]["kernel"],
            (1, 1),
            "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )[:, 0, 0]
        + merged["params"]["fc6"]["bias"]
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    deconvnet = build_model("deconvnet", fc6_kernel=3, **fields)
    merged, transfer = transfer_trunk(deconvnet.init(jax.random.PRNGKey(5), images), source)
    assert {"conv1_1", "bn5_2", "fc6", "fc7"} <= set(transfer.loaded)
    np.testing.assert_array_equal(
        merged["batch_stats"]["bn3_2"]["var"], source["batch_stats"]["backbone"]["bn3_2"]["var"]
    )
    # Its convs have no bias (BatchNorm follows): the source's is folded into the running mean,
    # so in inference mode every stage computes the classifier's features.
    _, inter = deconvnet.apply(
        merged, images, capture_intermediates=True, mutable=["intermediates"]
    )
    want = vgg.apply(source, images, method="features")
    for stage in ("conv1", "conv3", "conv5"):
        bn = {"conv1": "bn1_1", "conv3": "bn3_2", "conv5": "bn5_2"}[stage]
        got = jax.nn.relu(inter["intermediates"][bn]["__call__"][0])
        np.testing.assert_allclose(got, want[stage], rtol=1e-4, atol=1e-5, err_msg=stage)

    patch = build_model(
        "patch_cnn",
        num_classes=5,
        patch_size=17,
        scales=(1,),
        stages=SMALL_STAGES[:3],
        batch_norm=True,
        hidden_units=8,
    )
    coords = jnp.array([[[40, 50]]])
    target = patch.init(jax.random.PRNGKey(6), images[:1], coords)
    merged, transfer = transfer_trunk(target, source)
    assert "backbone/conv3_2" in transfer.loaded and "backbone/conv4_1" in transfer.unused
    crop = images[:1, 40 - 8 : 40 + 9, 50 - 8 : 50 + 9]
    first3 = {
        col: {k: v for k, v in source[col]["backbone"].items() if k[-3] in "123"}
        for col in ("params", "batch_stats")
    }
    want = VGGBackbone(stages=SMALL_STAGES[:3], batch_norm=True).apply(first3, crop)["pool3"]
    _, inter = patch.apply(
        merged,
        images[:1],
        coords,
        capture_intermediates=lambda m, _: m.name == "backbone",
        mutable=["intermediates"],
    )
    got = inter["intermediates"]["backbone"]["__call__"][0]["pool3"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
