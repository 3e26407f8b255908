"""Batch-level augmentation (jaxcv.data.batched): same operations as the per-example path."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from jaxcv import data
from jaxcv.data import batched
from jaxcv.data.registry import Augmentation


def _images(b=16, h=7, w=9, c=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (b, h, w, c)).astype(np.float32)


@pytest.mark.parametrize("pad", [0, 1, 3])
def test_random_translate_is_a_per_image_shift_of_the_zero_padded_image(pad):
    images = _images()
    seed = tf.constant([3, 4], tf.int64)
    out = batched.random_translate({"image": tf.constant(images)}, seed, pad)["image"].numpy()
    offsets = tf.random.stateless_uniform([16, 2], seed, 0, 2 * pad + 1, dtype=tf.int32).numpy()
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    for b, (dy, dx) in enumerate(offsets):
        np.testing.assert_array_equal(out[b], padded[b, dy : dy + 7, dx : dx + 9])
    if pad:
        assert len({tuple(o) for o in offsets}) > 1  # independent draws per image
    with pytest.raises(ValueError, match="pad must be >= 0"):
        batched.random_translate({"image": tf.constant(images)}, seed, -1)


def test_random_flip_mirrors_each_image_by_its_own_draw():
    images = _images()
    seed = tf.constant([5, 6], tf.int64)
    out = batched.random_flip({"image": tf.constant(images), "label": tf.range(16)}, seed)
    flips = tf.random.stateless_uniform([16], seed).numpy() < 0.5
    assert 0 < flips.sum() < 16
    for b, flip in enumerate(flips):
        np.testing.assert_array_equal(out["image"][b], images[b, :, ::-1] if flip else images[b])
    np.testing.assert_array_equal(out["label"], np.arange(16))


def test_can_batch_only_fixed_shape_image_label_batches():
    aug = Augmentation(hflip=True, translate=2)
    kw = {"augment": True, "fit": "resize", "proposals": None}
    assert batched.can_batch(("image", "label"), (8, 8, 1), aug, **kw)
    assert not batched.can_batch(("image", "label", "boxes"), (8, 8, 1), aug, **kw)
    assert not batched.can_batch(("image", "label"), (None, None, 3), aug, **kw)
    assert not batched.can_batch(("image",), (8, 8, 1), aug, **{**kw, "fit": "pad"})
    crop = Augmentation(hflip=True, crop_min_scale=0.6)
    assert not batched.can_batch(("image", "label"), (8, 8, 1), crop, **kw)
    assert batched.can_batch(("image", "label"), (8, 8, 1), crop, **{**kw, "augment": False})


def test_batched_pipeline_equals_the_per_example_pipeline(builtin_data_dir, monkeypatch):
    """Without augmentation (random draws differ by construction), resize + grey to RGB +
    normalisation on batches give the per-example path's values, in the same order."""

    def first(n=3):
        ds = data.make_pipeline(
            "digits", "train", 32, train=True, seed=2, image_size=(20, 20),
            grayscale_to_rgb=True, data_dir=builtin_data_dir,
        )  # fmt: skip
        it = iter(tfds.as_numpy(ds))
        return [next(it) for _ in range(n)]

    fast = first()
    monkeypatch.setattr(batched, "can_batch", lambda *a, **k: False)
    slow = first()
    for x, y in zip(fast, slow, strict=True):
        assert x["image"].shape == (32, 20, 20, 3) and x["image"].dtype == np.float32
        np.testing.assert_allclose(x["image"], y["image"], atol=1e-5)
        np.testing.assert_array_equal(x["label"], y["label"])
