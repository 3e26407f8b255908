"""Real tfds datasets through the same pipeline (tfds.testing.mock_data), and the offline error."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from jaxcv import data


def _first(ds):
    return next(iter(tfds.as_numpy(ds)))


@pytest.mark.parametrize(("name", "shape"), [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
@pytest.mark.parametrize("train", [True, False])
def test_classification_datasets_on_mock_data(name, shape, train):
    with tfds.testing.mock_data(num_examples=10):
        ds = data.make_pipeline(name, "train", 4, train=train, augment=train)
        batches = list(tfds.as_numpy(ds.take(3)))
    for batch in batches:
        assert batch["image"].shape == (4, *shape) and batch["image"].dtype == np.float32
        assert batch["label"].shape == (4,) and batch["label"].dtype == np.int32
        assert np.all((batch["label"] >= 0) & (batch["label"] < 10))
    if not train:  # 10 examples: 4 + 4 + 2 (padded)
        valid = np.concatenate([b["example_valid"] for b in batches])
        np.testing.assert_array_equal(valid, np.arange(12) < 10)


@pytest.mark.parametrize(
    ("name", "num_classes"), [("voc/2007", 20), ("voc/2012", 20), ("coco/2017", 80)]
)
def test_detection_datasets_on_mock_data(name, num_classes):
    with tfds.testing.mock_data(num_examples=6, num_sub_examples=3):
        info = data.get_info(name)
        ds = data.make_pipeline(
            name, "train", 2, train=True, augment=True, image_size=(64, 48), max_objects=5
        )
        batch = _first(ds)
    assert info.num_classes == num_classes and len(info.class_names) == num_classes
    assert batch["image"].shape == (2, 64, 48, 3)
    assert batch["boxes"].shape == (2, 5, 4) and batch["classes"].shape == (2, 5)
    assert batch["valid"].shape == (2, 5) and batch["ignore"].shape == (2, 5)
    assert batch["original_size"].shape == (2, 2)
    assert "masks" not in batch and "segmentation" not in batch
    classes = batch["classes"][batch["valid"]]
    assert np.all((classes >= 1) & (classes <= num_classes))


def _fixed_detection_dataset(ignore_feature):
    """One 40x60 image with two boxes in tfds' normalised (ymin, xmin, ymax, xmax)."""

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
        del self, split, decoders, read_config, shuffle_files
        example = {
            "image": tf.zeros((40, 60, 3), tf.uint8),
            "objects": {
                "bbox": tf.constant([[0.25, 0.1, 0.75, 0.5], [0.0, 0.5, 1.0, 1.0]], tf.float32),
                "label": tf.constant([0, 6], tf.int64),
                ignore_feature: tf.constant([False, True]),
            },
        }
        return tf.data.Dataset.from_tensors(example).repeat(3)

    return as_dataset


@pytest.mark.parametrize(
    ("name", "ignore_feature"), [("voc/2007", "is_difficult"), ("coco/2017", "is_crowd")]
)
def test_tfds_boxes_become_xyxy_pixels(name, ignore_feature):
    with tfds.testing.mock_data(as_dataset_fn=_fixed_detection_dataset(ignore_feature)):
        ds = data.make_pipeline(name, "test", 3, train=False, image_size=(80, 120), max_objects=3)
        batch = _first(ds)
    # (ymin, xmin, ymax, xmax) * (H, W) -> xyxy, then x2 for the (80, 120) resize.
    expected = np.array([[6, 10, 30, 30], [30, 0, 60, 40]], np.float64) * 2
    np.testing.assert_allclose(batch["boxes"][0, :2], expected, rtol=1e-6)
    np.testing.assert_array_equal(batch["classes"][0], [1, 7, 0])
    np.testing.assert_array_equal(batch["valid"][0], [True, True, False])
    np.testing.assert_array_equal(batch["ignore"][0], [False, True, False])
    np.testing.assert_array_equal(batch["original_size"][0], [40, 60])
    assert batch["example_valid"].all()


@pytest.mark.parametrize(
    "name", ["mnist", "cifar10", "voc/2007", "voc/2012", "coco/2017", "coco/2017_panoptic"]
)
def test_not_prepared_error_names_dataset_fix_and_alternative(tmp_path, name):
    alternative = data.registry.BUILTIN_ALTERNATIVE[name]
    with pytest.raises(data.DatasetNotPreparedError) as error:
        data.make_pipeline(name, "train", 8, train=True, image_size=(32, 32), data_dir=tmp_path)
    message = str(error.value)
    assert repr(name) in message and str(tmp_path) in message
    assert "download_and_prepare()" in message and f"{alternative!r}" in message
    assert isinstance(error.value, RuntimeError)
    with pytest.raises(data.DatasetNotPreparedError, match=repr(name)):
        data.prepare(name, tmp_path)


def test_get_info_of_a_real_dataset_without_data(tmp_path):
    info = data.get_info("cifar10", tmp_path)
    assert info.num_classes == 10 and info.class_names[0] == "airplane"
    assert info.image_shape == (32, 32, 3) and info.splits == {}
    assert data.get_info("voc/2007", tmp_path).image_shape == (None, None, 3)
