"""Shared config sections and the base config of each experiment family.

Every experiment module of this folder starts from one of the family bases below (or from
another experiment) and sets only what differs, as Flax's ``configs/default.py`` or
detectron2's ``_BASE_`` files. The bases are not experiments (no ``get_config()``), so
``jaxcv list`` does not show them. Changing a value here changes every experiment built on it:
``tests/test_experiment_configs.py`` compares each experiment's whole config with its recorded
snapshot, so such a change shows up there.

Sections (plain builders, the values every experiment of the repository shares):
:func:`experiment` (``name``, ``seed``, ``task``, ``study``), :func:`data`, :func:`adamw`,
:func:`sgd`, :func:`train`. Family bases: :func:`classifier` (a small CNN on ``digits``),
:func:`autoencoder` / :func:`vae` (the ``digits`` unsupervised studies of
``jaxcv.studies.unsupervised``), :func:`segmentation` (``shapes/multi`` scenes, per-pixel
softmax), :func:`localizer` (one object's class and box), :func:`faster_rcnn` (detectors with a
region proposal network); for the detectors on external proposals (R-CNN, Fast R-CNN)
:func:`proposals` and :func:`proposal_detection`; :func:`detector_model` and
:func:`small_trunk` (the CPU-sized detector trunk).
"""

from __future__ import annotations

from collections.abc import Sequence

import ml_collections

ConfigDict = ml_collections.ConfigDict


def experiment(name: str, task: str, study: str | None = None) -> ConfigDict:
    """The top-level keys: ``name``, ``seed`` 0, ``task`` and, for studies, ``study``."""
    config = ConfigDict({"name": name, "seed": 0, "task": task})
    if study is not None:
        config.study = study
    return config


def data(
    name: str,
    *,
    batch_size: int,
    eval_batch_size: int,
    image_size: tuple[int, int] | None = None,
    augment: bool = False,
    max_objects: int = 1,
    train_split: str = "train",
    eval_split: str = "test",
    test_split: str | None = None,
) -> ConfigDict:
    """The ``data`` section (``jaxcv.data``); ``data_dir`` None is the tfds default.

    ``eval_split`` is evaluated during training and selects the checkpoint
    (``train.best_metric``); ``test_split``, when set, is evaluated once at the end with the
    selected checkpoint, and is the reported figure."""
    return ConfigDict(
        {
            "name": name,
            "data_dir": None,
            "batch_size": batch_size,
            "eval_batch_size": eval_batch_size,
            "image_size": image_size,
            "augment": augment,
            "max_objects": max_objects,
            "train_split": train_split,
            "eval_split": eval_split,
            "test_split": test_split,
        }
    )


def select_on(
    config: ConfigDict, eval_split: str = "validation", test_split: str | None = "test"
) -> ConfigDict:
    """The honest protocol: choose the checkpoint on ``eval_split`` (``train.best_metric``
    moves to it) and evaluate ``test_split`` once at the end with that checkpoint, the reported
    figure. Returns ``config``, changed in place."""
    config.data.eval_split, config.data.test_split = eval_split, test_split
    if config.train.get("best_metric"):
        metric = config.train.best_metric.split("/", 1)[1]
        config.train.best_metric = f"{eval_split}/{metric}"
    return config


def adamw(
    learning_rate: float,
    *,
    warmup_steps: int,
    weight_decay: float = 1e-4,
    grad_clip_norm: float | None = None,
) -> ConfigDict:
    """An ``optimizer`` section: AdamW, linear warmup then cosine decay (``jaxcv.train.optim``)."""
    return ConfigDict(
        {
            "name": "adamw",
            "learning_rate": learning_rate,
            "weight_decay": weight_decay,
            "schedule": "cosine",
            "warmup_steps": warmup_steps,
            "grad_clip_norm": grad_clip_norm,
            "freeze": [],
        }
    )


def sgd(
    learning_rate: float,
    *,
    weight_decay: float,
    warmup_steps: int,
    momentum: float = 0.9,
    nesterov: bool = False,
    schedule: str = "cosine",
    boundaries: Sequence[int] | None = None,
    grad_clip_norm: float | None = None,
) -> ConfigDict:
    """An ``optimizer`` section: SGD with momentum; ``schedule="step"`` divides the rate by 10
    at each of ``boundaries``."""
    config = ConfigDict(
        {
            "name": "sgd",
            "learning_rate": learning_rate,
            "momentum": momentum,
            "nesterov": nesterov,
            "weight_decay": weight_decay,
            "schedule": schedule,
            "warmup_steps": warmup_steps,
            "grad_clip_norm": grad_clip_norm,
            "freeze": [],
        }
    )
    if boundaries is not None:
        config.boundaries = tuple(boundaries)
        config.decay_factor = 0.1
    return config


def train(
    *,
    num_steps: int,
    log_every: int,
    eval_every: int,
    checkpoint_every: int,
    best_metric: str | None,
    keep_checkpoints: int = 2,
    best_mode: str = "max",
) -> ConfigDict:
    """The ``train`` section (``jaxcv.train.loop``): mesh data parallelism, stop on a
    non-finite loss."""
    return ConfigDict(
        {
            "num_steps": num_steps,
            "log_every": log_every,
            "eval_every": eval_every,
            "checkpoint_every": checkpoint_every,
            "keep_checkpoints": keep_checkpoints,
            "best_metric": best_metric,
            "best_mode": best_mode,
            "parallel": "mesh",
            "on_nonfinite": "stop",
        }
    )


def classifier(name: str) -> ConfigDict:
    """Base of the image classifiers: the ``cnn`` model (3x3 SAME convs with BatchNorm, 2x2
    max-pooling, one hidden layer with dropout) on ``digits``, AdamW, 2,000 steps of batch 64,
    the checkpoint chosen by the accuracy on 287 held-out training images, tested once."""
    config = experiment(name, "classification")
    config.data = data(
        "digits",
        batch_size=64,
        eval_batch_size=120,
        train_split="train[:1150]",
        eval_split="train[1150:]",
        test_split="test",
    )
    config.model = ConfigDict(
        {
            "name": "cnn",
            "num_classes": None,  # from the dataset
            "channels": (32, 64),
            "kernel_size": 3,
            "padding": "SAME",
            "pool_size": 2,
            "batch_norm": True,
            "hidden_units": (128,),
            "dropout_rate": 0.3,
            "dtype": "float32",
        }
    )
    config.optimizer = adamw(3e-3, warmup_steps=100)
    config.train = train(
        num_steps=2000,
        log_every=50,
        eval_every=500,
        checkpoint_every=500,
        best_metric="train[1150:]/accuracy",
    )
    config.train.label_smoothing = 0.0
    return config


def _unsupervised(name: str, task: str, study: str, model: str, architecture: str) -> ConfigDict:
    """Shared by :func:`autoencoder` and :func:`vae`: ``digits``, an 8-D latent, 3,000 steps,
    no best checkpoint (the study driver evaluates)."""
    config = experiment(name, task, study)
    config.data = data("digits", batch_size=64, eval_batch_size=120)
    config.model = ConfigDict(
        {
            "name": model,
            "latent_dim": 8,
            "image_shape": (8, 8, 1),
            "architecture": architecture,
            "channels": (32, 64),
            "hidden_units": (256, 128),
            "dtype": "float32",
        }
    )
    config.optimizer = adamw(3e-3, warmup_steps=100, weight_decay=0.0)
    config.train = train(
        num_steps=3000,
        log_every=100,
        eval_every=1000,
        checkpoint_every=1000,
        keep_checkpoints=1,
        best_metric=None,
        best_mode="min",
    )
    return config


def autoencoder(name: str, study: str) -> ConfigDict:
    """Base of the autoencoder studies of ``jaxcv.studies.unsupervised`` (``ae_pca``,
    ``ae_embed``, ``pretrain_finetune``) on ``digits``: a conv AE (two stride-2 3x3 convs 32/64
    -> Dense(latent), mirrored decoder, sigmoid output) trained with MSE by AdamW."""
    config = _unsupervised(name, "autoencoder", study, model="autoencoder", architecture="conv")
    config.model.output_activation = "sigmoid"
    return config


def vae(name: str) -> ConfigDict:
    """Base of the ``vae`` study on ``digits``: MLP encoder and decoder (256, 128)."""
    config = _unsupervised(name, "vae", "vae", model="vae", architecture="mlp")
    config.optimizer.learning_rate = 1e-3
    return config


def finetune_adamw(warmup_steps: int) -> ConfigDict:
    """The ``finetune_optimizer`` of the studies that train classifiers after a pre-training:
    AdamW at 1e-3."""
    return adamw(1e-3, warmup_steps=warmup_steps)


def segmentation(name: str) -> ConfigDict:
    """Base of the ``shapes/multi`` semantic segmentations (the model is the experiment's):
    5 classes with the background, ignore label 255, AdamW 3e-3, 3,000 steps of batch 16
    with augmentation, the checkpoint chosen by validation mIoU, tested once."""
    config = experiment(name, "segmentation")
    config.data = data(
        "shapes/multi",
        batch_size=16,
        eval_batch_size=50,
        augment=True,
        max_objects=16,
        eval_split="validation",
        test_split="test",
    )
    config.segmentation = ConfigDict({"ignore_label": 255})
    config.optimizer = adamw(3e-3, warmup_steps=100)
    config.train = train(
        num_steps=3000,
        log_every=50,
        eval_every=1000,
        checkpoint_every=500,
        best_metric="validation/mIoU",
    )
    return config


def localizer(name: str) -> ConfigDict:
    """Base of classification + localization (the ``localizer`` model, ``shapes/single`` at
    64x64): four VALID 3x3 conv stages with BatchNorm, a class head and a class-agnostic box
    head of 256 units, smooth-L1 on R-CNN box deltas, AdamW, 1,500 steps of batch 64, the
    checkpoint chosen on validation, tested once."""
    config = experiment(name, "localization")
    config.data = data(
        "shapes/single",
        batch_size=64,
        eval_batch_size=200,
        image_size=(64, 64),
        eval_split="validation",
        test_split="test",
    )
    config.model = ConfigDict(
        {
            "name": "localizer",
            "num_classes": None,  # from the dataset
            "channels": (16, 32, 64, 128),
            "kernel_size": 3,
            "pool_size": 2,
            "batch_norm": True,
            "hidden_units": (256,),
            "box_hidden_units": (256,),
            "class_specific": False,
            "dropout_rate": 0.3,
            "dtype": "float32",
        }
    )
    config.localization = ConfigDict(
        {
            "box_loss": "smooth_l1",  # or "l2"
            "box_loss_weight": 1.0,
            "box_weights": (10.0, 10.0, 5.0, 5.0),
            "smooth_l1_beta": 1.0,
        }
    )
    config.optimizer = adamw(2e-3, warmup_steps=50)
    config.train = train(
        num_steps=1500,
        log_every=50,
        eval_every=500,
        checkpoint_every=500,
        best_metric="validation/localization_accuracy",
    )
    config.train.label_smoothing = 0.0
    return config


def small_trunk(widths: tuple[int, ...]) -> dict[str, object]:
    """The ``model`` keys of the CPU-sized detector trunk (``backbone="small"``): four stages of
    ``widths`` channels, two convs each, GroupNorm, stride 16."""
    return {
        "backbone": "small",
        "backbone_widths": widths,
        "backbone_depth": 2,
        "backbone_norm": "group",
    }


def detector_model(name: str, trunk: dict[str, object], **keys: object) -> ConfigDict:
    """A detector's ``model`` section: ``name``, the classes from the dataset, the ``trunk``
    keys (:func:`small_trunk` or e.g. ``{"backbone": "vgg16"}``), then ``keys``, float32."""
    return ConfigDict({"name": name, "num_classes": None, **trunk, **keys, "dtype": "float32"})


def faster_rcnn(name: str) -> ConfigDict:
    """Base of the detectors with a region proposal network (Faster and Mask R-CNN): the
    :func:`small_trunk` of widths 16..128 on ``shapes/multi`` upscaled to 256x256, 9 anchors
    (32, 64, 128 px x ratios 0.5, 1, 2), RoI align 7x7, a 256-wide box head; AdamW 1e-3 with
    gradient clipping, 3,000 steps of batch 8, the checkpoint chosen by validation mAP@0.5,
    tested once."""
    config = experiment(name, "faster_rcnn")
    config.data = data(
        "shapes/multi",
        batch_size=8,
        eval_batch_size=50,
        image_size=(256, 256),
        augment=True,
        max_objects=8,
        eval_split="validation",
        test_split="test",
    )
    config.model = detector_model(
        "faster_rcnn",
        small_trunk((16, 32, 64, 128)),
        anchor_sizes=(32.0, 64.0, 128.0),
        aspect_ratios=(0.5, 1.0, 2.0),
        roi_size=7,
        sampling_ratio=2,
        aligned=False,
        representation_size=256,
    )
    # Fields of jaxcv.tasks.faster_rcnn.FasterRCNNSettings (the rest keep torchvision's values).
    config.detection = ConfigDict(
        {
            "rpn_batch_size_per_image": 256,
            "rpn_pre_nms_top_n_train": 600,
            "rpn_post_nms_top_n_train": 128,
            "rpn_pre_nms_top_n_test": 600,
            "rpn_post_nms_top_n_test": 100,
            "roi_batch_size_per_image": 128,
            "roi_positive_fraction": 0.25,
            "box_score_threshold": 0.05,
            "box_nms_threshold": 0.5,
            "detections_per_image": 100,
        }
    )
    config.optimizer = adamw(1e-3, warmup_steps=50, grad_clip_norm=10.0)
    config.train = train(
        num_steps=3000,
        log_every=25,
        eval_every=1000,
        checkpoint_every=500,
        best_metric="validation/mAP50",
    )
    return config


def proposals(num: int) -> ConfigDict:
    """The ``proposals`` section: external selective-search ("fast" mode) proposals joined to
    the batches (``jaxcv.proposals.pipeline``), the best-ranked ``num`` per image, cached in
    the data dir."""
    return ConfigDict({"mode": "fast", "num_train": num, "num_test": num, "cache_dir": None})


def proposal_detection() -> ConfigDict:
    """The ``detection`` section of the detectors on external proposals: fields of
    ``jaxcv.tasks.fast_rcnn.ProposalDetectionSettings``. 64 RoIs per image with 25%
    foreground, per-class NMS 0.3, 100 detections per image."""
    return ConfigDict(
        {
            "roi_batch_size_per_image": 64,
            "roi_positive_fraction": 0.25,
            "box_beta": 1.0,
            "box_score_threshold": 0.05,
            "box_nms_threshold": 0.3,
            "detections_per_image": 100,
            "test_chunk_size": 0,  # proposals per model call; 0: all at once
        }
    )
