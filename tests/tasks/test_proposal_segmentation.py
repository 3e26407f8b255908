"""ProposalSegmentationTask: training crops, paste-back + max aggregation (float64 NumPy
references), the whole-image identity, images without objects, settings."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxcv.models.deconvnet import DeconvNet
from jaxcv.proposals.pipeline import proposal_table
from jaxcv.tasks.proposal_segmentation import (
    UNCOVERED_LOGIT,
    InstanceCrops,
    ProposalSegmentationTask,
    paste_windows,
    task_from_config,
    uncovered_to_background,
)

K = 5


class PerPixelLinear(nn.Module):
    """A 1x1 conv, so the reference can score crops by hand."""

    @nn.compact
    def __call__(self, images, train: bool = False):
        return nn.Conv(K, (1, 1), name="score")(images)


def _bilinear_ref(image, window, size):
    """float64 bilinear crop of ``image (H, W, C)`` to ``size``, zero outside the image."""
    h, w, _ = image.shape
    x1, y1, x2, y2 = np.asarray(window, np.float64)
    out = np.zeros((size, size, image.shape[-1]))
    for i in range(size):
        y = y1 + (i + 0.5) * (y2 - y1) / size - 0.5
        for j in range(size):
            x = x1 + (j + 0.5) * (x2 - x1) / size - 0.5
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                    if 0 <= yy < h and 0 <= xx < w:
                        out[i, j] += wy * wx * image[yy, xx]
    return out


def _nearest_ref(labels, window, size):
    h, w = labels.shape
    x1, y1, x2, y2 = np.asarray(window, np.float64)
    out = np.full((size, size), 255, np.int64)
    for i in range(size):
        yy = int(np.floor(y1 + (i + 0.5) * (y2 - y1) / size))
        for j in range(size):
            xx = int(np.floor(x1 + (j + 0.5) * (x2 - x1) / size))
            if 0 <= yy < h and 0 <= xx < w:
                out[i, j] = labels[yy, xx]
    return out


def _paste_max_ref(maps, windows, valid, hw, mean=False):
    """float64 pixel-wise max (``mean``: log of the mean of the softmax maps) of the maps pasted
    (bilinear, edges clamped) into their windows; uncovered pixels background."""
    h, w = hw
    size = maps.shape[1]
    best = np.full((h, w, maps.shape[-1]), -np.inf)
    total, count = np.zeros(best.shape), np.zeros((h, w, 1))
    if mean:
        maps = np.exp(maps - maps.max(-1, keepdims=True))
        maps = maps / maps.sum(-1, keepdims=True)

    def axis(centre, start, end):
        v = np.clip((centre - start) * size / (end - start) - 0.5, 0, size - 1)
        lo = int(np.floor(v))
        return lo, min(lo + 1, size - 1), v - lo

    for m, (x1, y1, x2, y2), ok in zip(maps.astype(np.float64), windows, valid, strict=True):
        for r in range(h):
            for c in range(w):
                cy, cx = r + 0.5, c + 0.5
                if not (ok and y1 <= cy < y2 and x1 <= cx < x2):
                    continue
                y0, yh, fy = axis(cy, y1, y2)
                x0, xh, fx = axis(cx, x1, x2)
                value = (
                    (1 - fy) * (1 - fx) * m[y0, x0]
                    + (1 - fy) * fx * m[y0, xh]
                    + fy * (1 - fx) * m[yh, x0]
                    + fy * fx * m[yh, xh]
                )
                best[r, c] = np.maximum(best[r, c], value)
                total[r, c] += value
                count[r, c] += 1
    if mean:
        best = np.where(
            count > 0, np.log(np.where(count > 0, total / np.maximum(count, 1), 1)), -np.inf
        )
    background = np.where(np.arange(maps.shape[-1]) == 0, 0.0, UNCOVERED_LOGIT)
    return np.where(np.isfinite(best[..., :1]), best, background)


def _batch(rng, b=3, h=20, w=24, m=4):
    boxes = np.sort(rng.uniform(-3, 26, size=(b, m, 2, 2)), axis=2)  # (x1, y1) <= (x2, y2)
    boxes = boxes.transpose(0, 1, 3, 2).reshape(b, m, 4)[..., [0, 2, 1, 3]]
    valid = rng.random((b, m)) < 0.6
    valid[0] = False  # an image without objects
    valid[1, 0] = True
    return {
        "image": rng.normal(size=(b, h, w, 3)).astype(np.float32),
        "segmentation": rng.integers(0, K, size=(b, h, w)).astype(np.int32),
        "boxes": boxes.astype(np.float32),
        "valid": valid,
        "example_valid": np.array([True, True, False]),
    }


def _task(model=None, **crops):
    crops = {"crop_size": 9, "crops_per_image": 2, **crops}
    return ProposalSegmentationTask(
        model or PerPixelLinear(), K, instance_crops=InstanceCrops(**crops)
    )


@pytest.mark.parametrize("hard_fraction", [0.0, 1.0])
def test_training_crops_match_the_numpy_crop(hard_fraction):
    rng = np.random.default_rng(0)
    batch = _batch(rng)
    task = _task(hard_fraction=hard_fraction, enlarge=(1.2, 1.6))
    crops, labels, weights, windows = jax.jit(task.training_crops)(jax.random.key(3), batch)
    crops, labels, windows = np.asarray(crops), np.asarray(labels), np.asarray(windows)
    assert crops.shape == (6, 9, 9, 3) and labels.shape == (6, 9, 9)
    np.testing.assert_array_equal(weights, [0, 0, 1, 1, 0, 0])  # no object; padded example
    for b in range(3):
        for n in range(2):
            window = windows[b, n]
            np.testing.assert_allclose(
                crops[2 * b + n], _bilinear_ref(batch["image"][b], window, 9), atol=1e-4
            )
            np.testing.assert_array_equal(
                labels[2 * b + n], _nearest_ref(batch["segmentation"][b], window, 9)
            )
            side = window[2] - window[0]
            assert side == pytest.approx(window[3] - window[1], rel=1e-5)  # square
            if b == 0 or hard_fraction:
                continue
            # A centred crop: a valid object's box, its longer side enlarged 1.2..1.6x.
            box = batch["boxes"][b][batch["valid"][b]]
            centre = 0.5 * (window[:2] + window[2:])
            k = np.argmin(np.abs(0.5 * (box[:, :2] + box[:, 2:]) - centre).sum(-1))
            np.testing.assert_allclose(centre, 0.5 * (box[k, :2] + box[k, 2:]), atol=1e-4)
            longer = max(box[k, 2] - box[k, 0], box[k, 3] - box[k, 1], 1.0)
            assert 1.2 - 1e-5 <= side / longer <= 1.6 + 1e-5
    assert (labels == 255).any()  # some windows leave the image


def test_paste_and_max_match_the_numpy_reference():
    rng = np.random.default_rng(1)
    n, s, hw = 6, 7, (13, 11)
    maps = rng.normal(size=(n, s, s, K)).astype(np.float32)
    corners = np.sort(rng.uniform(-4, 15, size=(n, 2, 2)), axis=1)
    windows = corners.transpose(0, 2, 1).reshape(n, 4)[:, [0, 2, 1, 3]].astype(np.float32)
    windows[:, 2:] = np.maximum(windows[:, 2:], windows[:, :2] + 2)
    valid = np.array([True, True, False, True, True, True])
    aggregate = jax.jit(
        lambda m, wd, v: uncovered_to_background(jnp.max(paste_windows(m, wd, v, hw), axis=0))
    )
    got = aggregate(maps, windows, valid)
    ref = _paste_max_ref(maps, windows, valid, hw)
    assert np.isfinite(ref).all() and (ref[..., 1] == UNCOVERED_LOGIT).any()
    np.testing.assert_allclose(np.asarray(got), ref, atol=1e-4)


@pytest.mark.parametrize("aggregate", ["max", "mean"])
def test_batch_logits_crop_score_paste_and_aggregate(aggregate):
    """The whole inference on P = 7 proposals in chunks of 3 (one padded) against NumPy."""
    rng = np.random.default_rng(2)
    b, h, w, p = 2, 12, 14, 7
    task = _task(test_chunk=3, test_enlarge=1.25, square=False)
    task = ProposalSegmentationTask(task.model, K, task.settings, aggregate=aggregate)
    xy = np.sort(rng.uniform(-2, 14, size=(b, p, 2, 2)), axis=2)
    proposals = xy.transpose(0, 1, 3, 2).reshape(b, p, 4)[..., [0, 2, 1, 3]]
    proposals[..., 2:] = np.maximum(proposals[..., 2:], proposals[..., :2] + 1.5)
    batch = {
        "image": rng.normal(size=(b, h, w, 3)).astype(np.float32),
        "proposals": proposals.astype(np.float32),
        "proposal_valid": rng.random((b, p)) < 0.8,
    }
    variables = task.init_variables(jax.random.key(0), batch)
    kernel = np.asarray(variables["params"]["score"]["kernel"], np.float64)[0, 0]
    bias = np.asarray(variables["params"]["score"]["bias"], np.float64)
    got = np.asarray(jax.jit(task.batch_logits)(variables, batch))
    for i in range(b):
        c = 0.5 * (proposals[i, :, :2] + proposals[i, :, 2:])
        half = 0.625 * (proposals[i, :, 2:] - proposals[i, :, :2])
        windows = np.concatenate([c - half, c + half], axis=-1)
        maps = np.stack([_bilinear_ref(batch["image"][i], wd, 9) @ kernel + bias for wd in windows])
        ref = _paste_max_ref(maps, windows, batch["proposal_valid"][i], (h, w), aggregate == "mean")
        np.testing.assert_allclose(got[i], ref, atol=1e-4)
    predictions = jax.jit(task.predict_fn)(variables, batch)
    np.testing.assert_array_equal(predictions["pred_segmentation"], got.argmax(-1))


def test_a_whole_image_proposal_reproduces_the_whole_image_network():
    model = DeconvNet(
        num_classes=K, stages=((4,), (6,)), fc_width=8, fc6_kernel=2, dropout_rate=0.0
    )
    task = _task(model, crop_size=16, test_enlarge=1.0, test_chunk=2)
    rng = np.random.default_rng(4)
    images = rng.normal(size=(2, 16, 16, 3)).astype(np.float32)
    batch = {
        "image": images,
        "proposals": np.tile(np.array([[[0, 0, 16, 16], [3, 2, 9, 8]]], np.float32), (2, 1, 1)),
        "proposal_valid": np.array([[True, False], [True, False]]),
    }
    variables = task.init_variables(jax.random.key(1), batch)
    variables = jax.tree.map(lambda x: x + 0.1 * jnp.ones_like(x), variables)  # BN stats too
    whole = jax.jit(model.apply)(variables, images)
    np.testing.assert_allclose(jax.jit(task.batch_logits)(variables, batch), whole, atol=1e-5)


def test_images_without_objects_give_a_finite_loss_and_gradient():
    rng = np.random.default_rng(5)
    batch = _batch(rng)
    task = _task()
    variables = task.init_variables(jax.random.key(0), batch)

    def loss(params, batch):
        return task.loss_fn(params, {}, batch, jax.random.key(1))

    loss_and_grad = jax.jit(jax.value_and_grad(loss, has_aux=True))
    (value, (metrics, _)), grads = loss_and_grad(variables["params"], batch)
    assert np.isfinite(value) and float(metrics["crop_fraction"]) == pytest.approx(2 / 6)
    batch["valid"][:] = False  # no object anywhere: nothing to learn, nothing NaN
    (value, _), grads = loss_and_grad(variables["params"], batch)
    assert float(value) == 0.0
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_random_crops_train_on_images_without_objects():
    rng = np.random.default_rng(6)
    batch = _batch(rng)
    batch["valid"][:] = False
    task = _task(random_fraction=1.0, enlarge=(1.0, 1.0))
    _, labels, weights, windows = jax.jit(task.training_crops)(jax.random.key(2), batch)
    np.testing.assert_array_equal(weights, [1, 1, 1, 1, 0, 0])  # the padded example: 0
    side = np.asarray(windows[..., 2] - windows[..., 0])
    np.testing.assert_allclose(side, windows[..., 3] - windows[..., 1], rtol=1e-5)
    assert ((side >= 2.0 - 1e-4) & (side <= 10.0 + 1e-4)).all()  # 0.1..0.5 of min(H, W) = 20
    centre = 0.5 * (windows[..., :2] + windows[..., 2:])
    assert ((centre >= 0) & (centre <= np.array([24, 20]))).all()
    assert (np.asarray(labels)[:4] != 255).any()


def test_settings_from_config_and_no_training_proposals():
    config = ml_collections.ConfigDict(
        {
            "model": {"num_classes": K},
            "segmentation": {"ignore_label": 255, "instance_crops": {"enlarge": [1.1, 1.3]}},
            "proposals": {"mode": "fast", "num_train": 0, "num_test": 50, "cache_dir": None},
        }
    )
    task = task_from_config(config, PerPixelLinear())
    assert task.crops == InstanceCrops(enlarge=(1.1, 1.3))
    assert proposal_table(config, "train", train=True) is None
    config.segmentation.instance_crops.size = 3
    with pytest.raises(ValueError, match="unknown key 'size'"):
        task_from_config(config, PerPixelLinear())
    with pytest.raises(ValueError, match="proposals"):
        task.batch_logits({}, {"image": np.zeros((1, 4, 4, 3), np.float32)})
