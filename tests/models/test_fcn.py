"""FCN-32s/16s/8s and the bilinear transposed convolution: exactness, alignment, skips."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from jaxcv.models.fcn import FCN, VARIANTS, pad_to_multiple
from jaxcv.models.upsample import (
    BilinearUpsample,
    bilinear_kernel,
    bilinear_kernel_1d,
    crop_offset,
    upsample_transposed,
)

TINY_VGG = {
    "backbone": "vgg",
    "stages": ((3,), (4,), (4,), (6,), (6,)),
    "fc_width": 8,
    "fc6_kernel": 3,
}
TINY_RESNET = {"backbone": "resnet", "resnet_width": 4, "fc_width": 0}


# --- float64 NumPy references ---------------------------------------------------------------


def caffe_upsample_filt(size: int) -> np.ndarray:
    """The FCN reference implementation's ``upsample_filt`` (surgery.py), 1-D, float64."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.arange(size, dtype=np.float64)
    return 1 - np.abs(og - center) / factor


def interp_matrix(n: int, factor: int, alignment: str) -> np.ndarray:
    """``(n f, n)`` float64 bilinear interpolation weights with clamped (replicated) borders.

    ``center``: source coordinate ``(p + 0.5) / f - 0.5`` (torch ``align_corners=False``);
    ``corner``: ``p / f`` (TF1 ``resize_bilinear`` without half-pixel centres).
    """
    m = np.zeros((n * factor, n))
    for p in range(n * factor):
        src = (p + 0.5) / factor - 0.5 if alignment == "center" else p / factor
        src = min(max(src, 0.0), n - 1.0)
        i0 = int(np.floor(src))
        i1 = min(i0 + 1, n - 1)
        lam = src - i0
        m[p, i0] += 1 - lam
        m[p, i1] += lam
    return m


def bilinear_ref(x: np.ndarray, factor: int, alignment: str = "center") -> np.ndarray:
    """Bilinear upsampling of ``(B, H, W, C)`` by ``factor``, float64."""
    rows = interp_matrix(x.shape[1], factor, alignment)
    cols = interp_matrix(x.shape[2], factor, alignment)
    return np.einsum("ph,bhwc,qw->bpqc", rows, np.asarray(x, np.float64), cols)


def _init(model, x, seed=0):
    variables = model.init(jax.random.key(seed), x)
    return {k: v for k, v in variables.items() if k != "intermediates"}


def _with_score_fr(model, variables, x):
    out, state = model.apply(variables, x, mutable=["intermediates"])
    return out, {k: np.asarray(v[0]) for k, v in state["intermediates"].items()}


# --- the bilinear kernel and the upsampling layer ----------------------------------------------


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 5, 8, 16, 32])
def test_center_kernel_is_caffe_upsample_filt(factor):
    size = 2 * factor - factor % 2
    np.testing.assert_allclose(
        bilinear_kernel_1d(factor, "center"), caffe_upsample_filt(size), atol=0
    )
    # every output phase sums to one (a constant stays constant)
    k = bilinear_kernel_1d(factor, "center")
    sums = [k[phase::factor].sum() for phase in range(factor)]
    np.testing.assert_allclose(sums, 1.0, atol=1e-12)


def test_kernel_is_diagonal_over_channels():
    kernel = bilinear_kernel(4, 3)
    chex.assert_shape(kernel, (8, 8, 3, 3))
    assert np.all(kernel[:, :, 0, 1] == 0) and np.all(kernel[:, :, 2, 0] == 0)
    np.testing.assert_allclose(kernel[:, :, 1, 1], np.outer(*(bilinear_kernel_1d(4),) * 2))


class BilinearUpsampleTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(
        factor=[1, 3, 4, 32],
        size=[(1, 1), (3, 5)],
        alignment=["center", "corner"],
    )
    def test_equals_bilinear_reference_at_init(self, factor, size, alignment):
        x = np.random.default_rng(factor).normal(size=(2, *size, 3)).astype(np.float32)
        layer = BilinearUpsample(factor, alignment)
        variables = layer.init(jax.random.key(0), x)
        out = self.variant(layer.apply)(variables, x)
        chex.assert_shape(out, (2, size[0] * factor, size[1] * factor, 3))
        np.testing.assert_allclose(out, bilinear_ref(x, factor, alignment), atol=2e-6)

    def test_impulse_lands_on_the_cell_centre(self):
        # Coarse cell (1, 2) of stride 4 covers pixels 4..7 x 8..11: centre (5.5, 9.5).
        x = np.zeros((1, 3, 4, 1), np.float32)
        x[0, 1, 2, 0] = 1.0
        out = np.asarray(upsample_transposed(x, bilinear_kernel(4, 1), 4))[0, :, :, 0]
        ys, xs = np.nonzero(out == out.max())
        assert set(ys) == {5, 6} and set(xs) == {9, 10}  # the 4 pixels around (5.5, 9.5)
        np.testing.assert_allclose((out * np.arange(12)[:, None]).sum() / out.sum(), 5.5)

    def test_kernel_size_mismatch_raises(self):
        with pytest.raises(ValueError, match="needs a 8x8 kernel"):
            upsample_transposed(np.zeros((1, 2, 2, 1), np.float32), np.zeros((7, 7, 1, 1)), 4)
        with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
            upsample_transposed(np.zeros((2, 2, 1), np.float32), bilinear_kernel(2, 1), 2)
        with pytest.raises(ValueError, match="alignment"):
            bilinear_kernel_1d(2, "edges")


def test_matches_torch_interpolate_and_conv_transpose():
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 3, 4)).astype(np.float32)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    for factor in (2, 3, 8, 16):
        ref = functional.interpolate(xt, scale_factor=factor, mode="bilinear", align_corners=False)
        out = upsample_transposed(x, bilinear_kernel(factor, 4), factor)
        np.testing.assert_allclose(out, ref.permute(0, 2, 3, 1).numpy(), atol=2e-6)
    # A learned (random, non-symmetric) kernel: the documented ConvTranspose2d convention,
    # applied to the edge-padded input and cropped at crop_offset.
    for factor, alignment in (
        (1, "center"),
        (4, "center"),
        (3, "center"),
        (32, "center"),
        (2, "corner"),
        (5, "corner"),
    ):
        size = bilinear_kernel_1d(factor, alignment).size
        kernel = rng.normal(size=(size, size, 4, 2)).astype(np.float32)
        out = upsample_transposed(x, kernel, factor, alignment)
        weight = torch.from_numpy(np.flip(kernel, (0, 1)).transpose(2, 3, 0, 1).copy())
        padded = functional.pad(xt, (1, 1, 1, 1), mode="replicate")
        full = functional.conv_transpose2d(padded, weight, stride=factor)
        o = crop_offset(factor, alignment)
        ref = full[:, :, o : o + 5 * factor, o : o + 3 * factor].permute(0, 2, 3, 1).numpy()
        np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-5)


def test_gradients_match_torch_conv_transpose():
    """The phase-decomposed transposed convolution differentiates as torch's, for the input
    and a learned kernel."""
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    rng = np.random.default_rng(1)
    for factor, alignment in ((3, "center"), (8, "center"), (2, "corner")):
        size = bilinear_kernel_1d(factor, alignment).size
        x = rng.normal(size=(1, 4, 3, 2)).astype(np.float32)
        kernel = rng.normal(size=(size, size, 2, 3)).astype(np.float32)
        cot = rng.normal(size=(1, 4 * factor, 3 * factor, 3)).astype(np.float32)

        def loss(x, k, factor=factor, alignment=alignment, cot=cot):
            return jnp.sum(upsample_transposed(x, k, factor, alignment) * cot)

        grads = jax.grad(loss, (0, 1))(x, kernel)
        xt = torch.from_numpy(x).permute(0, 3, 1, 2).requires_grad_()
        kt = torch.from_numpy(kernel).requires_grad_()
        weight = torch.flip(kt, (0, 1)).permute(2, 3, 0, 1)
        full = functional.conv_transpose2d(
            functional.pad(xt, (1, 1, 1, 1), mode="replicate"), weight, stride=factor
        )
        o = crop_offset(factor, alignment)
        out = full[:, :, o : o + 4 * factor, o : o + 3 * factor]
        (out * torch.from_numpy(cot).permute(0, 3, 1, 2)).sum().backward()
        ref_x = xt.grad.permute(0, 2, 3, 1).numpy()
        np.testing.assert_allclose(grads[0], ref_x, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(grads[1], kt.grad.numpy(), atol=1e-4, rtol=1e-4)


# --- the FCN models -----------------------------------------------------------------------------


class FCNTest(parameterized.TestCase):
    @chex.variants(with_jit=True)
    @parameterized.product(variant=VARIANTS, backbone=["vgg", "resnet"])
    def test_shapes_any_size(self, variant, backbone):
        fields = TINY_VGG if backbone == "vgg" else TINY_RESNET
        model = FCN(num_classes=5, variant=variant, **fields)
        x = jnp.ones((2, 40, 52, 3))
        variables = _init(model, x)
        out = self.variant(lambda v, x: model.apply(v, x, train=False))(variables, x)
        chex.assert_shape(out, (2, 40, 52, 5))
        chex.assert_type(out, jnp.float32)
        chex.assert_tree_all_finite(out)

    @chex.variants(without_jit=True)
    def test_shapes_without_jit(self):
        model = FCN(num_classes=2, variant="8s", **TINY_VGG)
        x = jnp.ones((1, 33, 31, 3))
        out = self.variant(model.apply)(_init(model, x), x)
        chex.assert_shape(out, (1, 33, 31, 2))

    def test_train_mode_updates_batch_stats_and_uses_dropout(self):
        model = FCN(num_classes=3, variant="8s", batch_norm=True, **TINY_VGG)
        x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
        variables = _init(model, x)
        assert "batch_stats" in variables
        out, updates = model.apply(
            variables, x, train=True, rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"]
        )
        chex.assert_shape(out, (2, 32, 32, 3))
        assert "batch_stats" in updates
        other, _ = model.apply(
            variables, x, train=True, rngs={"dropout": jax.random.key(3)}, mutable=["batch_stats"]
        )
        assert not np.allclose(out, other)  # dropout after fc6/fc7 is active in training

    def test_bfloat16_compute_returns_float32(self):
        model = FCN(num_classes=3, variant="16s", dtype=jnp.bfloat16, **TINY_VGG)
        x = jnp.ones((1, 32, 32, 3))
        variables = _init(model, x)
        assert jax.tree.leaves(variables)[0].dtype == jnp.float32
        chex.assert_type(model.apply(variables, x), jnp.float32)

    def test_bad_inputs_raise(self):
        with pytest.raises(ValueError, match="variant"):
            _init(FCN(num_classes=3, variant="4s", **TINY_VGG), jnp.ones((1, 32, 32, 3)))
        with pytest.raises(ValueError, match="5-stage"):
            _init(FCN(num_classes=3, stages=((4,),) * 4, fc_width=8), jnp.ones((1, 32, 32, 3)))
        with pytest.raises(ValueError, match="NHWC"):
            _init(FCN(num_classes=3, **TINY_VGG), jnp.ones((32, 32, 3)))


def test_pad_to_multiple():
    x = jnp.ones((1, 33, 64, 2))
    padded = pad_to_multiple(x, 32)
    chex.assert_shape(padded, (1, 64, 64, 2))
    assert float(padded[:, 33:].sum()) == 0.0 and float(padded[:, :33].min()) == 1.0


@pytest.mark.parametrize("size", [(64, 64), (40, 72)])
def test_fcn32s_at_init_is_bilinear_upsampling_of_its_scores(size):
    """Alignment: output pixel p is the bilinear interpolation of the stride-32 scores at
    (p + 0.5) / 32 - 0.5 (VGG, centre) or p / 32 (ResNet, corner), then cropped."""
    x = jax.random.normal(jax.random.key(3), (2, *size, 3))
    for fields, alignment in ((TINY_VGG, "center"), (TINY_RESNET, "corner")):
        model = FCN(num_classes=4, variant="32s", **fields)
        out, inter = _with_score_fr(model, _init(model, x), x)
        ref = bilinear_ref(inter["coarse_scores"], 32, alignment)[:, : size[0], : size[1]]
        np.testing.assert_allclose(out, ref, atol=2e-5, rtol=1e-5)


def test_skip_layers_start_at_zero_resnet_16s_8s_equal_32s():
    """Corner alignment: x2 then x16 (or x2, x2, x8) bilinear equals x32 exactly, so a ResNet
    FCN-16s/8s with zero-initialised skip scores gives its FCN-32s output."""
    x = jax.random.normal(jax.random.key(4), (2, 64, 96, 3))
    fcn32 = FCN(num_classes=4, variant="32s", **TINY_RESNET)
    base = _init(fcn32, x)
    expected = fcn32.apply(base, x)
    for variant in ("16s", "8s"):
        model = FCN(num_classes=4, variant=variant, **TINY_RESNET)
        variables = _init(model, x)
        assert not np.any(variables["params"]["score_pool4"]["kernel"])
        params = {**variables["params"], "backbone": base["params"]["backbone"]}
        params["score_fr"] = base["params"]["score_fr"]
        out = model.apply({**variables, "params": params}, x)
        np.testing.assert_allclose(out, expected, atol=3e-5, rtol=1e-5)


def test_skip_layers_start_at_zero_vgg_bilinear_chain():
    """Centre alignment: with zero skip scores, FCN-16s = x16(x2(score_fr)) and FCN-8s =
    x8(x2(x2(score_fr))), each step bilinear: the skips contribute exactly nothing."""
    x = jax.random.normal(jax.random.key(5), (2, 64, 64, 3))
    for variant, chain in (("16s", (2, 16)), ("8s", (2, 2, 8))):
        model = FCN(num_classes=3, variant=variant, **TINY_VGG)
        out, inter = _with_score_fr(model, _init(model, x), x)
        ref = inter["coarse_scores"]
        for factor in chain:
            ref = bilinear_ref(ref, factor)
        np.testing.assert_allclose(out, ref, atol=2e-5, rtol=1e-5)


def test_fcn8s_skip_paths_are_aligned():
    """With ``score_fr = 0`` and random skip scores, FCN-8s's output is the reference
    ``x8(x2(score_pool4(pool4)) + score_pool3(pool3))``: the pool4/pool3 maps are added on
    exactly the grid the upsampled coarse scores live on, and the final crop is exact."""
    x = jax.random.normal(jax.random.key(6), (1, 64, 96, 3))
    for fields, alignment, names in (
        (TINY_VGG, "center", ("pool4", "pool3")),
        (TINY_RESNET, "corner", ("c4", "c3")),
    ):
        model = FCN(num_classes=3, variant="8s", **fields)
        variables = _init(model, x)
        params = dict(variables["params"])
        rng = np.random.default_rng(0)
        params["score_fr"] = jax.tree.map(jnp.zeros_like, params["score_fr"])
        for key in ("score_pool4", "score_pool3"):
            params[key] = jax.tree.map(
                lambda a, rng=rng: jnp.asarray(rng.normal(size=a.shape), jnp.float32), params[key]
            )
        variables = {**variables, "params": params}
        out = model.apply(variables, x)
        feats = model.apply(variables, x, method="features")

        def score(name, layer, params=params, feats=feats):
            p = params[layer]
            return np.einsum("bhwc,ck->bhwk", feats[name], p["kernel"][0, 0]) + p["bias"]

        s4 = score(names[0], "score_pool4")
        s3 = score(names[1], "score_pool3")
        ref = bilinear_ref(bilinear_ref(s4, 2, alignment) + s3, 8, alignment)
        np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_fcn8s_vgg16_has_the_papers_layer_sizes():
    """FCN-8s on VGG-16 for 21 classes: VGG-16's 13 convs, fc6 as a 7x7x512x4096 conv, fc7 1x1,
    three score layers and the 4x4, 4x4, 16x16 upsampling kernels (134M parameters, as in the
    paper's table), counted without running anything (``eval_shape``)."""
    model = FCN(num_classes=21, variant="8s")
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    params = shapes["params"]
    assert params["fc6"]["kernel"].shape == (7, 7, 512, 4096)
    assert params["upscore8"]["kernel"].shape == (16, 16, 21, 21)
    assert params["upscore2"]["kernel"].shape == (4, 4, 21, 21)
    widths = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    convs = sum(9 * a * b + b for a, b in itertools.pairwise(widths))
    heads = (49 * 512 * 4096 + 4096) + (4096 * 4096 + 4096)
    scores = (4096 + 512 + 256) * 21 + 3 * 21
    upsampling = (16 + 16 + 256) * 21 * 21
    total = sum(x.size for x in jax.tree.leaves(params))
    assert total == convs + heads + scores + upsampling == 134_489_759


def test_input_scale_is_upsample_then_block_mean_of_the_fine_logits():
    """``input_scale=2``: the same parameters applied to the 2x bilinear upsampled images
    (half-pixel centres, float64 reference), then each 2x2 block of logits averaged back to
    the input pixel it covers; same parameter tree as the scale-1 network."""
    x = jax.random.normal(jax.random.key(7), (2, 24, 40, 3))
    plain = FCN(num_classes=3, variant="8s", **TINY_VGG)
    scaled = FCN(num_classes=3, variant="8s", input_scale=2, **TINY_VGG)
    variables = _init(scaled, x)
    chex.assert_trees_all_equal_shapes(variables, _init(plain, x))
    out = scaled.apply(variables, x)
    chex.assert_shape(out, (2, 24, 40, 3))
    up = jnp.asarray(bilinear_ref(np.asarray(x), 2), jnp.float32)
    fine = np.asarray(plain.apply(variables, up), np.float64)
    ref = fine.reshape(2, 24, 2, 40, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(out, ref, atol=2e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="input_scale"):
        FCN(num_classes=3, input_scale=0, **TINY_VGG).init(jax.random.key(0), x)
