"""ResNet-18/34/50: shapes (with and without jit), torchvision parity, BatchNorm, init, bf16."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from jaxcv.models import build_model
from jaxcv.models.backbones import BasicBlock, Bottleneck, ResNetBackbone, ResNetStage

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from torch_to_flax import (  # noqa: E402
    nchw_to_nhwc,
    randomize_batch_norms,
    relative_error,
    resnet_variables,
)


def _init(model, shape, seed=0):
    return jax.jit(model.init)(jax.random.key(seed), jnp.zeros(shape, jnp.float32))


def _init_shapes(model, shape):
    """Variable shapes without compiling or running anything."""
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape, jnp.float32))


def _logits_and_features(model):
    def run(variables, images):
        return model.apply(variables, images), model.apply(variables, images, method="features")

    return run


class ResNetShapeTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("basic_imagenet", "resnet18", "imagenet", 1),
        ("bottleneck_cifar", "resnet50", "cifar", 4),
    )
    def test_logits_and_features(self, name, stem, expansion):
        model = build_model(name, num_classes=7, stem=stem, width=8, stage_sizes=(1, 2, 1, 1))
        variables = _init(model, (2, 32, 32, 3))
        images = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
        logits, feats = self.variant(_logits_and_features(model))(variables, images)
        chex.assert_shape(logits, (2, 7))
        assert logits.dtype == jnp.float32
        chex.assert_tree_all_finite(logits)
        _assert_feature_shapes(feats, stem, expansion, width=8)


def _assert_feature_shapes(feats, stem, expansion, width, size=32, batch=2):
    base = 4 if stem == "imagenet" else 1  # stride of c2
    assert set(feats) == {"stem", "c2", "c3", "c4", "c5"}
    chex.assert_shape(feats["stem"], (batch, size // base, size // base, width))
    for level in range(2, 6):
        stride = base * 2 ** (level - 2)
        channels = width * 2 ** (level - 2) * expansion
        chex.assert_shape(feats[f"c{level}"], (batch, size // stride, size // stride, channels))


@pytest.mark.parametrize(
    ("name", "stem", "expansion", "blocks"),
    [
        ("resnet18", "cifar", 1, 16),
        ("resnet34", "imagenet", 1, 32),
        ("resnet50", "imagenet", 4, 48),
    ],
)
def test_full_depth_shapes(name, stem, expansion, blocks):
    """Full-size models traced abstractly (no compile): logits, features, conv count."""
    model = build_model(name, num_classes=1000, stem=stem)
    variables = _init_shapes(model, (1, 32, 32, 3))
    images = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    logits, feats = jax.eval_shape(_logits_and_features(model), variables, images)
    chex.assert_shape(logits, (2, 1000))
    _assert_feature_shapes(feats, stem, expansion, width=64)
    kernels = [
        leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(variables["params"])
        if path[-1].key == "kernel" and len(leaf.shape) == 4 and "downsample" not in str(path)
    ]
    assert len(kernels) == blocks + 1  # + the stem conv


def test_c4_trunk_and_c5_head():
    """num_stages=3 is the stride-16 C4 trunk; ResNetStage on top reproduces c5's shape."""
    trunk = ResNetBackbone(stage_sizes=(3, 4, 6, 3), block_type="bottleneck", width=8, num_stages=3)
    images = jnp.ones((1, 64, 64, 3))
    feats, _ = jax.eval_shape(trunk.init_with_output, jax.random.key(0), images)
    assert set(feats) == {"stem", "c2", "c3", "c4"}
    chex.assert_shape(feats["c4"], (1, 4, 4, 128))
    head = ResNetStage("bottleneck", 3, 64, strides=2)
    out, head_vars = head.init_with_output(jax.random.key(1), jnp.ones(feats["c4"].shape))
    chex.assert_shape(out, (1, 2, 2, 256))
    assert set(head_vars["params"]) == {"block0", "block1", "block2"}
    assert "downsample_conv" in head_vars["params"]["block0"]


def test_backbone_rejects_bad_configs_and_inputs():
    model = build_model("resnet18", num_classes=2, width=4)
    variables = _init_shapes(model, (1, 32, 32, 3))

    def apply(shape, dtype=jnp.float32):
        return jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct(shape, dtype))

    with pytest.raises(ValueError, match=r"\(32, 32, 3\)"):
        apply((32, 32, 3))
    with pytest.raises(ValueError, match="NCHW"):
        apply((1, 3, 32, 32))
    with pytest.raises(ValueError, match="uint8"):
        apply((1, 32, 32, 3), jnp.uint8)
    with pytest.raises(ValueError, match="stem"):
        _init_shapes(build_model("resnet18", stem="tiny"), (1, 32, 32, 3))
    with pytest.raises(ValueError, match="block_type"):
        _init_shapes(build_model("resnet18", block_type="wide"), (1, 32, 32, 3))
    with pytest.raises(ValueError, match="num_classes"):
        _init_shapes(build_model("resnet18", num_classes=None), (1, 32, 32, 3))


@pytest.mark.parametrize(("block", "last_bn"), [(BasicBlock, "bn2"), (Bottleneck, "bn3")])
def test_zero_init_residual_zeroes_the_last_bn_of_each_block(block, last_bn):
    x = jnp.ones((1, 4, 4, 8))
    params = block(4, strides=2, zero_init_residual=True).init(jax.random.key(0), x)["params"]
    for key, leaf in params.items():
        if "bn" in key:
            expected = 0.0 if key == last_bn else 1.0
            assert np.all(np.asarray(leaf["scale"]) == expected), key
    # ...and every block of a stage gets the option (the backbone passes it to each stage).
    stage = ResNetStage("basic", 2, 4, strides=2, zero_init_residual=True)
    stage_params = stage.init(jax.random.key(1), x)["params"]
    for name in ("block0", "block1"):
        assert np.all(np.asarray(stage_params[name]["bn2"]["scale"]) == 0.0)
        assert np.all(np.asarray(stage_params[name]["bn1"]["scale"]) == 1.0)


def _torch_resnet(name, stem, num_classes=10, seed=0):
    torch.manual_seed(seed)
    tmodel = getattr(torchvision.models, name)(num_classes=num_classes)
    if stem == "cifar":
        tmodel.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        tmodel.maxpool = torch.nn.Identity()
    randomize_batch_norms(tmodel, seed)
    return tmodel


@pytest.mark.parity
@pytest.mark.parametrize(
    ("name", "stem", "size"),
    [("resnet18", "imagenet", 64), ("resnet18", "cifar", 32), ("resnet50", "imagenet", 57)],
)
def test_eval_parity_with_torchvision(name, stem, size):
    tmodel = _torch_resnet(name, stem).eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = tmodel(x).numpy()
        expected_c3 = torch.nn.Sequential(
            tmodel.conv1, tmodel.bn1, tmodel.relu, tmodel.maxpool, tmodel.layer1, tmodel.layer2
        )(x)
    model = build_model(name, num_classes=10, stem=stem)
    variables = resnet_variables(tmodel)
    chex.assert_trees_all_equal_shapes(variables, _init_shapes(model, (1, size, size, 3)))
    images = jnp.asarray(nchw_to_nhwc(x))
    logits, feats = jax.jit(_logits_and_features(model))(variables, images)
    assert relative_error(logits, expected) < 1e-4
    assert relative_error(feats["c3"], nchw_to_nhwc(expected_c3)) < 1e-4


@pytest.mark.parity
def test_train_mode_parity_and_running_stats():
    """Train-mode outputs and running means equal torch's; running vars differ by n/(n-1)."""
    tmodel = _torch_resnet("resnet18", "cifar").train()
    old = resnet_variables(tmodel)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = tmodel(x).numpy()
    new = resnet_variables(tmodel)["batch_stats"]
    model = build_model("resnet18", num_classes=10, stem="cifar")
    logits, updates = jax.jit(
        lambda v, im: model.apply(v, im, train=True, mutable=["batch_stats"])
    )(old, jnp.asarray(nchw_to_nhwc(x)))
    assert relative_error(logits, expected) < 1e-4
    stats = updates["batch_stats"]
    chex.assert_trees_all_equal_structs(stats, new)
    for path, leaf in jax.tree_util.tree_leaves_with_path(stats):
        keys = [p.key for p in path]
        if keys[-1] == "mean":
            ref = new
            for k in keys:
                ref = ref[k]
            np.testing.assert_allclose(leaf, ref, atol=1e-5, rtol=1e-4, err_msg=str(keys))
    # bn1 normalises over n = 4 * 16 * 16 values; layer4 over n = 4 * 2 * 2.
    for keys, n in (
        (("backbone", "bn1"), 4 * 16 * 16),
        (("backbone", "layer4", "block1", "bn2"), 16),
    ):
        flax_var, torch_var, old_var = stats, new, old["batch_stats"]
        for k in keys:
            flax_var, torch_var, old_var = flax_var[k], torch_var[k], old_var[k]
        unbiased = (torch_var["var"] - 0.9 * old_var["var"]) / 0.1
        expected_var = 0.9 * old_var["var"] + 0.1 * unbiased * (n - 1) / n
        np.testing.assert_allclose(flax_var["var"], expected_var, rtol=1e-4, atol=1e-6)


def test_bfloat16_compute_keeps_float32_params():
    images = jax.random.normal(jax.random.key(3), (2, 16, 16, 3))
    fields = {"num_classes": 10, "stem": "cifar", "width": 8, "stage_sizes": (1, 1, 1, 1)}
    model32 = build_model("resnet18", **fields)
    model16 = build_model("resnet18", dtype="bfloat16", **fields)
    variables = _init(model16, (1, 16, 16, 3))
    for leaf in jax.tree.leaves(variables):
        assert leaf.dtype == jnp.float32
    chex.assert_trees_all_equal_shapes(variables, _init_shapes(model32, (1, 16, 16, 3)))

    @jax.jit
    def run(v, x):
        def loss(p):
            out, upd = model16.apply({**v, "params": p}, x, train=True, mutable=["batch_stats"])
            return out.sum(), (out, upd)

        grads, (train_logits, updates) = jax.grad(loss, has_aux=True)(v["params"])
        return train_logits, updates, grads, model16.apply(v, x), model32.apply(v, x)

    train_logits, updates, grads, logits16, logits32 = run(variables, images)
    c5 = jax.eval_shape(lambda v, x: model16.apply(v, x, method="features"), variables, images)
    assert train_logits.dtype == logits16.dtype == jnp.float32
    assert c5["c5"].dtype == jnp.bfloat16
    for leaf in jax.tree.leaves((updates, grads)):
        assert leaf.dtype == jnp.float32
    assert relative_error(logits16, logits32) < 0.05


def test_replace_stride_with_dilation_keeps_stride_8():
    """torchvision's FCN trunk: layer3/layer4 dilated, c3..c5 all at stride 8 (parity with
    torchvision's dilated ResNet-50 is in test_convert.py)."""
    trunk = ResNetBackbone(
        stage_sizes=(1, 1, 2, 2),
        block_type="bottleneck",
        width=4,
        replace_stride_with_dilation=(False, True, True),
    )
    feats, variables = jax.eval_shape(
        trunk.init_with_output, jax.random.key(0), jnp.ones((1, 64, 64, 3))
    )
    for level, channels in (("c3", 32), ("c4", 64), ("c5", 128)):
        chex.assert_shape(feats[level], (1, 8, 8, channels))
    assert "downsample_conv" in variables["params"]["layer4"]["block0"]
    basic = ResNetBackbone(block_type="basic", replace_stride_with_dilation=(False, False, True))
    with pytest.raises(ValueError, match="BasicBlock supports only dilation 1"):
        jax.eval_shape(basic.init, jax.random.key(0), jnp.ones((1, 32, 32, 3)))
    with pytest.raises(ValueError, match="3 flags"):
        jax.eval_shape(
            ResNetBackbone(replace_stride_with_dilation=(True,)).init,
            jax.random.key(0),
            jnp.ones((1, 32, 32, 3)),
        )
