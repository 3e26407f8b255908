"""The datasets jaxcv knows, in one explicit dict, and how each maps to the batch keys.

Each :class:`DatasetSpec` names its tfds builder and converts one decoded tfds example into a
per-example dict with the keys of :mod:`jaxcv.types` (before augmentation and padding):

==============  ======================================================================
dataset         keys
==============  ======================================================================
digits, mnist,  ``image (H, W, C) uint8``, ``label ()`` int32
cifar10
shapes/single   image, ``label`` (the object's class - 1), ``boxes (N, 4)`` xyxy pixels,
                ``classes (N,)`` 1..K, ``masks (N, H, W)`` uint8, ``segmentation (H, W)``,
                ``original_size (2,)`` int32 (H, W)
shapes/multi    as shapes/single without ``label``
voc/2007,       image, boxes (tfds' normalised yxyx -> xyxy pixels), classes,
voc/2012,       ``ignore (N,)`` bool (VOC "difficult", COCO "crowd": objects that evaluation
coco/2017       ignores), original_size
voc/2012-       image, ``segmentation (H, W)`` int32 (0 = background, 1..20, 255 = void),
segmentation    original_size; images are padded (not resized) to ``image_size``
coco/2017_      image, boxes, classes (the 80 COCO "thing" classes, 1..80), ``masks (N, H, W)``
panoptic        uint8 instance masks, ``ignore`` (all False: crowds are dropped), original_size
==============  ======================================================================

tfds' ``voc`` builder has detection annotations only (no segmentation masks): VOC 2012
semantic segmentation comes from jaxcv's own builder
(:mod:`jaxcv.data.builders.voc_segmentation`), which reads the official archive from a manual
dir. tfds' ``coco/2017`` has boxes but no instance masks; COCO instance masks come from
``coco/2017_panoptic`` (same 118k / 5k images): its panoptic PNG holds one segment id per pixel
(``R + 256 G + 256^2 B``), each "thing" segment is one instance, so the mask of object ``n`` is
``ids == objects.id[n]``. Stuff segments (labels 80..132: panoptic categories list the 80 thing
classes first) and crowd segments are dropped, as torchvision's COCO training reference drops
crowd annotations; evaluation then counts detections on crowds as false positives, which lowers
AP slightly compared with the official COCO evaluation. Panoptic segments do not overlap, so
occluded parts belong to the front object only (instance annotations may overlap).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import tensorflow as tf

from jaxcv.data.builders import voc_segmentation
from jaxcv.errors import DatasetNotPreparedError
from jaxcv.eval.coco_categories import COCO_THING_CLASSES
from jaxcv.types import (
    BOXES,
    CLASSES,
    IGNORE,
    IGNORE_LABEL,
    IMAGE,
    LABEL,
    MASKS,
    ORIGINAL_SIZE,
    SEGMENTATION,
)

VOC_CLASS_NAMES = voc_segmentation.CLASS_NAMES  # background + 20 object classes

FITS = ("resize", "pad")


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Training augmentation of a dataset (applied when ``augment=True`` and ``train=True``).

    Attributes:
      hflip: random left-right flip (off for digits: mirrored digits are other symbols).
      translate: random shift of up to this many pixels (zero padding), or 0.
      crop_min_scale: random resized crop with side scale in ``[crop_min_scale, 1]``, or None.
    """

    hflip: bool = False
    translate: int = 0
    crop_min_scale: float | None = None


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One dataset: where it comes from and how its features become batch keys.

    Attributes:
      name: user-facing name (key of :data:`DATASETS`).
      tfds_name: tfds builder name with config, e.g. ``"jaxcv_shapes/single"``.
      builtin: generated locally by a jaxcv builder (no download).
      to_example: decoded tfds example -> per-example dict of batch keys.
      keys: the keys ``to_example`` produces.
      label_feature: path of the tfds ``ClassLabel`` feature holding the class names.
      image_shape: ``(H, W, C)`` as stored; ``None`` for sizes that vary per image.
      mean, std: per-channel normalisation constants (pixel / 255 units).
      augmentation: the training augmentation.
      optional_features: batch key -> tfds feature path whose decoding is skipped when the
        key is not requested (e.g. masks).
      cache: small enough to cache decoded in memory.
      builder_kwargs: extra kwargs for ``tfds.builder``.
      class_names: overrides the tfds names (tfds sets some only while preparing the data).
      fit: how images meet the pipeline's ``image_size``: ``"resize"`` (stretch to it) or
        ``"pad"`` (:func:`jaxcv.data.transforms.pad_to_size`: never upscaled, padded at the
        bottom/right with zeros after normalisation, segmentation with 255 = ignore).
      generated_per_s: built-in only: images generated per second on 2 CPU cores (shapes:
        115-150 measured on loaded cores), for the estimate printed before generating.
      manual_download: for a real dataset built from files the user downloads (tfds manual
        dir), what to download and where to put it; None for tfds-downloadable datasets.
    """

    name: str
    tfds_name: str
    builtin: bool
    to_example: Callable[[dict], dict]
    keys: tuple[str, ...]
    label_feature: tuple[str, ...]
    image_shape: tuple[int | None, int | None, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augmentation: Augmentation
    optional_features: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    cache: bool = False
    builder_kwargs: Mapping[str, object] = dataclasses.field(default_factory=dict)
    class_names: tuple[str, ...] | None = None
    fit: str = "resize"
    manual_download: str | None = None
    generated_per_s: float = 150.0

    def __post_init__(self) -> None:
        if self.fit not in FITS:
            raise ValueError(f"{self.name}: fit must be one of {FITS}, got {self.fit!r}")

    @property
    def has_objects(self) -> bool:
        """Whether examples carry boxes (detection-style datasets)."""
        return BOXES in self.keys


def _classification(example: dict) -> dict:
    return {IMAGE: example["image"], LABEL: tf.cast(example["label"], tf.int32)}


def _size(image: tf.Tensor) -> tf.Tensor:
    return tf.shape(image)[:2]


def _shapes(example: dict, *, single: bool) -> dict:
    """jaxcv_shapes: boxes are stored as xyxy pixels already; labels are 0-based."""
    objects = example["objects"]
    classes = tf.cast(objects["label"], tf.int32) + 1
    out = {
        IMAGE: example["image"],
        BOXES: tf.reshape(objects["bbox"], [-1, 4]),
        CLASSES: classes,
        ORIGINAL_SIZE: _size(example["image"]),
    }
    if "mask" in objects:  # absent when its decoding was skipped
        out[MASKS] = objects["mask"][..., 0]
    if "segmentation" in example:
        out[SEGMENTATION] = tf.cast(example["segmentation"][..., 0], tf.int32)
    if single:
        out[LABEL] = classes[0] - 1
    return out


def _tfds_detection(example: dict, *, ignore_feature: str) -> dict:
    """tfds detection datasets: ``BBoxFeature`` is normalised ``(ymin, xmin, ymax, xmax)``."""
    image = example["image"]
    size = _size(image)
    h, w = tf.cast(size[0], tf.float32), tf.cast(size[1], tf.float32)
    objects = example["objects"]
    yxyx = tf.reshape(objects["bbox"], [-1, 4])
    label, ignore = objects["label"], objects[ignore_feature]
    # Real data has one entry per object in every field; tfds' mock data (tests) draws each
    # field's length independently, so keep the common prefix.
    n = tf.reduce_min(tf.stack([tf.shape(yxyx)[0], tf.size(label), tf.size(ignore)]))
    yxyx = yxyx[:n]
    boxes = tf.stack([yxyx[:, 1] * w, yxyx[:, 0] * h, yxyx[:, 3] * w, yxyx[:, 2] * h], axis=1)
    return {
        IMAGE: image,
        BOXES: boxes,
        CLASSES: tf.cast(label[:n], tf.int32) + 1,
        IGNORE: tf.cast(ignore[:n], tf.bool),
        ORIGINAL_SIZE: size,
    }


def _voc_segmentation(example: dict) -> dict:
    """jaxcv_voc2012_segmentation: label PNG values are the class indices (255 = void)."""
    image = example["image"]
    labels = tf.cast(example["segmentation"][..., 0], tf.int32)
    # The builder guarantees equal sizes and labels in 0..20 or 255; tfds' mock data (tests)
    # draws each feature's size and values independently: keep the common top-left window
    # and make other values void.
    size = tf.minimum(tf.shape(image)[:2], tf.shape(labels))
    image, labels = image[: size[0], : size[1]], labels[: size[0], : size[1]]
    labels = tf.where(labels < len(VOC_CLASS_NAMES), labels, IGNORE_LABEL)
    return {IMAGE: image, SEGMENTATION: labels, ORIGINAL_SIZE: _size(image)}


def _coco_panoptic(example: dict) -> dict:
    """tfds coco/2017_panoptic -> instances of the 80 thing classes, with masks (see above)."""
    image = example["image"]
    objects = example["panoptic_objects"]
    label, crowd, ids = objects["label"], objects["is_crowd"], objects["id"]
    yxyx = tf.reshape(objects["bbox"], [-1, 4])
    # One entry per object in every field in real data; tfds' mock data (tests) draws each
    # field's length independently: keep the common prefix.
    n = tf.reduce_min(tf.stack([tf.shape(yxyx)[0], tf.size(label), tf.size(crowd), tf.size(ids)]))
    keep = (label[:n] < len(COCO_THING_CLASSES)) & ~tf.cast(crowd[:n], tf.bool)
    size = _size(image)
    out = {
        IMAGE: image,
        CLASSES: tf.cast(tf.boolean_mask(label[:n], keep), tf.int32) + 1,
        ORIGINAL_SIZE: size,
    }
    yxyx = tf.boolean_mask(yxyx[:n], keep)
    h, w = tf.cast(size[0], tf.float32), tf.cast(size[1], tf.float32)
    out[BOXES] = tf.stack([yxyx[:, 1] * w, yxyx[:, 0] * h, yxyx[:, 3] * w, yxyx[:, 2] * h], 1)
    out[IGNORE] = tf.zeros_like(out[CLASSES], tf.bool)
    if "panoptic_image" in example:  # absent when its decoding was skipped (no masks wanted)
        rgb = tf.cast(example["panoptic_image"], tf.int64)
        # Mock data draws the two images' sizes independently: the common top-left window.
        common = tf.minimum(size, tf.shape(rgb)[:2])
        rgb = tf.pad(
            rgb[: common[0], : common[1]],
            [[0, size[0] - common[0]], [0, size[1] - common[1]], [0, 0]],
        )
        segment = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        instance_ids = tf.boolean_mask(ids[:n], keep)
        masks = tf.equal(segment[None], instance_ids[:, None, None])
        out[MASKS] = tf.cast(masks, tf.uint8)
    return out


_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse")
_CIFAR10_CLASSES += ("ship", "truck")
_CLASSIFICATION_KEYS = (IMAGE, LABEL)
_SHAPES_KEYS = (IMAGE, BOXES, CLASSES, MASKS, SEGMENTATION, ORIGINAL_SIZE)
_DETECTION_KEYS = (IMAGE, BOXES, CLASSES, IGNORE, ORIGINAL_SIZE)
_SHAPES_OPTIONAL = {MASKS: ("objects", "mask"), SEGMENTATION: ("segmentation",)}
# ImageNet statistics: the usual choice for natural-image detection datasets.
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Measured on the full built-in train splits (shapes/single: mean 0.500, 0.498, 0.497, std
# 0.219, 0.221, 0.220; shapes/multi: mean 0.500, 0.502, 0.498, std 0.222, 0.222, 0.221);
# tests/data/test_registry.py re-measures them on the small test builds.
_SHAPES_MEAN, _SHAPES_STD = (0.5, 0.5, 0.5), (0.22, 0.22, 0.22)


def _shapes_spec(config: str) -> DatasetSpec:
    single = config == "single"
    return DatasetSpec(
        name=f"shapes/{config}",
        tfds_name=f"jaxcv_shapes/{config}",
        builtin=True,
        to_example=lambda ex: _shapes(ex, single=single),
        keys=(*_SHAPES_KEYS, LABEL) if single else _SHAPES_KEYS,
        label_feature=("objects", "label"),
        image_shape=(128, 128, 3),
        mean=_SHAPES_MEAN,
        std=_SHAPES_STD,
        augmentation=Augmentation(hflip=True, crop_min_scale=0.6),
        optional_features=_SHAPES_OPTIONAL,
        # Decoding a noisy 128x128 PNG costs more than shapes_classify's step per image, so the
        # single-object split is cached decoded (a few hundred MB); the multi-object split is
        # not: with instance masks it would take several times that.
        cache=single,
    )


def _detection_spec(name: str, ignore_feature: str) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        tfds_name=name,
        builtin=False,
        to_example=lambda ex: _tfds_detection(ex, ignore_feature=ignore_feature),
        keys=_DETECTION_KEYS,
        label_feature=("objects", "label"),
        image_shape=(None, None, 3),
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        augmentation=Augmentation(hflip=True),
    )


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(
        name="digits",
        tfds_name="jaxcv_digits",
        builtin=True,
        to_example=_classification,
        keys=_CLASSIFICATION_KEYS,
        label_feature=("label",),
        image_shape=(8, 8, 1),
        mean=(0.3054,),  # measured on the train split
        std=(0.3760,),
        augmentation=Augmentation(translate=1),
        cache=True,
        generated_per_s=1000.0,  # scikit-learn's arrays, only encoded
    ),
    "shapes/single": _shapes_spec("single"),
    "shapes/multi": _shapes_spec("multi"),
    "mnist": DatasetSpec(
        name="mnist",
        tfds_name="mnist",
        builtin=False,
        to_example=_classification,
        keys=_CLASSIFICATION_KEYS,
        label_feature=("label",),
        image_shape=(28, 28, 1),
        mean=(0.1307,),
        std=(0.3081,),
        augmentation=Augmentation(translate=2),
        cache=True,
    ),
    "cifar10": DatasetSpec(
        name="cifar10",
        tfds_name="cifar10",
        builtin=False,
        to_example=_classification,
        keys=_CLASSIFICATION_KEYS,
        label_feature=("label",),
        image_shape=(32, 32, 3),
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        augmentation=Augmentation(hflip=True, translate=4),
        cache=True,
        class_names=_CIFAR10_CLASSES,
    ),
    "voc/2007": _detection_spec("voc/2007", "is_difficult"),
    "voc/2012": _detection_spec("voc/2012", "is_difficult"),
    "coco/2017": _detection_spec("coco/2017", "is_crowd"),
    "coco/2017_panoptic": DatasetSpec(
        name="coco/2017_panoptic",
        tfds_name="coco/2017_panoptic",
        builtin=False,
        to_example=_coco_panoptic,
        keys=(IMAGE, BOXES, CLASSES, MASKS, IGNORE, ORIGINAL_SIZE),
        label_feature=("panoptic_objects", "label"),
        image_shape=(None, None, 3),
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        augmentation=Augmentation(hflip=True),
        optional_features={MASKS: ("panoptic_image",)},
        class_names=COCO_THING_CLASSES,
    ),
    "voc/2012-segmentation": DatasetSpec(
        name="voc/2012-segmentation",
        tfds_name="jaxcv_voc2012_segmentation",
        builtin=False,
        to_example=_voc_segmentation,
        keys=(IMAGE, SEGMENTATION, ORIGINAL_SIZE),
        label_feature=(),
        image_shape=(None, None, 3),
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        augmentation=Augmentation(hflip=True),
        class_names=VOC_CLASS_NAMES[1:],
        fit="pad",
        manual_download=voc_segmentation.MANUAL_DOWNLOAD_INSTRUCTIONS,
    ),
}
"""User-facing dataset name -> :class:`DatasetSpec`."""

BUILTIN_ALTERNATIVE = {
    "mnist": "digits",
    "cifar10": "shapes/single",
    "voc/2007": "shapes/multi",
    "voc/2012": "shapes/multi",
    "coco/2017": "shapes/multi",
    "coco/2017_panoptic": "shapes/multi",
    "voc/2012-segmentation": "shapes/multi",
}
"""Real dataset -> the built-in dataset offered instead when it is not prepared."""


def get_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``; ``ValueError`` listing valid names otherwise."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return DATASETS[name]


def not_prepared_error(
    spec: DatasetSpec, data_dir: str, detail: str | None = None
) -> DatasetNotPreparedError:
    """The error for a real dataset missing from ``data_dir``: what, how to prepare, instead
    (``detail``: why building it from the manual dir failed)."""
    if spec.manual_download is not None:
        reason = f" ({detail})" if detail else ""
        return DatasetNotPreparedError(
            f"dataset {spec.name!r} (tfds {spec.tfds_name!r}) is not prepared in {data_dir}"
            f"{reason}; jaxcv never downloads, and this dataset is built from files you "
            "download yourself.\n"
            f"{spec.manual_download}\n"
            f"For this data dir: jaxcv data prepare {spec.name} --data-dir {data_dir} "
            "--manual-dir DIR, or from Python (after `import jaxcv.data`): "
            f"tfds.builder('{spec.tfds_name}', data_dir='{data_dir}').download_and_prepare("
            "download_config=tfds.download.DownloadConfig(manual_dir=DIR)).\n"
            f"Built-in alternative that needs no download: {BUILTIN_ALTERNATIVE[spec.name]!r}."
        )
    manual = ""
    if spec.name.startswith(("voc", "coco")):
        manual = (
            " Offline, put the original archives in <data_dir>/downloads/manual and pass "
            "download_config=tfds.download.DownloadConfig(manual_dir=...)."
        )
    return DatasetNotPreparedError(
        f"dataset {spec.name!r} (tfds {spec.tfds_name!r}) is not prepared in {data_dir}; jaxcv "
        "never downloads. Prepare it on a machine with network access with\n"
        f"  python -c \"import tensorflow_datasets as tfds; tfds.builder('{spec.tfds_name}', "
        f"data_dir='{data_dir}').download_and_prepare()\"\n"
        f"(or `tfds build {spec.tfds_name} --data_dir {data_dir}`) and copy "
        f"the data dir here, or set JAXCV_DATA_DIR to a dir that has it.{manual}\n"
        f"Built-in alternative that needs no download: {BUILTIN_ALTERNATIVE[spec.name]!r}."
    )
