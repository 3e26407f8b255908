"""make_pipeline on the built-in datasets: keys, shapes, values, padding, order, sharding."""

import hashlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxcv import data
from jaxcv.data.info import load_builder
from jaxcv.data.registry import DATASETS, get_spec


def _batches(ds, n=None):
    it = iter(tfds.as_numpy(ds))
    return list(it) if n is None else [next(it) for _ in range(n)]


def _raw(name, data_dir, split):
    builder = load_builder(get_spec(name), data_dir)
    return list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))


def _key(image):
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def _check_objects(batch, n_classes=4):
    """Valid objects: boxes tight around masks, classes in 1..K; padding all zero; the
    segmentation equals the union of the instance masks."""
    for b in range(batch["image"].shape[0]):
        valid = batch["valid"][b]
        assert np.all(valid[: valid.sum()])  # valid objects come first
        for m in np.flatnonzero(valid):
            ys, xs = np.nonzero(batch["masks"][b, m])
            box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            np.testing.assert_array_equal(batch["boxes"][b, m], box)
            assert 1 <= batch["classes"][b, m] <= n_classes
            assert np.all(
                batch["segmentation"][b][batch["masks"][b, m] > 0] == batch["classes"][b, m]
            )
        assert np.all(batch["classes"][b][~valid] == 0)
        assert np.all(batch["boxes"][b][~valid] == 0)
        assert np.all(batch["masks"][b][~valid] == 0)


@pytest.mark.parametrize("name", ["shapes/single", "shapes/multi"])
@pytest.mark.parametrize("augment", [False, True])
def test_shapes_batches(builtin_data_dir, name, augment):
    ds = data.make_pipeline(
        name, "train", 8, train=True, augment=augment, max_objects=6, data_dir=builtin_data_dir
    )
    for batch in _batches(ds, 3):
        assert batch["image"].shape == (8, 128, 128, 3) and batch["image"].dtype == np.float32
        assert batch["boxes"].shape == (8, 6, 4) and batch["boxes"].dtype == np.float32
        assert batch["classes"].shape == (8, 6) and batch["classes"].dtype == np.int32
        assert batch["valid"].shape == (8, 6) and batch["valid"].dtype == bool
        assert batch["masks"].shape == (8, 6, 128, 128) and batch["masks"].dtype == np.uint8
        assert batch["segmentation"].shape == (8, 128, 128)
        assert batch["segmentation"].dtype == np.int32
        np.testing.assert_array_equal(batch["original_size"], np.full((8, 2), 128))
        assert "example_valid" not in batch
        _check_objects(batch)
        if name == "shapes/single":
            assert batch["label"].dtype == np.int32
            has = batch["valid"][:, 0]
            np.testing.assert_array_equal(batch["label"][has], batch["classes"][has, 0] - 1)
            if not augment:
                assert np.all(batch["valid"].sum(axis=1) == 1)
        else:
            assert "label" not in batch


def test_resized_augmented_multi_stays_consistent(builtin_data_dir):
    ds = data.make_pipeline(
        "shapes/multi",
        "train",
        16,
        train=True,
        augment=True,
        image_size=(96, 80),
        seed=3,
        data_dir=builtin_data_dir,
    )
    for batch in _batches(ds, 2):
        assert batch["image"].shape == (16, 96, 80, 3)
        assert batch["masks"].shape == (16, 16, 96, 80)
        _check_objects(batch)
        assert np.all(batch["boxes"][..., 2] <= 80) and np.all(batch["boxes"][..., 3] <= 96)


def test_eval_values_order_and_padding(builtin_data_dir):
    """One ordered pass; images are (stored / 255 - mean) / std; the last batch is padded."""
    raw = _raw("digits", builtin_data_dir, "test")
    batches = _batches(
        data.make_pipeline("digits", "test", 64, train=False, data_dir=builtin_data_dir)
    )
    assert len(batches) == 6  # 360 = 5 * 64 + 40
    for batch in batches:
        assert batch["image"].shape == (64, 8, 8, 1)
        assert batch["example_valid"].dtype == bool
    valid = np.concatenate([b["example_valid"] for b in batches])
    np.testing.assert_array_equal(valid, np.arange(384) < 360)
    images = np.concatenate([b["image"] for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    mean, std = DATASETS["digits"].mean, DATASETS["digits"].std
    expected = (np.stack([ex["image"] for ex in raw]) / 255.0 - mean) / std
    np.testing.assert_allclose(images[:360], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels[:360], [ex["label"] for ex in raw])
    assert np.all(images[360:] == 0) and np.all(labels[360:] == 0)


def test_eval_drop_remainder_and_repeat(builtin_data_dir):
    ds = data.make_pipeline(
        "digits", "test", 64, train=False, drop_remainder=True, data_dir=builtin_data_dir
    )
    batches = _batches(ds)
    assert len(batches) == 5 and all(b["example_valid"].all() for b in batches)
    ds = data.make_pipeline("digits", "test", 100, train=False, repeat=2, data_dir=builtin_data_dir)
    assert sum(b["example_valid"].sum() for b in _batches(ds)) == 720


def test_train_repeats_shuffles_and_is_deterministic(builtin_data_dir):
    def first(seed, n=30):
        ds = data.make_pipeline(
            "digits", "train", 64, train=True, augment=True, seed=seed, data_dir=builtin_data_dir
        )
        return _batches(ds, n)  # 30 * 64 > 1437: crosses epochs

    a, b, c = first(0), first(0), first(1)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])
    assert not np.array_equal(a[0]["image"], c[0]["image"])
    raw_labels = [ex["label"] for ex in _raw("digits", builtin_data_dir, "train")]
    assert not np.array_equal(a[0]["label"], raw_labels[:64])  # shuffled
    epoch = np.concatenate([x["label"] for x in a])[:1437]
    np.testing.assert_array_equal(
        np.bincount(epoch, minlength=10), np.bincount(raw_labels, minlength=10)
    )  # a permutation


def test_digits_translate_augmentation_shifts_by_at_most_one(builtin_data_dir):
    plain = _batches(
        data.make_pipeline("digits", "train", 32, train=True, seed=5, data_dir=builtin_data_dir), 1
    )[0]
    aug = _batches(
        data.make_pipeline(
            "digits", "train", 32, train=True, augment=True, seed=5, data_dir=builtin_data_dir
        ),
        1,
    )[0]
    np.testing.assert_array_equal(plain["label"], aug["label"])  # same order, other pixels
    background = (0.0 - 0.3054) / 0.3760
    changed = 0
    for p, q in zip(plain["image"][..., 0], aug["image"][..., 0], strict=True):
        padded = np.pad(p, 1, constant_values=background)
        ok = [
            np.allclose(padded[1 + dy : 9 + dy, 1 + dx : 9 + dx], q, atol=1e-5)
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
        ]
        assert any(ok)
        changed += not np.allclose(p, q)
    assert changed > 0


@pytest.mark.parametrize("process_count", [2, 3])
def test_sharding_gives_disjoint_covering_shards(builtin_data_dir, process_count):
    keys, batches = [], []
    for index in range(process_count):
        # 100 examples: shares of 34, 33, 33 with 3 processes; 34 needs 4 batches of 11.
        ds = data.make_pipeline(
            "shapes/multi",
            "test",
            11,
            train=False,
            process_index=index,
            process_count=process_count,
            keys=("image",),
            data_dir=builtin_data_dir,
        )
        shard, out = [], _batches(ds)
        batches.append(len(out))
        for batch in out:
            shard += [
                _key(im) for im, v in zip(batch["image"], batch["example_valid"], strict=True) if v
            ]
        keys.append(shard)
    sizes = [len(k) for k in keys]
    assert sum(sizes) == 100 and max(sizes) - min(sizes) <= 1
    assert len(set().union(*map(set, keys))) == 100  # disjoint and covering
    assert len(set(batches)) == 1  # every process runs the same number of eval steps
    # Train shards have equal sizes (remainder dropped).
    n = [
        sum(
            b["label"].shape[0]
            for b in _batches(
                data.make_pipeline(
                    "digits",
                    "train",
                    1,
                    train=True,
                    repeat=False,
                    process_index=i,
                    process_count=2,
                    keys=("label",),
                    data_dir=builtin_data_dir,
                )
            )
        )
        for i in range(2)
    ]
    assert n == [718, 718]


def test_non_deterministic_eval_gives_the_same_examples(builtin_data_dir):
    def labels(deterministic):
        ds = data.make_pipeline(
            "digits",
            "test",
            50,
            train=False,
            deterministic=deterministic,
            data_dir=builtin_data_dir,
        )
        return np.concatenate([b["label"][b["example_valid"]] for b in _batches(ds)])

    np.testing.assert_array_equal(np.sort(labels(False)), np.sort(labels(True)))


def test_keys_subset_and_grayscale(builtin_data_dir):
    ds = data.make_pipeline(
        "shapes/single", "test", 4, train=False, keys=("image", "label"), data_dir=builtin_data_dir
    )
    batch = _batches(ds, 1)[0]
    assert set(batch) == {"image", "label", "example_valid"}
    ds = data.make_pipeline(
        "shapes/multi",
        "test",
        4,
        train=False,
        keys=("boxes", "classes", "valid"),
        data_dir=builtin_data_dir,
    )
    assert set(_batches(ds, 1)[0]) == {"image", "boxes", "classes", "valid", "example_valid"}
    ds = data.make_pipeline(
        "digits", "test", 4, train=False, grayscale_to_rgb=True, data_dir=builtin_data_dir
    )
    batch = _batches(ds, 1)[0]
    assert batch["image"].shape == (4, 8, 8, 3)
    np.testing.assert_array_equal(batch["image"][..., 0], batch["image"][..., 2])


def test_bad_arguments(builtin_data_dir):
    with pytest.raises(ValueError, match="valid names: digits, shapes/single"):
        data.make_pipeline("imagenet", "train", 8, train=True)
    with pytest.raises(ValueError, match="unknown dataset 'cifar100'"):
        data.get_info("cifar100")
    with pytest.raises(ValueError, match="has no keys"):
        data.make_pipeline(
            "digits", "train", 8, train=True, keys=("boxes",), data_dir=builtin_data_dir
        )
    with pytest.raises(ValueError, match="image_size"):
        data.make_pipeline("voc/2007", "train", 8, train=True, data_dir=builtin_data_dir)
    with pytest.raises(ValueError, match="process_index"):
        data.make_pipeline("digits", "train", 8, train=True, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="batch_size"):
        data.make_pipeline("digits", "train", 0, train=True)
