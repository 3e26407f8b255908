"""The COCO R50-FPN 1x configs (detectron2's schedule) smoke-trained on tfds mock data, and a
converted torchvision COCO detector fine-tuned on a dataset with another number of classes."""

import json

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from flax.traverse_util import flatten_dict

from jaxcv import experiments
from jaxcv.errors import InitFromError
from jaxcv.models import build_model
from jaxcv.train import runtime
from jaxcv.train.init_from import merge_variables
from jaxcv.train.optim import freeze_labels

FASTER, MASK = "coco_faster_rcnn_r50_fpn_1x", "coco_mask_rcnn_r50_fpn_1x"

# The configs' data path, task and optimizer on small mock images, with a ResNet-18 trunk and
# narrow heads (ResNet-50 at 800x1088 is the configuration for accelerators).
SMALL_INPUT = [
    "data.image_size=(64, 96)",
    "data.batch_size=2",
    "data.eval_batch_size=2",
    "data.max_objects=6",
    "detection.rpn_pre_nms_top_n_train=64",
    "detection.rpn_post_nms_top_n_train=32",
    "detection.rpn_pre_nms_top_n_test=32",
    "detection.rpn_post_nms_top_n_test=16",
    "detection.roi_batch_size_per_image=16",
    "detection.detections_per_image=8",
    "train.parallel='none'",
    "train.num_steps=2",
    "train.log_every=1",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "optimizer.warmup_steps=1",
]
TINY_MODEL = ["model.depth=18", "model.representation_size=32"]
TINY_MASK = ["model.mask_channels=8", "model.mask_num_convs=1", "model.mask_dim_reduced=8"]


@pytest.fixture(autouse=True)
def _no_compilation_cache(monkeypatch):
    monkeypatch.setenv(runtime.CACHE_ENV, "off")


def test_configs_are_the_detectron2_1x_schedule():
    for name in (FASTER, MASK):
        config = experiments.load_config(name)
        opt = config.optimizer
        assert (opt.name, opt.learning_rate, opt.momentum, opt.weight_decay) == (
            "sgd", 0.02, 0.9, 1e-4,
        )  # fmt: skip
        assert (opt.warmup_steps, opt.boundaries, config.train.num_steps) == (
            1000, (60000, 80000), 90000,
        )  # fmt: skip
        assert config.data.batch_size == 16 and config.data.image_size == (800, 1088)
        assert config.model.depth == 50 and "init_from" in config.model
        d = config.detection
        assert (d.rpn_pre_nms_top_n_train, d.rpn_post_nms_top_n_train) == (2000, 2000)
        assert (d.roi_batch_size_per_image, d.roi_positive_fraction) == (512, 0.25)
    assert experiments.load_config(FASTER).task == "faster_rcnn_fpn"
    mask = experiments.load_config(MASK)
    assert (mask.task, mask.model.name, mask.data.name) == (
        "mask_rcnn_fpn", "mask_rcnn_fpn", "coco/2017_panoptic",
    )  # fmt: skip


def test_the_frozen_trunk_is_the_stem_layer1_and_the_batch_norms():
    config = experiments.load_config(FASTER)
    model = build_model("faster_rcnn_fpn", num_classes=80, depth=50)
    images, rois = jax.numpy.zeros((1, 64, 64, 3)), jax.numpy.zeros((1, 1, 4))
    params = jax.eval_shape(model.init, jax.random.key(0), images, rois)["params"]
    labels = {
        "/".join(k): v
        for k, v in flatten_dict(freeze_labels(config.optimizer.freeze)(params)).items()
    }
    frozen = {k for k, v in labels.items() if v == "frozen"}
    assert "backbone/body/conv1/kernel" in frozen and "backbone/body/bn1/scale" in frozen
    assert "backbone/body/layer1/block2/conv3/kernel" in frozen
    assert "backbone/body/layer3/block0/downsample_bn/bias" in frozen
    assert "backbone/body/layer2/block0/conv1/kernel" not in frozen
    assert not any(k.startswith(("backbone/fpn", "rpn", "box_")) for k in frozen)
    assert all(
        "bn" in k or k.startswith(("backbone/body/conv1", "backbone/body/layer1/")) for k in frozen
    )


def _smoke_train(name, overrides, tmp_path):
    from jaxcv.train.loop import train_and_evaluate

    config = experiments.load_config(name, SMALL_INPUT + overrides)
    with tfds.testing.mock_data(num_examples=4, num_sub_examples=3):
        results = train_and_evaluate(config, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["train/steps"] == 2 and np.isfinite(saved["train/loss"])
    return saved, results


@pytest.mark.slow
def test_faster_rcnn_fpn_config_smoke_trains_on_mock_data(tmp_path):
    saved, results = _smoke_train(FASTER, TINY_MODEL, tmp_path)
    assert results["validation/mAP50"] == saved["validation/mAP50"]
    assert "figures/sample_detections.png" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.extended("110 s on 2 cores (the FPN mask branch: tests/tasks/test_faster_rcnn_fpn.py)")
def test_mask_rcnn_fpn_config_smoke_trains_on_mock_data(tmp_path):
    saved, _ = _smoke_train(MASK, [*TINY_MODEL, *TINY_MASK, "mask.mask_rois_per_image=4"], tmp_path)
    # Random mock panoptic ids match no pixel: no ground truth, for which COCO AP is -1.
    assert saved["validation/mask_AP"] == -1.0 or 0.0 <= saved["validation/mask_AP"] <= 1.0
    assert "figures/sample_instance_masks.png" in (tmp_path / "report.md").read_text()


@pytest.fixture(scope="module")
def coco_detector_on_coco_classes(tmp_path_factory):
    """A random torchvision COCO Faster R-CNN (91 classes) converted, and the coco/2017 config
    (80 classes) built from it with ``model.init_from``: ``(converted, run, batch)``."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from jaxcv.models.convert import convert_state_dict, save_converted
    from jaxcv.train.loop import build_run

    tmp_path = tmp_path_factory.mktemp("coco_frcnn")
    torch.manual_seed(0)
    coco = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=91
    )
    state_dict = {k: v.numpy() for k, v in coco.state_dict().items()}
    converted = convert_state_dict("fasterrcnn_resnet50_fpn", state_dict)
    save_converted(converted, tmp_path / "coco_frcnn")

    # coco/2017 has 80 classes (81 outputs) where torchvision's COCO detector has 91.
    overrides = [f"model.init_from='{tmp_path / 'coco_frcnn'}'"]
    config = experiments.load_config(FASTER, SMALL_INPUT + overrides)
    with tfds.testing.mock_data(num_examples=4, num_sub_examples=3):
        run = build_run(config, tmp_path / "run")
        try:
            batch = next(run.train_iter)
        finally:
            run.checkpointer.close()
    return converted, run, batch


@pytest.mark.parity
def test_a_converted_coco_detector_loads_into_other_classes(coco_detector_on_coco_classes):
    converted, run, _ = coco_detector_on_coco_classes
    loaded = flatten_dict({"params": run.state.params, **run.state.model_state})
    source = flatten_dict(converted.variables)
    fresh = {k for k in loaded if k[1] == "box_predictor"}
    assert {k[1:3] for k in fresh} == {
        ("box_predictor", "cls_score"),
        ("box_predictor", "bbox_pred"),
    }
    assert loaded[("params", "box_predictor", "cls_score", "kernel")].shape == (1024, 81)
    assert source[("params", "box_predictor", "cls_score", "kernel")].shape == (1024, 91)
    assert set(loaded) - fresh == set(source) - fresh
    for key in set(loaded) - fresh:
        np.testing.assert_array_equal(np.asarray(loaded[key]), source[key], err_msg="/".join(key))
    # The class-dependent predictor is recognised (81 = 80 + background, 4 x 81 outputs);
    # with another number of classes than the model's it is refused, naming it.
    target = {"params": run.state.params, **run.state.model_state}
    with pytest.raises(InitFromError, match="box_predictor/cls_score"):
        merge_variables(target, converted.variables, num_classes=70)


@pytest.mark.slow
@pytest.mark.parity
@pytest.mark.extended("compiles a whole ResNet-50 FPN train step (the smoke above uses ResNet-18)")
def test_a_converted_coco_detector_fine_tunes_on_other_classes(coco_detector_on_coco_classes):
    from jaxcv.train.step import make_train_step

    _, run, batch = coco_detector_on_coco_classes
    state, metrics = jax.jit(make_train_step(run.task))(run.state, batch)
    assert int(state.step) == 1 and np.isfinite(float(metrics["loss"]))
    assert float(metrics["grad_norm"]) > 0
