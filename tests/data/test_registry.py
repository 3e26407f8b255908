"""The dataset registry: names, normalisation constants, TF set-up."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxcv import data
from jaxcv.data.info import load_builder
from jaxcv.data.registry import BUILTIN_ALTERNATIVE, DATASETS, get_spec


def test_registry_names():
    assert list(DATASETS) == [
        "digits", "shapes/single", "shapes/multi", "mnist", "cifar10",
        "voc/2007", "voc/2012", "coco/2017", "coco/2017_panoptic", "voc/2012-segmentation",
    ]  # fmt: skip
    for name, spec in DATASETS.items():
        assert spec.name == name
        assert spec.builtin == (name in ("digits", "shapes/single", "shapes/multi"))
        assert spec.builtin or BUILTIN_ALTERNATIVE[name] in DATASETS
        assert len(spec.mean) == len(spec.std) == spec.image_shape[2]
    with pytest.raises(ValueError, match="coco/2017"):
        get_spec("coco")


def test_tensorflow_is_quiet_and_off_the_gpu():
    import tensorflow as tf

    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] in ("2", "3")
    assert tf.config.get_visible_devices("GPU") == []


@pytest.mark.parametrize("name", ["digits", "shapes/single", "shapes/multi"])
def test_normalisation_constants_match_the_train_split(builtin_data_dir, name):
    """Per-channel mean/std of train pixels (in 0..1) agree with the registry's constants."""
    spec = get_spec(name)
    skip = (
        {
            "objects": {"mask": tfds.decode.SkipDecoding()},
            "segmentation": tfds.decode.SkipDecoding(),
        }
        if spec.optional_features
        else None
    )
    builder = load_builder(spec, builtin_data_dir)
    pixels = np.concatenate([
        ex["image"].reshape(-1, spec.image_shape[2]) / 255.0
        for ex in tfds.as_numpy(builder.as_dataset(split="train", decoders=skip))
    ])  # fmt: skip
    np.testing.assert_allclose(pixels.mean(axis=0), spec.mean, atol=0.02)
    np.testing.assert_allclose(pixels.std(axis=0), spec.std, atol=0.02)
    # And the pipeline's images have mean ~0 and std ~1 per channel.
    batch = next(
        iter(
            tfds.as_numpy(
                data.make_pipeline(
                    name, "train", 256, train=True, keys=("image",), data_dir=builtin_data_dir
                )
            )
        )
    )
    flat = batch["image"].reshape(-1, spec.image_shape[2])
    np.testing.assert_allclose(flat.mean(axis=0), 0.0, atol=0.1)
    np.testing.assert_allclose(flat.std(axis=0), 1.0, atol=0.1)
