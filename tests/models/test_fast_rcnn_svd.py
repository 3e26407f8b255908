"""Fast R-CNN's truncated SVD of fc6/fc7 (sec. 3.1): the factorised head against the original
one, Eckart-Young, a float64 NumPy forward, parameter counts and the errors of bad ranks."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxcv.models import build_model
from jaxcv.models.fast_rcnn import FastRCNN
from jaxcv.models.svd import truncate_fc_layers
from jaxcv.ops.roi_pool import roi_pool

KW = dict(num_classes=3, backbone_widths=(8, 8, 8, 8), backbone_depth=1, representation_size=32)
FC6_SHAPE, FC7_SHAPE = (7 * 7 * 8, 32), (32, 32)
RANKS = (12, 10)


@pytest.fixture(scope="module")
def setup():
    """The ordinary model, its variables, images and RoIs."""
    model = FastRCNN(**KW)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(2, 64, 64, 3)), jnp.float32)
    rois = jnp.array(
        [
            [[0, 0, 64, 64], [10, 12, 30, 50], [40, 3, 63, 20], [2, 2, 40, 60]],
            [[5, 5, 20, 20], [0, 0, 8, 8], [1, 2, 33, 34], [16, 0, 64, 48]],
        ],
        jnp.float32,
    )
    variables = model.init(jax.random.PRNGKey(0), images, rois)
    # A trained head's kernels have decaying spectra; a random one's are flat. Scaling the
    # singular values keeps the outputs of a rank-t head far from those of the full one.
    head = variables["params"]["box_head"]
    for layer in ("fc6", "fc7"):
        u, s, vt = np.linalg.svd(np.asarray(head[layer]["kernel"], np.float64), False)
        s = s * 0.8 ** np.arange(len(s)) * 3
        head[layer]["kernel"] = jnp.asarray((u * s) @ vt, jnp.float32)
        head[layer]["bias"] = jnp.asarray(rng.normal(size=32) * 0.1, jnp.float32)
    return model, variables, images, rois


def _svd_variables(variables, ranks):
    params, errors = truncate_fc_layers(variables["params"], ranks)
    return {**variables, "params": params}, errors


def test_full_rank_reproduces_the_ordinary_model(setup):
    model, variables, images, rois = setup
    full = (min(FC6_SHAPE), min(FC7_SHAPE))
    svd_vars, errors = _svd_variables(variables, full)
    head = svd_vars["params"]["box_head"]
    assert sorted(head) == ["bbox_pred", "cls_score", "fc6_svd", "fc7_svd"]
    assert sorted(svd_vars["params"]) == sorted(variables["params"])
    assert head["fc6_svd"]["factor"]["kernel"].shape == (FC6_SHAPE[0], 32)
    assert "bias" not in head["fc6_svd"]["factor"]
    assert errors["fc6"] < 1e-6 and errors["fc7"] < 1e-6
    want = model.apply(variables, images, rois)
    got = FastRCNN(**KW, svd_ranks=full).apply(svd_vars, images, rois)
    for key in ("class_logits", "box_deltas"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5)


def test_truncation_error_is_eckart_young(setup):
    _, variables, _, _ = setup
    params, errors = truncate_fc_layers(variables["params"], RANKS)
    old, new = variables["params"]["box_head"], params["box_head"]
    for layer, rank in zip(("fc6", "fc7"), RANKS, strict=True):
        kernel = np.asarray(old[layer]["kernel"], np.float64)
        s = np.linalg.svd(kernel, compute_uv=False)
        discarded = np.sqrt(np.sum(s[rank:] ** 2))
        factor = np.asarray(new[f"{layer}_svd"]["factor"]["kernel"], np.float64)
        out = np.asarray(new[f"{layer}_svd"]["out"]["kernel"], np.float64)
        assert factor.shape == (kernel.shape[0], rank) and out.shape == (rank, kernel.shape[1])
        assert new[f"{layer}_svd"]["out"]["kernel"].dtype == jnp.float32
        np.testing.assert_allclose(np.linalg.norm(kernel - factor @ out), discarded, rtol=1e-5)
        np.testing.assert_allclose(errors[layer], discarded / np.linalg.norm(kernel), rtol=1e-12)
        assert new[f"{layer}_svd"]["out"]["bias"] is old[layer]["bias"]
    # Everything else is untouched (the same arrays).
    assert params["backbone"] is variables["params"]["backbone"]
    assert new["cls_score"] is old["cls_score"] and new["bbox_pred"] is old["bbox_pred"]


def _numpy_head(pooled, head, kernels):
    """The box head in float64 NumPy with the given fc6/fc7 kernels."""
    x = np.asarray(pooled, np.float64)
    for layer in ("fc6", "fc7"):
        x = np.maximum(x @ kernels[layer] + np.asarray(head[layer]["bias"], np.float64), 0)
    logits = x @ np.asarray(head["cls_score"]["kernel"], np.float64) + np.asarray(
        head["cls_score"]["bias"], np.float64
    )
    deltas = x @ np.asarray(head["bbox_pred"]["kernel"], np.float64) + np.asarray(
        head["bbox_pred"]["bias"], np.float64
    )
    return logits, deltas.reshape(*deltas.shape[:-1], -1, 4)


def test_rank_t_model_matches_a_float64_numpy_head(setup):
    model, variables, images, rois = setup
    svd_vars, _ = _svd_variables(variables, RANKS)
    got = FastRCNN(**KW, svd_ranks=RANKS).apply(svd_vars, images, rois)
    features = model.apply(variables, images, method="features")
    pooled = roi_pool(features, rois, 7, spatial_scale=1 / 16).reshape(*rois.shape[:2], -1)
    head = variables["params"]["box_head"]
    kernels = {}
    for layer, rank in zip(("fc6", "fc7"), RANKS, strict=True):
        u, s, vt = np.linalg.svd(np.asarray(head[layer]["kernel"], np.float64), False)
        kernels[layer] = (u[:, :rank] * s[:rank]) @ vt[:rank]
    logits, deltas = _numpy_head(pooled, head, kernels)
    np.testing.assert_allclose(got["class_logits"], logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["box_deltas"], deltas, rtol=1e-4, atol=1e-6)
    # ... and the truncation matters: the full-rank head gives other outputs.
    full_logits, _ = _numpy_head(pooled, head, {k: head[k]["kernel"] for k in ("fc6", "fc7")})
    assert np.max(np.abs(full_logits - logits)) > 1e-3


def test_fc_parameter_count_falls_to_t_times_in_plus_out_plus_out(setup):
    _, variables, images, rois = setup
    svd_model = FastRCNN(**KW, svd_ranks=RANKS)
    fresh = jax.eval_shape(svd_model.init, jax.random.PRNGKey(0), images, rois)["params"]
    truncated, _ = truncate_fc_layers(variables["params"], RANKS)
    # The model with svd_ranks and the converted params have the same tree.
    assert jax.tree.structure(fresh) == jax.tree.structure(truncated)
    for tree in (fresh, truncated):
        for layer, rank, (u, v) in zip(("fc6", "fc7"), RANKS, (FC6_SHAPE, FC7_SHAPE), strict=True):
            sizes = [x.size for x in jax.tree.leaves(tree["box_head"][f"{layer}_svd"])]
            assert sum(sizes) == rank * (u + v) + v
    for a, b in zip(jax.tree.leaves(fresh), jax.tree.leaves(truncated), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype


@pytest.mark.parametrize(
    ("ranks", "message"),
    [
        ((33, 4), r"rank 33 of box_head/fc6 \(kernel 392x32\) is outside \[1, 32\]"),
        ((4, 0), r"svd_ranks must be None or 2 positive ints"),
        ((4, 40), r"rank 40 of box_head/fc7 \(kernel 32x32\) is outside \[1, 32\]"),
        ((4,), r"svd_ranks must be None or 2 positive ints"),
        ((4.0, 4), r"svd_ranks must be None or 2 positive ints"),
    ],
)
def test_bad_ranks_are_one_line_errors(setup, ranks, message):
    _, variables, _, _ = setup
    with pytest.raises(ValueError, match=message) as err:
        truncate_fc_layers(variables["params"], ranks)
    assert "\n" not in str(err.value)


def test_bad_ranks_in_the_model_and_trees_that_are_not_a_box_head(setup):
    _, variables, images, rois = setup
    with pytest.raises(ValueError, match=r"rank 33 of fc6_svd \(kernel 392x32\)"):
        FastRCNN(**KW, svd_ranks=(33, 4)).init(jax.random.PRNGKey(0), images, rois)
    with pytest.raises(ValueError, match="svd_ranks must be None or 2 positive ints"):
        FastRCNN(**KW, svd_ranks=(8, -1)).init(jax.random.PRNGKey(0), images, rois)
    with pytest.raises(ValueError, match=r"no 'box_head'.*variables\['params'\]"):
        truncate_fc_layers(variables, RANKS)
    truncated, _ = truncate_fc_layers(variables["params"], RANKS)
    with pytest.raises(ValueError, match=r"no 'box_head/fc6' \(already truncated\)"):
        truncate_fc_layers(truncated, RANKS)
    head = dict(variables["params"]["box_head"])
    head["fc7"] = {"kernel": head["fc7"]["kernel"]}
    with pytest.raises(ValueError, match="no 'box_head/fc7/bias'"):
        truncate_fc_layers({**variables["params"], "box_head": head}, RANKS)


def test_svd_ranks_from_a_config():
    config = ml_collections.ConfigDict({"name": "fast_rcnn", **KW, "svd_ranks": [12, 10]})
    fields = config.to_dict()
    model = build_model(fields.pop("name"), **fields)
    assert isinstance(model, FastRCNN) and model.svd_ranks == (12, 10)
    hash(model)
    assert build_model("fast_rcnn", **KW).svd_ranks is None
