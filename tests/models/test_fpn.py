"""jaxcv.models.fpn against torchvision: the nearest resize, FeaturePyramidNetwork (+ pool level,
with and without BatchNorm) and resnet_fpn_backbone('resnet50') with FrozenBatchNorm2d, on
random weights copied by hand (tests/models/torch_to_flax.py), odd image sizes included."""

from collections import OrderedDict

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcv.models.fpn import (
    FeaturePyramidNetwork,
    ResNetFPNBackbone,
    nearest_indices,
    nearest_resize,
)

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from torch_to_flax import (  # noqa: E402
    fpn_variables,
    nchw_to_nhwc,
    randomize_all_batch_norms,
    relative_error,
    resnet_fpn_variables,
)
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone  # noqa: E402
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool  # noqa: E402

pytestmark = pytest.mark.parity

LEVEL_NAMES = ["0", "1", "2", "3", "pool"]


def _randomize_conv_biases(model, seed=0):
    """torchvision's FPN starts with zero biases; random ones check their mapping."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d) and module.bias is not None:
                module.bias.copy_(0.3 * torch.randn(module.bias.shape, generator=gen))


@pytest.mark.parametrize(
    ("in_size", "out_size"),
    [(3, 6), (3, 5), (5, 9), (17, 33), (4, 7), (7, 4), (6, 6), (13, 25), (9, 17), (2, 31)],
)
def test_nearest_resize_matches_torch_interpolate(in_size, out_size):
    x = torch.arange(in_size * 3, dtype=torch.float32).reshape(1, 1, in_size, 3)
    expected = torch.nn.functional.interpolate(x, size=(out_size, 3), mode="nearest")
    rows = expected[0, 0, :, 0].numpy().astype(int) // 3
    np.testing.assert_array_equal(nearest_indices(in_size, out_size), rows)
    y = torch.randn(2, 4, in_size, in_size + 2, generator=torch.Generator().manual_seed(0))
    size = (out_size, out_size + 1)
    expected = nchw_to_nhwc(torch.nn.functional.interpolate(y, size=size, mode="nearest"))
    np.testing.assert_array_equal(nearest_resize(jnp.asarray(nchw_to_nhwc(y)), size), expected)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_feature_pyramid_matches_torchvision(batch_norm):
    torch.manual_seed(0)
    channels = [4, 8, 16, 32]
    tfpn = torchvision.ops.FeaturePyramidNetwork(
        channels,
        8,
        extra_blocks=LastLevelMaxPool(),
        norm_layer=torch.nn.BatchNorm2d if batch_norm else None,
    )
    _randomize_conv_biases(tfpn)
    randomize_all_batch_norms(tfpn)
    tfpn.eval()
    # Sizes that do not halve exactly, so the nearest resize is not a plain repeat.
    sizes = [(20, 31), (9, 16), (5, 7), (2, 3)]
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(2, c, *s, generator=gen) for c, s in zip(channels, sizes, strict=True)]
    with torch.no_grad():
        expected = list(tfpn(OrderedDict((str(i), x) for i, x in enumerate(xs))).values())
    params, stats = fpn_variables(tfpn)
    variables = {"params": params, **({"batch_stats": stats} if stats else {})}
    model = FeaturePyramidNetwork(8, batch_norm=batch_norm)
    inputs = [jnp.asarray(nchw_to_nhwc(x)) for x in xs]
    actual = jax.jit(model.apply)(variables, inputs)
    assert len(actual) == 5
    for a, e in zip(actual, expected, strict=True):
        assert a.shape == nchw_to_nhwc(e).shape
        assert relative_error(a, nchw_to_nhwc(e)) < 1e-5
    if batch_norm:  # training mode: BatchNorm on batch statistics, as torch's train()
        tfpn.train()
        with torch.no_grad():
            expected = list(tfpn(OrderedDict((str(i), x) for i, x in enumerate(xs))).values())
        actual, _ = model.apply(variables, inputs, train=True, mutable=["batch_stats"])
        for a, e in zip(actual, expected, strict=True):
            assert relative_error(a, nchw_to_nhwc(e)) < 1e-5


def test_resnet50_fpn_backbone_matches_torchvision_with_frozen_batch_norm():
    torch.manual_seed(0)
    tmodel = resnet_fpn_backbone(backbone_name="resnet50", weights=None, trainable_layers=3)
    frozen = torchvision.ops.misc.FrozenBatchNorm2d
    assert isinstance(tmodel.body.bn1, frozen) and tmodel.body.bn1.eps == 1e-5
    randomize_all_batch_norms(tmodel)
    _randomize_conv_biases(tmodel.fpn)
    tmodel.eval()
    x = torch.randn(2, 3, 96, 130, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = tmodel(x)
    assert list(expected) == LEVEL_NAMES
    model = ResNetFPNBackbone(depth=50)
    variables = resnet_fpn_variables(tmodel)
    actual = jax.jit(model.apply)(variables, jnp.asarray(nchw_to_nhwc(x)))
    assert list(actual) == LEVEL_NAMES
    sizes = [(24, 33), (12, 17), (6, 9), (3, 5), (2, 3)]
    for name, size in zip(LEVEL_NAMES, sizes, strict=True):
        value = nchw_to_nhwc(expected[name])
        assert actual[name].shape == value.shape == (2, *size, 256), name
        assert np.abs(value).max() > 0.05, name
        assert relative_error(actual[name], value) < 1e-4, name


def test_frozen_batch_norm_ignores_train():
    images = jax.random.normal(jax.random.key(0), (2, 64, 80, 3))
    frozen = ResNetFPNBackbone(depth=18, width=8, out_channels=16)
    variables = jax.jit(frozen.init)(jax.random.key(1), images)
    assert set(variables) == {"params", "batch_stats"}
    # Non-trivial running statistics, so batch statistics would give another result.
    variables["batch_stats"] = jax.tree.map(lambda s: s + 0.3, variables["batch_stats"])
    infer = frozen.apply(variables, images)
    trained = frozen.apply(variables, images, train=True)  # no mutable collection needed
    for name in ("0", "1", "2", "3", "pool"):
        np.testing.assert_array_equal(trained[name], infer[name])
    live = ResNetFPNBackbone(depth=18, width=8, out_channels=16, frozen_batch_norm=False)
    out, updates = live.apply(variables, images, train=True, mutable=["batch_stats"])
    assert set(updates) == {"batch_stats"}
    assert np.abs(np.asarray(out["0"]) - np.asarray(infer["0"])).max() > 1e-3
    only = ResNetFPNBackbone(depth=18, width=8, out_channels=16, returned_layers=(2, 4))
    out = jax.eval_shape(only.init_with_output, jax.random.key(0), images)[0]
    assert {k: v.shape for k, v in out.items()} == {
        "0": (2, 8, 10, 16),
        "1": (2, 2, 3, 16),
        "pool": (2, 1, 2, 16),
    }


def test_bad_inputs_say_what_is_wrong():
    fpn = FeaturePyramidNetwork(8)
    with pytest.raises(ValueError, match="at least one feature map"):
        fpn.init(jax.random.key(0), [])
    with pytest.raises(ValueError, match=r"one batch size.*\(3, 4, 4, 8\)"):
        fpn.init(jax.random.key(0), [jnp.zeros((2, 8, 8, 4)), jnp.zeros((3, 4, 4, 8))])
    with pytest.raises(ValueError, match=r"\(B, H, W, C\).*level 0"):
        fpn.init(jax.random.key(0), [jnp.zeros((8, 8, 4))])
    images = jnp.zeros((1, 32, 32, 3))
    with pytest.raises(ValueError, match=r"returned_layers must be increasing.*\(3, 2\)"):
        ResNetFPNBackbone(depth=18, returned_layers=(3, 2)).init(jax.random.key(0), images)
    with pytest.raises(ValueError, match=r"returned_layers.*\(0, 1\)"):
        ResNetFPNBackbone(depth=18, returned_layers=(0, 1)).init(jax.random.key(0), images)
    with pytest.raises(ValueError, match=r"unknown ResNet depth 101"):
        ResNetFPNBackbone(depth=101).init(jax.random.key(0), images)
    with pytest.raises(ValueError, match="looks like NCHW"):
        ResNetFPNBackbone(depth=18).init(jax.random.key(0), jnp.zeros((1, 3, 32, 32)))
    with pytest.raises(ValueError, match="positive sizes"):
        nearest_indices(0, 3)
