"""jaxcv.models.convert against torchvision: random-weight checkpoints saved as .pth, converted,
and run on the same input (logits and feature maps to 1e-4 relative); key-mismatch errors."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcv.models import convert

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from torch_to_flax import (  # noqa: E402
    faster_rcnn_fpn_variables,
    narrow_torch_vgg,
    nchw_to_nhwc,
    randomize_all_batch_norms,
    randomize_batch_norms,
    relative_error,
)

pytestmark = pytest.mark.parity


def _torch_model(arch, seed=0):
    torch.manual_seed(seed)
    if arch.startswith("fcn_resnet50"):
        tmodel = torchvision.models.segmentation.fcn_resnet50(
            weights=None, weights_backbone=None, num_classes=5, aux_loss=arch.endswith("_aux")
        )
    elif arch.startswith("vgg"):
        tmodel = narrow_torch_vgg(arch, fc_width=24, num_classes=6)
    else:
        tmodel = getattr(torchvision.models, arch)(weights=None, num_classes=6)
    randomize_batch_norms(tmodel, seed)
    return tmodel.eval()


# End of features[...] at pool4 (inclusive) in torchvision's flat conv[/bn]/relu/pool lists.
VGG_POOL4_END = {"vgg11": 16, "vgg11_bn": 22, "vgg16": 24, "vgg16_bn": 34}


def _torch_outputs(arch, tmodel, x):
    """Logits plus intermediate feature maps (forward hooks, one pass), NHWC, jaxcv's names."""
    if arch.startswith("fcn"):
        taps = {"c4": tmodel.backbone.layer3, "c5": tmodel.backbone.layer4}
    elif arch.startswith("vgg"):
        taps = {"pool4": tmodel.features[VGG_POOL4_END[arch] - 1]}
    else:
        taps = {"c3": tmodel.layer2}
    result = {}
    hooks = [
        module.register_forward_hook(lambda _m, _i, out, name=name: result.update({name: out}))
        for name, module in taps.items()
    ]
    with torch.no_grad():
        out = tmodel(x)
    for hook in hooks:
        hook.remove()
    result.update(out if isinstance(out, dict) else {"logits": out})
    return {k: v.numpy() if v.ndim == 2 else nchw_to_nhwc(v) for k, v in result.items()}


def _jax_outputs(arch, model, variables, images):
    """One forward pass; the backbone's feature dict is captured on the way."""
    method = "outputs" if arch.startswith("fcn") else None
    out, state = model.apply(
        variables,
        images,
        method=method,
        capture_intermediates=lambda module, name: module.name == "backbone",
        mutable=["intermediates"],
    )
    (feats,) = state["intermediates"]["backbone"]["__call__"]
    if arch.startswith("fcn"):
        return {**out, "c5": feats["c5"], "c4": feats["c4"]}
    key = "pool4" if arch.startswith("vgg") else "c3"
    return {"logits": out, key: feats[key]}


ARCH_SIZES = [
    ("vgg11", 32),
    ("vgg11_bn", 48),
    ("vgg16", 32),
    ("vgg16_bn", 40),
    ("resnet18", 32),
    ("resnet34", 32),
    # ResNet-50's bottleneck body is also checked in the FPN detectors' conversions.
    pytest.param("resnet50", 33, marks=pytest.mark.extended("ResNet-50 classifier parity")),
    ("fcn_resnet50_aux", 29),
]


@pytest.mark.parametrize(("arch", "size"), ARCH_SIZES)
def test_converted_checkpoint_matches_torchvision(arch, size, tmp_path):
    tmodel = _torch_model(arch)
    path = tmp_path / f"{arch}.pth"
    torch.save(tmodel.state_dict(), path)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    expected = _torch_outputs(arch, tmodel, x)

    converted = convert.convert_checkpoint(arch.removesuffix("_aux"), path)
    model = converted.build_model()
    assert ("batch_stats" in converted.variables) == (arch not in ("vgg11", "vgg16"))
    images = jnp.asarray(nchw_to_nhwc(x))
    actual = jax.jit(lambda v, im: _jax_outputs(arch, model, v, im))(converted.variables, images)
    assert set(actual) == set(expected)
    for key, value in expected.items():
        assert actual[key].shape == value.shape, key
        assert np.abs(value).max() > 0.05, key
        assert relative_error(actual[key], value) < 1e-4, key


def test_inferred_fields_and_saved_conversion(tmp_path):
    tmodel = _torch_model("vgg11")
    sd = {k: v.numpy() for k, v in tmodel.state_dict().items()}
    converted = convert.convert_state_dict("vgg11", sd)
    assert converted.model_name == "vgg11"
    assert converted.model_fields == {"pool_output": (7, 7), "num_classes": 6, "fc_width": 24}
    fc7 = converted.variables["params"]["fc7"]["kernel"]
    np.testing.assert_array_equal(fc7, sd["classifier.3.weight"].T)
    info_path = convert.save_converted(converted, tmp_path / "out", source="x.pth")
    info = __import__("json").loads(info_path.read_text())
    assert info["arch"] == "vgg11" and info["model"]["name"] == "vgg11"
    assert info["model"]["fc_width"] == 24 and info["collections"] == ["params"]
    with pytest.raises(FileExistsError, match="already holds"):
        convert.save_converted(converted, tmp_path / "out")
    # FCN checkpoints with and without torchvision's auxiliary head (aux_loss=True/False).
    sd = {k: v.numpy() for k, v in _torch_model("fcn_resnet50").state_dict().items()}
    fcn = convert.convert_state_dict("fcn_resnet50", sd)
    assert fcn.model_fields == {"depth": 50, "num_classes": 5, "aux": False}
    assert set(fcn.variables["params"]) == {"backbone", "classifier"}
    score = fcn.variables["params"]["classifier"]["score"]["kernel"]
    np.testing.assert_array_equal(score, sd["classifier.4.weight"].transpose(2, 3, 1, 0))


def test_reader_unwraps_training_checkpoints(tmp_path):
    """torchvision's reference scripts save {"model": sd, ...}; DataParallel adds "module."."""
    sd = _torch_model("resnet18").state_dict()
    path = tmp_path / "wrapped.pth"
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, path)
    read = convert.read_state_dict(path)
    assert set(read) == set(sd)
    np.testing.assert_array_equal(read["conv1.weight"], sd["conv1.weight"].numpy())
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(convert.ConversionError, match="does not hold a state_dict"):
        convert.read_state_dict(tmp_path / "list.pth")
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"):
        convert.read_state_dict(tmp_path / "missing.pth")


def test_mismatched_keys_are_all_listed_in_one_error():
    sd = {k: v.numpy() for k, v in _torch_model("resnet18").state_dict().items()}
    del sd["layer2.0.downsample.1.running_var"]
    del sd["layer3.1.conv2.weight"]
    sd["layer5.0.conv1.weight"] = np.zeros((3, 3, 3, 3), np.float32)
    sd["layer1.0.bn1.weight"] = np.ones((65,), np.float32)
    with pytest.raises(convert.ConversionError) as info:
        convert.convert_state_dict("resnet18", sd)
    message = str(info.value)
    assert "missing keys (2): layer2.0.downsample.1.running_var, layer3.1.conv2.weight" in message
    assert "unexpected keys (1): layer5.0.conv1.weight" in message
    assert "layer1.0.bn1.weight (65,) -> params/backbone/layer1/block0/bn1/scale" in message
    assert "model expects (64,)" in message
    # A ResNet checkpoint is not a VGG one: the error says so key by key.
    pattern = r"missing keys \(22\): classifier\.0\.bias.*unexpected keys \(\d+\): bn1\.bias"
    with pytest.raises(convert.ConversionError, match=pattern):
        convert.convert_state_dict("vgg11", sd)


def test_unknown_architectures_list_the_convertible(tmp_path):
    with pytest.raises(ValueError, match=r"unknown architecture 'alexnet'.*resnet50.*_v2$"):
        convert.convert_state_dict("alexnet", {})


def test_reading_without_torch_says_how_to_install(monkeypatch, tmp_path):
    (tmp_path / "a.pth").write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"pip install 'jaxcv\[convert\]'"):
        convert.read_state_dict(tmp_path / "a.pth")


FPN_LEVELS = ["0", "1", "2", "3", "pool"]


def _torch_detector(builder, seed=0):
    """A random-init torchvision detector with random BN statistics and FPN biases."""
    torch.manual_seed(seed)
    tdet = getattr(torchvision.models.detection, builder)(
        weights=None, weights_backbone=None, num_classes=5
    )
    randomize_all_batch_norms(tdet.backbone, seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in tdet.backbone.fpn.modules():
            if isinstance(module, torch.nn.Conv2d) and module.bias is not None:
                module.bias.copy_(0.3 * torch.randn(module.bias.shape, generator=gen))
    return tdet.eval()


@pytest.mark.parametrize(
    ("builder", "arch", "size"),
    [
        ("fasterrcnn_resnet50_fpn", "resnet50_fpn", (96, 130)),
        ("fasterrcnn_resnet50_fpn_v2", "resnet50_fpn_v2", (67, 80)),
    ],
)
def test_detector_backbone_converts_to_the_fpn_backbone(builder, arch, size, tmp_path):
    """A whole detector checkpoint: its backbone.* keys convert (rpn.*, roi_heads.* left out)
    and the five FPN levels equal torchvision's backbone(x) on odd image sizes."""
    tdet = _torch_detector(builder)
    path = tmp_path / f"{builder}.pth"
    torch.save(tdet.state_dict(), path)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = tdet.backbone(x)
    assert list(expected) == FPN_LEVELS

    converted = convert.convert_checkpoint(arch, path)
    assert converted.model_name == "resnet_fpn"
    assert set(converted.variables) == {"params", "batch_stats"}
    assert set(converted.variables["params"]) == {"body", "fpn"}
    model = converted.build_model()
    actual = jax.jit(model.apply)(converted.variables, jnp.asarray(nchw_to_nhwc(x)))
    assert list(actual) == FPN_LEVELS
    for name in FPN_LEVELS:
        value = nchw_to_nhwc(expected[name])
        assert actual[name].shape == value.shape, name
        assert np.abs(value).max() > 0.05, name
        assert relative_error(actual[name], value) < 1e-4, name


def test_frozen_bn_eps_reproduces_torchvisions_coco_v1_eps(tmp_path):
    """torchvision runs its COCO_V1 detectors with FrozenBatchNorm eps 0 (overwrite_eps):
    converted with frozen_bn_eps=0 the FPN levels match it; with the default 1e-5 they do
    not (the running variances are made small, so eps matters); v2 has no FrozenBatchNorm."""
    tdet = _torch_detector("fasterrcnn_resnet50_fpn")
    with torch.no_grad():
        for module in tdet.backbone.body.modules():
            if hasattr(module, "running_var"):
                module.running_var.mul_(1e-4)  # the same outputs at eps 0: weight / 100
                module.weight.mul_(1e-2)
                module.eps = 0.0
    x = torch.randn(1, 3, 64, 80, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = nchw_to_nhwc(tdet.backbone(x)["0"])
    state = tdet.backbone.state_dict()

    def level0(**kwargs):
        converted = convert.convert_state_dict("resnet50_fpn", state, **kwargs)
        out = converted.build_model().apply(converted.variables, jnp.asarray(nchw_to_nhwc(x)))
        return out["0"]

    assert relative_error(level0(frozen_bn_eps=0.0), expected) < 1e-4
    assert relative_error(level0(), expected) > 1e-2
    with pytest.raises(ValueError, match="resnet50_fpn_v2' has none"):
        convert.convert_state_dict(
            "resnet50_fpn_v2",
            _torch_detector("fasterrcnn_resnet50_fpn_v2").backbone.state_dict(),
            frozen_bn_eps=0.0,
        )


def test_fpn_backbone_keys_old_names_and_errors():
    tdet = _torch_detector("fasterrcnn_resnet50_fpn")
    full = {k: v.numpy() for k, v in tdet.state_dict().items()}
    backbone = {k[9:]: v for k, v in full.items() if k.startswith("backbone.")}
    reference = convert.convert_state_dict("resnet50_fpn", full).variables
    # The backbone's own state dict, and pre-version-2 FPN key names (the original COCO
    # checkpoints): the same variables.
    old = {
        k.replace(".0.weight", ".weight").replace(".0.bias", ".bias")
        if k.startswith("fpn.")
        else k: v
        for k, v in backbone.items()
    }
    assert "fpn.inner_blocks.3.weight" in old and "fpn.layer_blocks.0.bias" in old
    for sd in (backbone, old):
        variables = convert.convert_state_dict("resnet50_fpn", sd).variables
        assert all(jax.tree.leaves(jax.tree.map(np.array_equal, variables, reference)))
    fpn = reference["params"]["fpn"]["layer_block2"]["conv"]
    np.testing.assert_array_equal(
        fpn["kernel"], full["backbone.fpn.layer_blocks.2.0.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(fpn["bias"], full["backbone.fpn.layer_blocks.2.0.bias"])
    # Keys outside backbone/rpn/roi_heads, and missing ones, are listed.
    broken = {**full, "transform.extra": np.zeros(3, np.float32)}
    del broken["backbone.fpn.inner_blocks.1.0.bias"]
    pattern = r"missing keys \(1\): fpn\.inner_blocks\.1\.0\.bias.*unexpected keys \(1\): transform"
    with pytest.raises(convert.ConversionError, match=pattern):
        convert.convert_state_dict("resnet50_fpn", broken)
    # A v1 checkpoint is not a v2 one: the FPN BatchNorms are missing.
    with pytest.raises(convert.ConversionError, match=r"missing keys.*fpn\.inner_blocks\.0\.1"):
        convert.convert_state_dict("resnet50_fpn_v2", full)
    # A Faster R-CNN checkpoint is not a Mask R-CNN one: the error names what it is.
    pattern = r"those of torchvision's fasterrcnn_resnet50_fpn, not maskrcnn_resnet50_fpn"
    with pytest.raises(convert.ConversionError, match=pattern):
        convert.convert_state_dict("maskrcnn_resnet50_fpn", full)


def test_whole_faster_rcnn_fpn_converts_with_old_key_names(tmp_path):
    """fasterrcnn_resnet50_fpn whole: every variable equals the test oracle's copy
    (tests/models/torch_to_flax.py, written from torchvision's modules: fc6's (c, h, w) ->
    (h, w, c) rows included), from today's key names and from the pre-version-2 RPN-head and FPN
    names of the original COCO checkpoint; another detector's state dict is named as such."""
    tdet = _torch_detector("fasterrcnn_resnet50_fpn")
    path = tmp_path / "frcnn.pth"
    torch.save(tdet.state_dict(), path)
    converted = convert.convert_checkpoint("fasterrcnn_resnet50_fpn", path)
    assert converted.model_name == "faster_rcnn_fpn"
    assert converted.model_fields == {
        "depth": 50,
        "num_classes": 4,
        "representation_size": 1024,
        "num_anchors": 3,
    }
    reference = faster_rcnn_fpn_variables(tdet)
    flat = dict(jax.tree_util.tree_flatten_with_path(converted.variables)[0])
    expected = dict(jax.tree_util.tree_flatten_with_path(reference)[0])
    assert set(flat) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(flat[key], value, err_msg=str(key))

    full = {k: v.numpy() for k, v in tdet.state_dict().items()}
    old = {}
    for key, value in full.items():
        if key.startswith("backbone.fpn."):
            key = key.replace(".0.weight", ".weight").replace(".0.bias", ".bias")
        old[key.replace("rpn.head.conv.0.0.", "rpn.head.conv.")] = value
    assert "rpn.head.conv.weight" in old and "backbone.fpn.inner_blocks.0.weight" in old
    again = convert.convert_state_dict("fasterrcnn_resnet50_fpn", old).variables
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, again, converted.variables)))

    # The COCO checkpoint's layout: FrozenBatchNorm2d (no num_batches_tracked), 91 classes.
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    frozen = torchvision.ops.misc.FrozenBatchNorm2d
    backbone = resnet_fpn_backbone(
        backbone_name="resnet50", weights=None, norm_layer=frozen, trainable_layers=3
    )
    coco = torchvision.models.detection.FasterRCNN(backbone, num_classes=91).state_dict()
    assert not any(k.endswith("num_batches_tracked") for k in coco)
    coco = {k.replace("rpn.head.conv.0.0.", "rpn.head.conv."): v.numpy() for k, v in coco.items()}
    converted = convert.convert_state_dict("fasterrcnn_resnet50_fpn", coco)
    assert converted.model_fields["num_classes"] == 90
    stats = converted.variables["batch_stats"]["backbone"]["body"]["bn1"]
    np.testing.assert_array_equal(stats["var"], coco["backbone.body.bn1.running_var"])

    for other in ("maskrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2"):
        sd = {k: v.numpy() for k, v in _torch_detector(other).state_dict().items()}
        with pytest.raises(convert.ConversionError, match=rf"those of torchvision's {other},"):
            convert.convert_state_dict("fasterrcnn_resnet50_fpn", sd)


def test_load_converted_reads_back_and_refuses_other_folders(tmp_path):
    tmodel = _torch_model("resnet18")
    torch.save(tmodel.state_dict(), tmp_path / "r18.pth")
    converted = convert.convert_checkpoint("resnet18", tmp_path / "r18.pth")
    convert.save_converted(converted, tmp_path / "out")
    loaded = convert.load_converted(tmp_path / "out")
    assert (loaded.arch, loaded.model_name) == ("resnet18", "resnet18")
    assert loaded.model_fields == converted.model_fields
    same = jax.tree.map(
        lambda a, b: np.array_equal(np.asarray(a), b), loaded.variables, converted.variables
    )
    assert all(jax.tree.leaves(same))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert.load_converted(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"not a converted checkpoint \(no jaxcv_converted"):
        convert.load_converted(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / convert.CONVERTED_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="is not a jaxcv conversion record"):
        convert.load_converted(tmp_path / "bad")
