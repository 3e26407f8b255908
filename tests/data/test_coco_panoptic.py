"""COCO instance masks from tfds' coco/2017_panoptic, and the coco_mask_rcnn config on mock data."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from jaxcv import data, experiments
from jaxcv.data.registry import COCO_THING_CLASSES
from jaxcv.tasks.mask_rcnn import MASK_RCNN_KEYS

NAME = "coco/2017_panoptic"
H, W = 40, 60


def _rgb(segment_id: int) -> np.ndarray:
    """The panoptic PNG colour of a segment id: ``id = R + 256 G + 256^2 B``."""
    return np.array([segment_id % 256, segment_id // 256 % 256, segment_id // 65536], np.uint8)


# Segments: (id, label, crowd, region). Labels 0..79 are things, 80..132 stuff.
PERSON = (5, 0, False, (slice(4, 20), slice(6, 30)))
TOOTHBRUSH = (70000, 79, False, (slice(22, 38), slice(40, 58)))  # id uses all 3 channels
CROWD = (9, 0, True, (slice(25, 35), slice(2, 12)))
STUFF = (300, 100, False, None)  # everything else


def _fixed_panoptic_dataset(as_dataset_self, split, decoders=None, read_config=None, **kwargs):
    del as_dataset_self, split, read_config, kwargs
    panoptic = np.broadcast_to(_rgb(STUFF[0]), (H, W, 3)).copy()
    objects = []
    for segment_id, label, crowd, region in (PERSON, TOOTHBRUSH, CROWD, STUFF):
        if region is not None:
            panoptic[region] = _rgb(segment_id)
        ys, xs = np.nonzero((panoptic == _rgb(segment_id)).all(-1))
        yxyx = [ys.min() / H, xs.min() / W, (ys.max() + 1) / H, (xs.max() + 1) / W]
        objects.append((segment_id, label, crowd, yxyx))
    example = {
        "image": tf.zeros((H, W, 3), tf.uint8),
        "panoptic_objects": {
            "id": tf.constant([o[0] for o in objects], tf.int64),
            "label": tf.constant([o[1] for o in objects], tf.int64),
            "is_crowd": tf.constant([o[2] for o in objects]),
            "bbox": tf.constant([o[3] for o in objects], tf.float32),
        },
    }
    if not (decoders and "panoptic_image" in decoders):  # skipped when masks are not wanted
        example["panoptic_image"] = tf.constant(panoptic)
    return tf.data.Dataset.from_tensors(example).repeat(2)


def _expected_mask(region):
    mask = np.zeros((H, W), np.uint8)
    mask[region] = 1
    return mask


def test_thing_segments_become_instances_with_their_masks():
    with tfds.testing.mock_data(as_dataset_fn=_fixed_panoptic_dataset):
        ds = data.make_pipeline(
            NAME, "validation", 2, train=False, image_size=(H, W), max_objects=4,
            keys=MASK_RCNN_KEYS,
        )  # fmt: skip
        batch = next(iter(tfds.as_numpy(ds)))
    # Stuff and the crowd are dropped; the person and the toothbrush (class 80) stay.
    np.testing.assert_array_equal(batch["classes"][0], [1, 80, 0, 0])
    np.testing.assert_array_equal(batch["valid"][0], [True, True, False, False])
    np.testing.assert_array_equal(batch["masks"][0, 0], _expected_mask(PERSON[3]))
    np.testing.assert_array_equal(batch["masks"][0, 1], _expected_mask(TOOTHBRUSH[3]))
    assert not batch["masks"][0, 2:].any()
    np.testing.assert_allclose(batch["boxes"][0, :2], [[6, 4, 30, 20], [40, 22, 58, 38]])
    np.testing.assert_array_equal(batch["original_size"][0], [H, W])


def test_without_masks_the_panoptic_png_is_not_decoded_and_boxes_come_from_bbox():
    with tfds.testing.mock_data(as_dataset_fn=_fixed_panoptic_dataset):
        ds = data.make_pipeline(
            NAME, "validation", 1, train=False, image_size=(2 * H, 2 * W), max_objects=3,
            keys=("image", "boxes", "classes", "valid", "ignore"),
        )  # fmt: skip
        batch = next(iter(tfds.as_numpy(ds)))
    assert "masks" not in batch
    np.testing.assert_array_equal(batch["classes"][0], [1, 80, 0])
    np.testing.assert_allclose(
        batch["boxes"][0, :2], 2 * np.array([[6, 4, 30, 20], [40, 22, 58, 38]])
    )
    assert not batch["ignore"].any()


def test_random_mock_data_gives_static_shapes_and_the_80_thing_classes():
    with tfds.testing.mock_data(num_examples=4, num_sub_examples=3):
        info = data.get_info(NAME)
        ds = data.make_pipeline(
            NAME, "train", 2, train=True, augment=True, image_size=(48, 64), max_objects=5,
            keys=MASK_RCNN_KEYS,
        )  # fmt: skip
        batch = next(iter(tfds.as_numpy(ds)))
    assert info.num_classes == 80 and info.class_names == COCO_THING_CLASSES
    assert info.class_names[0] == "person" and info.class_names[-1] == "toothbrush"
    assert batch["image"].shape == (2, 48, 64, 3)
    assert batch["masks"].shape == (2, 5, 48, 64) and batch["masks"].dtype == np.uint8
    assert batch["boxes"].shape == (2, 5, 4) and batch["valid"].shape == (2, 5)


def test_coco_mask_rcnn_config_is_the_paper_setup():
    config = experiments.load_config("coco_mask_rcnn")
    assert config.data.name == NAME and config.data.image_size == (768, 1024)
    assert config.model.backbone == "resnet50" and config.model.mask_channels == 256
    assert config.optimizer.learning_rate == 0.02 and config.data.batch_size == 16
    assert config.optimizer.boundaries == (60000, 80000) and config.train.num_steps == 90000


# The config's data path, task and optimizer on small mock images, with a ResNet-18 trunk and
# narrow heads (ResNet-50 at 768x1024 is the configuration for accelerators; on 2 CPU cores
# compiling it dominates a smoke run). The full config runs in tests/test_experiments.py with
# JAXCV_SLOW_TESTS=1.
FAST_SMOKE = [
    "data.image_size=(96, 128)",
    "data.batch_size=2",
    "data.eval_batch_size=2",
    "data.max_objects=6",
    "model.backbone='resnet18'",
    "model.anchor_sizes=(32.0, 64.0)",
    "model.representation_size=32",
    "model.mask_channels=8",
    "model.mask_num_convs=1",
    "detection.rpn_pre_nms_top_n_train=128",
    "detection.rpn_post_nms_top_n_train=32",
    "detection.rpn_pre_nms_top_n_test=64",
    "detection.rpn_post_nms_top_n_test=16",
    "detection.roi_batch_size_per_image=16",
    "detection.detections_per_image=8",
    "mask.mask_rois_per_image=4",
    "train.parallel='none'",
    "train.num_steps=2",
    "train.log_every=1",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "optimizer.warmup_steps=1",
]


@pytest.mark.slow
def test_coco_mask_rcnn_smoke_trains_on_mock_data(tmp_path, monkeypatch):
    from jaxcv.train import runtime
    from jaxcv.train.loop import train_and_evaluate

    monkeypatch.setenv(runtime.CACHE_ENV, "off")
    config = experiments.load_config("coco_mask_rcnn", FAST_SMOKE)
    with tfds.testing.mock_data(num_examples=4, num_sub_examples=3):
        results = train_and_evaluate(config, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["train/steps"] == 2 and np.isfinite(saved["train/loss"])
    # Random mock panoptic ids match no pixel: no ground truth, for which COCO AP is -1.
    for metric in ("box_AP", "box_AP50", "mask_AP", "mask_AP50"):
        assert saved[f"validation/{metric}"] == -1.0 or 0.0 <= saved[f"validation/{metric}"] <= 1

    assert results["validation/mask_AP"] == saved["validation/mask_AP"]
    assert "figures/sample_instance_masks.png" in (tmp_path / "report.md").read_text()
