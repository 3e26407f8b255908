"""The built-in tfds builders: reproducible generation, stored features, caching."""

import hashlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxcv import data
from jaxcv.data.builders import JaxcvShapes, digits, shapes
from jaxcv.data.builders.scenes import render_scene
from jaxcv.data.info import load_builder
from jaxcv.data.registry import get_spec

TEST_SHAPES_SPLIT_SIZES = shapes.SMALL_SPLIT_SIZES  # what tests/conftest.py builds


def _read(name, data_dir, split):
    builder = load_builder(get_spec(name), data_dir)
    return list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))


def _key(image):
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def test_prepared_split_sizes(builtin_data_dir):
    assert data.get_info("digits", builtin_data_dir).splits == {"train": 1437, "test": 360}
    for name in ("shapes/single", "shapes/multi"):
        info = data.get_info(name, builtin_data_dir)
        assert info.splits == TEST_SHAPES_SPLIT_SIZES
        assert info.class_names == ("circle", "square", "triangle", "cross")
        assert info.num_classes == 4 and info.image_shape == (128, 128, 3)


def test_default_split_sizes_before_generation(tmp_path):
    info = data.get_info("shapes/single", tmp_path)
    assert info.splits == {"train": 8000, "validation": 1000, "test": 1000}
    assert data.get_info("shapes/multi", tmp_path).splits == {
        "train": 6000,
        "validation": 500,
        "test": 1000,
    }
    assert not any(tmp_path.iterdir()) or not list(tmp_path.rglob("*.tfrecord*"))


@pytest.mark.parametrize("config", ["single", "multi"])
def test_stored_examples_are_the_seeded_scenes(builtin_data_dir, config):
    """Example i of a split is render_scene(default_rng((seed, split_id, i))), in any order."""
    stored = _read(f"shapes/{config}", builtin_data_dir, "test")
    cfg = next(c for c in JaxcvShapes.BUILDER_CONFIGS if c.name == config)
    rendered = {}
    for i in range(TEST_SHAPES_SPLIT_SIZES["test"]):
        scene = render_scene(np.random.default_rng((cfg.seed, 2, i)), cfg.scene)
        rendered[_key(scene.image)] = scene
    assert len(stored) == len(rendered)
    for ex in stored:
        scene = rendered.pop(_key(ex["image"]))
        np.testing.assert_array_equal(ex["objects"]["bbox"], scene.boxes)
        np.testing.assert_array_equal(ex["objects"]["label"], scene.labels)
        np.testing.assert_array_equal(ex["objects"]["mask"][..., 0], scene.masks)
        np.testing.assert_array_equal(ex["segmentation"][..., 0], scene.segmentation)
    assert not rendered


def test_splits_differ(builtin_data_dir):
    train = {_key(ex["image"]) for ex in _read("shapes/multi", builtin_data_dir, "train")}
    test = {_key(ex["image"]) for ex in _read("shapes/multi", builtin_data_dir, "test")}
    assert not train & test


@pytest.mark.parametrize("name", ["shapes/single", "shapes/multi"])
def test_stored_boxes_are_tight_and_segmentation_consistent(builtin_data_dir, name):
    for ex in _read(name, builtin_data_dir, "validation"):
        objects = ex["objects"]
        masks = objects["mask"][..., 0]
        if name == "shapes/single":
            assert masks.shape[0] == 1
        assert masks.sum(axis=0).max() <= 1
        for box, mask in zip(objects["bbox"], masks, strict=True):
            ys, xs = np.nonzero(mask)
            np.testing.assert_array_equal(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        expected = (masks * (objects["label"][:, None, None] + 1)).sum(axis=0)
        np.testing.assert_array_equal(ex["segmentation"][..., 0], expected)


def test_digits_are_sklearn_digits_with_a_fixed_stratified_split(builtin_data_dir):
    from sklearn.datasets import load_digits

    ref = load_digits()
    split = digits.digits_split()
    assert len(split["train"]) == 1437 and len(split["test"]) == 360
    assert not set(split["train"]) & set(split["test"])
    assert len(set(split["train"]) | set(split["test"])) == 1797
    np.testing.assert_array_equal(split["test"], digits.digits_split()["test"])  # fixed
    test_counts = np.bincount(ref.target[split["test"]], minlength=10)
    assert test_counts.min() >= 35 and test_counts.max() <= 37  # stratified: 20% of ~180

    expected = set()
    for i in split["test"]:
        image = np.round(ref.images[i] * 255 / 16).astype(np.uint8)[..., None]
        expected.add((_key(image), int(ref.target[i])))
    stored = _read("digits", builtin_data_dir, "test")
    assert len(stored) == 360
    for ex in stored:
        assert ex["image"].shape == (8, 8, 1) and ex["image"].dtype == np.uint8
        assert (_key(ex["image"]), int(ex["label"])) in expected
    assert max(ex["image"].max() for ex in stored) == 255


def test_prepare_never_regenerates(builtin_data_dir, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("generation repeated")

    monkeypatch.setattr(shapes.JaxcvShapes, "_generate_examples", fail)
    monkeypatch.setattr(digits.JaxcvDigits, "_generate_examples", fail)
    data.prepare("digits", builtin_data_dir)
    info = data.prepare("shapes/multi", builtin_data_dir, split_sizes=TEST_SHAPES_SPLIT_SIZES)
    assert info.splits == TEST_SHAPES_SPLIT_SIZES
    next(
        iter(data.make_pipeline("shapes/single", "test", 4, train=False, data_dir=builtin_data_dir))
    )


def test_prepare_refuses_other_split_sizes_in_a_prepared_dir(builtin_data_dir):
    with pytest.raises(ValueError, match="already prepared"):
        data.prepare("shapes/single", builtin_data_dir, split_sizes={"train": 10})
    with pytest.raises(ValueError, match="only supported by shapes"):
        data.prepare("digits", builtin_data_dir, split_sizes={"train": 10})
    with pytest.raises(ValueError, match="unknown splits"):
        data.prepare("shapes/single", builtin_data_dir, split_sizes={"dev": 10})


def test_data_dir_from_environment(builtin_data_dir, monkeypatch):
    monkeypatch.setenv("JAXCV_DATA_DIR", builtin_data_dir)
    assert data.get_info("shapes/multi").splits == TEST_SHAPES_SPLIT_SIZES


def test_tfds_names_do_not_clash_with_the_catalog():
    catalog = set(tfds.list_builders(with_community_datasets=False))
    assert {"jaxcv_digits", "jaxcv_shapes"} <= catalog  # registered by jaxcv.data
    assert tfds.builder_cls("jaxcv_shapes") is JaxcvShapes
    for name in ("digits", "shapes", "jaxcv_shapes/single"):
        assert name.split("/")[0] not in catalog - {"jaxcv_digits", "jaxcv_shapes"}
