"""Every experiment config smoke-trains a few steps through train_and_evaluate.

Built-in datasets come from the session's ``builtin_data_dir``; the real-data configs (mnist,
cifar10) run on ``tfds.testing.mock_data`` (random examples with the real dataset's features).
"""

import gc
import json
import os

import jax
import pytest
import tensorflow_datasets as tfds

from jaxcv import experiments
from jaxcv.recipes import recipe_for
from jaxcv.train import runtime
from jaxcv.train.loop import train_and_evaluate

BUILTIN = {"digits", "shapes/single", "shapes/multi"}
SMOKE = [
    "train.num_steps=2",
    "train.log_every=1",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "data.batch_size=8",
    "data.eval_batch_size=8",
    "optimizer.warmup_steps=1",
]


@pytest.fixture(autouse=True)
def _no_compilation_cache(monkeypatch):
    monkeypatch.setenv(runtime.CACHE_ENV, "off")


#: Resident memory above which a smoke run's executables are dropped after it.
RELEASE_ABOVE_BYTES = 6 << 30


def _resident_bytes() -> int:
    """This process's resident set size (Linux ``/proc``), or a huge value where unreadable."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 1 << 62


@pytest.fixture(autouse=True)
def _release_compiled_runs():
    """Each smoke run compiles a whole model: once a worker holds more than 6 GiB, drop the
    executables, or the suite's processes grow past the 24 GiB of the CI machine (seen with the
    VGG-16 detectors). Clearing after every run cost 1-19 s each (83 s per suite)."""
    yield
    if _resident_bytes() > RELEASE_ABOVE_BYTES:
        jax.clear_caches()
        gc.collect()


# VGG-16 detectors at VOC size take ~11 GB and minutes per smoke run on 2 CPU cores: they are
# marked extended (JAXCV_SLOW_TESTS=1; they passed so when added). voc2012_fcn8s (VGG-16, 134M
# parameters) has a fast, narrowed smoke run in tests/data/test_voc_segmentation.py, coco_mask_rcnn
# (ResNet-50 at 768x1024) in tests/data/test_coco_panoptic.py, the COCO R50-FPN 1x configs
# (ResNet-50 + FPN at 800x1088) in tests/test_faster_rcnn_fpn_train.py.
SLOW_SMOKE = {
    "voc07_rcnn_vgg16",
    "voc07_fast_rcnn_vgg16",
    "voc07_faster_rcnn_vgg16",
    "voc2012_fcn8s",
    "coco_mask_rcnn",
    "coco_faster_rcnn_r50_fpn_1x",
    "coco_mask_rcnn_r50_fpn_1x",
}
# Configs whose code a twin's smoke run exercises: same study and task, other settings, and
# where the model or the data differ, those have their own tests (the MNIST studies on mock MNIST
# beside their digits twins, as mnist_cnn reads mock MNIST; FCN-32s/16s, FCN-8s' graph without
# skips; the VGG and small classifiers of the pre-training stages, tests/models; the VGG-sized
# localizer on mock VOC, the shapes localizer's code and the VOC reader of tests/data). They are
# marked extended (JAXCV_SLOW_TESTS=1), for `make test`'s 15-minute budget.
TWINS = {
    "mnist_vae": "digits_vae",
    "mnist_ae_embed": "digits_ae_embed",
    "mnist_ae_pca": "digits_ae_pca",
    "mnist_pretrain_finetune": "digits_pretrain_finetune",
    "shapes_fcn32s": "shapes_fcn8s",
    "shapes_fcn16s": "shapes_fcn8s",
    "shapes_localizer_pretrain": "shapes_classify",
    "shapes_vgg_pretrain": "shapes_classify",
    "shapes_trunk_pretrain": "shapes_classify",
    "imagenet_localize": "shapes_localize",
    "shapes_faster_rcnn": "demo_faster_rcnn",
}


# Modules of experiments/ that are not experiments (they define no get_config()).
SHARED_MODULES = {"__init__", "bases"}


def _smoke_params(names: list[str]) -> list:
    """``names`` as parameters, the SLOW_SMOKE and TWINS ones marked ``extended``."""
    params = []
    for name in names:
        marks = []
        if name in SLOW_SMOKE:
            marks.append(pytest.mark.extended(f"{name} at VOC/COCO size"))
        if name in TWINS:
            marks.append(pytest.mark.extended(f"{TWINS[name]}'s smoke run covers its code"))
        params.append(pytest.param(name, marks=marks))
    return params


def _study_and_task(name: str) -> tuple:
    config = experiments.load_config(name)
    return config.get("study"), config.task


def test_twins_share_study_and_task():
    for name, twin in TWINS.items():
        assert _study_and_task(name) == _study_and_task(twin), name
        assert twin not in TWINS, f"{twin} must itself run"


def test_every_experiment_is_listed():
    files = {p.stem for p in experiments.experiments_dir().glob("*.py")}
    assert files - SHARED_MODULES == set(experiments.EXPERIMENTS)
    assert experiments.experiment_names() == tuple(sorted(experiments.EXPERIMENTS))


TRAINED = sorted(
    n for n in experiments.EXPERIMENTS if experiments.load_config(n).get("study") is None
)
# The family studies nest one whole config per stage: tests/test_<family>.py shrinks each.
FAMILIES = {"rcnn_family", "segmentation_family", "overfeat_family"}
STUDIES = sorted(set(experiments.EXPERIMENTS) - set(TRAINED) - FAMILIES)
# Study-specific keys shrunk for a smoke run (only those a config has are set).
STUDY_SMOKE = {
    "unsupervised.latent_sizes": "(2,)",
    "unsupervised.linear_steps": "2",
    "unsupervised.finetune_steps": "2",
    "unsupervised.finetune_seeds": "(0,)",
    "unsupervised.label_fractions": "(0.1,)",
    "unsupervised.iwae_ks": "(1, 4)",
    "unsupervised.linear_optimizer.warmup_steps": "1",
    "finetune_optimizer.warmup_steps": "1",
    "transfer.finetune_steps": "2",
    "transfer.seeds": "(0,)",
    "transfer.label_fractions": "(0.1,)",
}


def _has_key(config, key: str) -> bool:
    node = config
    for part in key.split("."):
        if part not in node:
            return False
        node = node[part]
    return True


@pytest.mark.parametrize("name", _smoke_params(STUDIES))
def test_study_smoke_runs(name, builtin_data_dir, tmp_path):
    config = experiments.load_config(name)
    overrides = [*SMOKE, *(f"{k}={v}" for k, v in STUDY_SMOKE.items() if _has_key(config, k))]
    config = experiments.load_config(name, overrides)
    assert config.study in experiments.STUDIES
    if config.data.name in BUILTIN:
        config.data.data_dir = builtin_data_dir
        results = experiments.run(config, tmp_path)
    else:
        with tfds.testing.mock_data(num_examples=40):
            results = experiments.run(config, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert results and set(results) <= set(saved)
    assert any(key.startswith("test/") for key in saved)
    assert f"# {name}" in (tmp_path / "report.md").read_text()


# A figure each task's report must show (its headline metric is the recipe's, in [0, 1]).
FIGURE = {
    "classification": "figures/confusion_matrix.png",
    "segmentation": "figures/",
    "localization": None,
    "faster_rcnn": "figures/sample_detections.png",
    "faster_rcnn_fpn": "figures/sample_detections.png",
    "mask_rcnn": "figures/sample_instance_masks.png",
    "mask_rcnn_fpn": "figures/sample_instance_masks.png",
    "rcnn": None,
    "fast_rcnn": None,
}
# Dense patch-CNN evaluation costs seconds per image: evaluate 4 images in the smoke run.
EXTRA_SMOKE = {
    "shapes_patch_cnn": ["data.eval_split=test[:4]"],
    # Partitioning a whole Faster / Mask R-CNN step over the suite's 8 forced devices costs most
    # of its smoke run's compile time: these run on one device; the mesh and pmap steps of the
    # detector are tests/train/test_parallel_detector.py's.
    **{name: ["train.parallel='none'"] for name in ("shapes_faster_rcnn", "demo_faster_rcnn")},
    # R-CNN / Fast R-CNN: selective search (~0.5 s per image) on a few images only; VGG-16 on
    # small inputs and crops.
    **{
        name: [
            "data.train_split=train[:8]",
            "data.eval_split=validation[:4]",
            "data.test_split=test[:4]",
            "train.best_metric=validation[:4]/mAP50",
        ]
        for name in ("shapes_rcnn", "shapes_fast_rcnn")
    },
    # The VGG-sized localizer at 96x96 (its 224x224 compile was 38 s of the suite).
    "imagenet_localize": ["data.image_size=(96, 96)"],
    # Mask R-CNN's step at 128x128 (the config's 256x256 costs more to run than to compile).
    "shapes_mask_rcnn": ["train.parallel='none'", "data.image_size=(128, 128)"],
    "voc07_fast_rcnn_vgg16": [
        "data.train_split=train",
        "data.image_size=(96, 128)",
        "proposals.num_train=32",
        "proposals.num_test=32",
    ],
    "voc07_rcnn_vgg16": [
        "data.train_split=train",
        "data.image_size=(64, 64)",
        "model.warp_size=32",
        "model.context_padding=4.0",
        "detection.roi_batch_size_per_image=4",
        "detection.test_chunk_size=4",
        "proposals.num_test=8",
    ],
    # VGG-16 at the paper's 600x800 is minutes per step on CPU: the same net on small inputs.
    "voc07_faster_rcnn_vgg16": ["data.image_size=(96, 128)"],
    # The full VGG-16 FCN-8s (7x7 fc6 of 4,096) on 128x128 canvases of tfds mock data, on one
    # device: its 134M parameters and optimizer state replicated over the suite's 8 forced CPU
    # devices took > 8.7 GB (OOM-killed on a 23 GB machine).
    "voc2012_fcn8s": ["data.image_size=(128, 128)", "train.parallel='none'"],
    # ResNet-50 + FPN at 800x1088 in batches of 8 is tens of GB of activations on CPU.
    **{
        name: ["data.image_size=(256, 352)", "train.parallel='none'"]
        for name in ("coco_faster_rcnn_r50_fpn_1x", "coco_mask_rcnn_r50_fpn_1x")
    },
}


# A smoke run evaluates the first 12 images of the eval split in batches of 8: two batches, the
# second padded, so the evaluation's accumulation and padding run in every experiment. The
# whole (small) split proved nothing more, and its evaluation was most of a detector's time.
SMOKE_EVAL_IMAGES = 12


def _evaluate_first_images(config) -> None:
    for key in ("eval_split", "test_split"):
        split = config.data.get(key)
        if split and "[" not in split:  # not already a slice (EXTRA_SMOKE)
            config.data[key] = f"{split}[:{SMOKE_EVAL_IMAGES}]"
    if config.train.best_metric:
        metric = config.train.best_metric.split("/", 1)[1]
        config.train.best_metric = f"{config.data.eval_split}/{metric}"


@pytest.mark.parametrize("name", _smoke_params(TRAINED))
def test_experiment_smoke_trains(name, builtin_data_dir, tmp_path):
    config = experiments.load_config(name, SMOKE + EXTRA_SMOKE.get(name, []))
    assert config.name == name
    # The protocol: selection (if any) on eval_split, never on test_split.
    assert not config.train.best_metric or config.train.best_metric.startswith(
        config.data.eval_split + "/"
    )
    assert config.data.get("test_split") != config.data.eval_split
    if config.data.name in BUILTIN:  # tfds mock data has 16 examples per split anyway
        _evaluate_first_images(config)
    if config.get("proposals") is not None:  # proposal caches of the run stay in tmp_path
        config.proposals.cache_dir = str(tmp_path / "proposals")
    if config.data.name in BUILTIN:
        config.data.data_dir = builtin_data_dir
        results = train_and_evaluate(config, tmp_path)
    else:
        # Real-data configs: random examples shaped like the real dataset, 16 per split.
        with tfds.testing.mock_data(num_examples=16):
            results = train_and_evaluate(config, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["train/steps"] == 2
    split = config.data.get("test_split") or config.data.eval_split
    assert ("train/selected_step" in saved) == bool(config.data.get("test_split"))
    metric, figure = recipe_for(config.task).metric, FIGURE[config.task]
    assert 0.0 <= saved[f"{split}/{metric}"] <= 1.0
    assert results[f"{split}/{metric}"] == saved[f"{split}/{metric}"]
    report = (tmp_path / "report.md").read_text()
    assert f"# {name}" in report
    assert figure is None or figure in report
