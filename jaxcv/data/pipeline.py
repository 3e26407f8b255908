"""tf.data input pipelines: read and decode -> join proposals -> shuffle, repeat -> augment ->
resize or pad -> normalise -> pad objects -> batch.

:func:`make_pipeline` composes the stages below, each a function of a :class:`_Plan` (its
checked arguments): :func:`jaxcv.data.reading.read_examples` (this process's share of the
split, decoded), :func:`_join_and_cache` (external proposals, :mod:`jaxcv.data.proposals`),
:func:`_shuffle_and_repeat`, then either :func:`_batch_then_transform` (fixed-shape images
and labels: vectorised transforms of :mod:`jaxcv.data.batched`) or
:func:`_transform_then_batch` (:func:`_transform_example` on each example; evaluation batches
padded by :func:`_eval_batches`).

The batch keys follow :mod:`jaxcv.types`; extra keys are ``example_valid (B,)`` bool
(evaluation), ``ignore (B, M)`` bool (VOC difficult / COCO crowd) and ``original_size (B, 2)``
int32 (image ``(H, W)`` as stored, for mapping boxes back).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence

import tensorflow as tf

from jaxcv.data import batched
from jaxcv.data import transforms as T
from jaxcv.data.proposals import join_proposals, mask_padding
from jaxcv.data.reading import read_examples, shard_is_short, wanted_keys
from jaxcv.data.registry import FITS, DatasetSpec, get_spec
from jaxcv.types import BOXES, EXAMPLE_VALID, IGNORE_LABEL, IMAGE

DEFAULT_SHUFFLE_BUFFER = 2048


def make_pipeline(
    name: str,
    split: str,
    batch_size: int,
    *,
    train: bool,
    seed: int = 0,
    image_size: Sequence[int] | None = None,
    augment: bool = False,
    max_objects: int = 16,
    data_dir: str | os.PathLike | None = None,
    repeat: bool | int | None = None,
    drop_remainder: bool | None = None,
    process_index: int = 0,
    process_count: int = 1,
    deterministic: bool = True,
    keys: Sequence[str] | None = None,
    grayscale_to_rgb: bool = False,
    shuffle_buffer: int | None = None,
    proposals=None,
    fit: str | None = None,
) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of dict batches (``tfds.as_numpy`` gives NumPy dicts).

    Batch keys (those the dataset has; see :mod:`jaxcv.data.registry`):
    ``image (B, H, W, C)`` float32 normalised with the dataset's mean/std; ``label (B,)`` int32
    in 0..K-1; ``boxes (B, M, 4)`` float32 xyxy pixels of the output image; ``classes (B, M)``
    int32 in 1..K, 0 = padding; ``valid (B, M)`` bool; ``masks (B, M, H, W)`` uint8;
    ``segmentation (B, H, W)`` int32; ``ignore (B, M)`` bool; ``original_size (B, 2)`` int32;
    ``example_valid (B,)`` bool when ``train=False``. ``M = max_objects``; with more objects,
    the ``M`` largest are kept (:func:`jaxcv.data.transforms.pad_objects`).

    Args:
      name: a key of :data:`jaxcv.data.DATASETS`. Built-in datasets are generated on first use.
      split: a tfds split, e.g. ``"train"``, ``"test"``, ``"train[:90%]"``.
      batch_size: per-process batch size ``B``.
      train: shuffle (seeded) and, by default, repeat forever and drop the last partial batch;
        ``False``: one ordered pass, the last batch padded to ``B`` with ``example_valid``.
      seed: shuffling and augmentation seed.
      image_size: ``(H, W)`` of the output images (see ``fit``); required for datasets with
        varying image sizes.
      augment: apply the dataset's training augmentation (only when ``train``).
      max_objects: ``M``, objects per image after padding/truncation.
      data_dir: tfds data dir (default ``$JAXCV_DATA_DIR``, else tfds' default).
      repeat: ``True`` forever, ``False``/``1`` one pass, ``n`` passes; default by ``train``.
      drop_remainder: drop the last partial batch; default ``train``.
      process_index, process_count: this process's even, disjoint share of ``split`` (train
        shares have equal sizes; evaluation shares differ by at most one example).
      deterministic: reproducible order and augmentation (slower parallel maps otherwise).
      keys: only these batch keys (e.g. ``("image", "label")``); masks and segmentation are not
        even decoded when not asked for. Default: all.
      grayscale_to_rgb: repeat single-channel images to 3 channels.
      shuffle_buffer: examples in the shuffle buffer (default: the whole split for datasets
        cached in memory, else 2048).
      proposals: a :class:`jaxcv.proposals.table.ProposalTable` of ``split`` (one row per
        example, in split order): adds ``proposals (B, P, 4)`` and ``proposal_valid (B, P)``,
        joined by position before shuffling (files are then read in order;
        :mod:`jaxcv.data.proposals`) and moved by the resize and the flip; the augmentation
        is then the flip only. Single process only.
      fit: how images meet ``image_size``: ``"resize"`` (stretched to it) or ``"pad"``
        (:func:`jaxcv.data.transforms.pad_to_size`: scaled down only if larger, aspect kept,
        then padded at the bottom/right with 0 after normalisation and with 255 = ignore in
        ``segmentation``, so padded pixels count in neither the loss nor the metrics).
        Default: the dataset's ``fit`` (``"pad"`` for ``voc/2012-segmentation``).

    Raises:
      ValueError: unknown dataset or key, bad sizes or process indices.
      DatasetNotPreparedError: a real dataset that is not in the data dir.
    """
    plan = _Plan(
        get_spec(name),
        split,
        batch_size,
        train=train,
        seed=seed,
        image_size=image_size,
        augment=augment,
        max_objects=max_objects,
        data_dir=data_dir,
        repeat=repeat,
        drop_remainder=drop_remainder,
        process_index=process_index,
        process_count=process_count,
        deterministic=deterministic,
        keys=keys,
        grayscale_to_rgb=grayscale_to_rgb,
        shuffle_buffer=shuffle_buffer,
        proposals=proposals,
        fit=fit,
    )
    ds = _shuffle_and_repeat(_join_and_cache(_examples(plan), plan), plan)
    if plan.batch_first:
        ds = _batch_then_transform(ds, plan)
    else:
        ds = _transform_then_batch(ds, plan)
    return _with_options(ds, plan.deterministic)


@dataclasses.dataclass(frozen=True, eq=False)
class _Plan:
    """The arguments of :func:`make_pipeline` with the dataset's ``spec``, checked when made.

    ``image_size`` becomes a tuple, ``fit`` and ``drop_remainder`` get their defaults; the
    properties derive what the stages need.

    Raises:
      ValueError: bad sizes, process indices, ``fit`` or keys; proposals with processes.
    """

    spec: DatasetSpec
    split: str
    batch_size: int
    train: bool
    seed: int
    image_size: tuple[int, int] | None
    augment: bool
    max_objects: int
    data_dir: str | os.PathLike | None
    repeat: bool | int | None
    drop_remainder: bool
    process_index: int
    process_count: int
    deterministic: bool
    keys: Sequence[str] | None
    grayscale_to_rgb: bool
    shuffle_buffer: int | None
    proposals: object
    fit: str

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.process_index < self.process_count:
            raise ValueError(
                "need 0 <= process_index < process_count, "
                f"got {self.process_index}, {self.process_count}"
            )
        resolved = {
            "image_size": _checked_image_size(self.spec, self.image_size),
            "fit": self.spec.fit if self.fit is None else self.fit,
            "drop_remainder": self.train if self.drop_remainder is None else self.drop_remainder,
        }
        for field, value in resolved.items():
            object.__setattr__(self, field, value)  # the documented way for frozen dataclasses
        if self.fit not in FITS:
            raise ValueError(f"fit must be one of {FITS}, got {self.fit!r}")
        _ = self.wanted  # unknown keys raise here
        if self.proposals is not None and self.process_count > 1:
            raise ValueError("external proposals are joined by position: use process_count=1")

    @functools.cached_property
    def wanted(self) -> tuple[str, ...]:
        """The keys decoded (:func:`jaxcv.data.reading.wanted_keys`)."""
        return wanted_keys(self.spec, self.keys)

    @property
    def keep_boxes(self) -> bool:
        """Whether ``boxes`` is a batch key (else it is decoded only for padding objects)."""
        return BOXES in (self.keys or self.wanted)

    @property
    def epochs(self) -> int | None:
        """Passes over the split (None: forever); ``repeat`` defaults to ``train``."""
        repeat = self.train if self.repeat is None else self.repeat
        return None if repeat is True else max(1, int(repeat))

    @property
    def batch_first(self) -> bool:
        """Training batches transformed whole (:func:`jaxcv.data.batched.can_batch`)."""
        spec = self.spec
        return self.train and batched.can_batch(
            self.wanted, spec.image_shape, spec.augmentation, augment=self.augment,
            fit=self.fit, proposals=self.proposals,
        )  # fmt: skip


def _checked_image_size(spec: DatasetSpec, image_size) -> tuple[int, int] | None:
    """``image_size`` as an ``(H, W)`` tuple of ints (None: the images' stored size)."""
    if image_size is not None:
        image_size = tuple(int(s) for s in image_size)
        if len(image_size) != 2 or min(image_size) < 1:
            raise ValueError(f"image_size must be (H, W) positive, got {image_size}")
    elif None in spec.image_shape[:2]:
        raise ValueError(f"{spec.name!r} has images of varying size: pass image_size=(H, W)")
    return image_size


def _examples(plan: _Plan) -> tf.data.Dataset:
    """The decoded examples of this process's share of the split. With proposals, the files
    are read in order: the proposal rows are joined by position."""
    return read_examples(
        plan.spec,
        plan.split,
        plan.wanted,
        data_dir=plan.data_dir,
        train=plan.train,
        shuffle_files=plan.train and plan.proposals is None,
        seed=plan.seed,
        process_index=plan.process_index,
        process_count=plan.process_count,
        deterministic=plan.deterministic,
    )


def _join_and_cache(ds: tf.data.Dataset, plan: _Plan) -> tf.data.Dataset:
    """Joins the external proposals (before anything reorders the examples) and caches the
    decoded examples of datasets small enough (``DatasetSpec.cache``)."""
    if plan.proposals is not None:
        ds = join_proposals(ds, plan.proposals)
    return ds.cache() if plan.spec.cache else ds


def _shuffle_and_repeat(ds: tf.data.Dataset, plan: _Plan) -> tf.data.Dataset:
    """Training: a seeded shuffle, reshuffled each epoch (buffer: the whole split when cached,
    else :data:`DEFAULT_SHUFFLE_BUFFER`, unless ``shuffle_buffer``). Then ``epochs`` passes."""
    if plan.train:
        buffer = plan.shuffle_buffer
        if buffer is None:
            size = int(ds.cardinality())
            buffer = size if plan.spec.cache and size > 0 else DEFAULT_SHUFFLE_BUFFER
        ds = ds.shuffle(buffer, seed=plan.seed, reshuffle_each_iteration=True)
    return ds.repeat(plan.epochs) if plan.epochs != 1 else ds


def _augmentation_seeds(plan: _Plan, index: tf.Tensor) -> tf.Tensor:
    """``(3, 2)`` stateless seeds of the example (or batch) ``index`` of this process: flip,
    translation, crop."""
    base = tf.constant([plan.seed, plan.process_index], tf.int64)
    return tf.random.experimental.stateless_split(
        tf.stack([base[0], base[1] * (1 << 40) + index]), 3
    )


def _batch_then_transform(ds: tf.data.Dataset, plan: _Plan) -> tf.data.Dataset:
    """Training batches of fixed-shape images and labels, transformed a whole batch at a time
    (:func:`jaxcv.data.batched.transform`; the same steps as :func:`_transform_example`)."""
    spec = plan.spec

    def transform(index: tf.Tensor, batch: dict) -> dict:
        return batched.transform(
            batch, _augmentation_seeds(plan, index), spec.augmentation, augment=plan.augment,
            image_size=plan.image_size, grayscale_to_rgb=plan.grayscale_to_rgb,
            mean=spec.mean, std=spec.std,
        )  # fmt: skip

    ds = ds.batch(plan.batch_size, drop_remainder=plan.drop_remainder).enumerate()
    return ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=plan.deterministic)


def _transform_then_batch(ds: tf.data.Dataset, plan: _Plan) -> tf.data.Dataset:
    """:func:`_transform_example` on each example, then batches (:func:`_eval_batches` for
    evaluation)."""
    ds = ds.enumerate().map(
        lambda index, example: _transform_example(plan, index, example),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=plan.deterministic,
    )
    if plan.train:
        return ds.batch(plan.batch_size, drop_remainder=plan.drop_remainder)
    return _eval_batches(ds, plan)


def _transform_example(plan: _Plan, index: tf.Tensor, example: dict) -> dict:
    """One example of :func:`make_pipeline`'s batches: augmented (training, ``augment``),
    fitted to ``image_size``, normalised, objects padded to ``max_objects``; marked
    ``example_valid`` for evaluation."""
    if plan.train and plan.augment:
        example = _augment(plan, example, _augmentation_seeds(plan, index))
    example = _fit_and_normalize(plan, example)
    if plan.proposals is not None:
        example = mask_padding(example)
    if BOXES in example:
        example = T.pad_objects(example, plan.max_objects)
        if not plan.keep_boxes:
            example.pop(BOXES)
    if not plan.train:
        example[EXAMPLE_VALID] = tf.constant(True)
    return example


def _augment(plan: _Plan, example: dict, seeds: tf.Tensor) -> dict:
    """The dataset's training augmentation (``DatasetSpec.augmentation``) with ``(3, 2)``
    ``seeds``. Shifts and crops would cut external proposals: with them, the flip only."""
    aug = plan.spec.augmentation
    if aug.hflip:
        example = T.random_flip(example, seeds[0])
    if aug.translate and plan.proposals is None:
        example = T.random_translate(example, seeds[1], aug.translate)
    if aug.crop_min_scale is not None and plan.proposals is None:
        out_size = plan.image_size if plan.fit == "resize" else None
        example = T.random_resized_crop(example, seeds[2], aug.crop_min_scale, out_size=out_size)
    return example


def _fit_and_normalize(plan: _Plan, example: dict) -> dict:
    """Resize to ``image_size`` (``fit="resize"``), grey to RGB, normalise with the dataset's
    mean/std, then pad to ``image_size`` (``fit="pad"``, ``segmentation`` with 255)."""
    image_size = plan.image_size
    resized = tuple(example[IMAGE].shape[:2]) == image_size
    if image_size is not None and plan.fit == "resize" and not resized:
        example = T.resize(example, image_size)
    if plan.grayscale_to_rgb and example[IMAGE].shape[-1] == 1:
        example = T.grayscale_to_rgb(example)
    example = T.normalize(example, plan.spec.mean, plan.spec.std)
    if image_size is not None and plan.fit == "pad":
        example = T.pad_to_size(example, image_size, ignore_label=IGNORE_LABEL)
    return example


def _eval_batches(ds: tf.data.Dataset, plan: _Plan) -> tf.data.Dataset:
    """Evaluation batches: every process gets the same number (a blank example,
    ``example_valid`` False, ends a share one shorter than the first's) and the last batch
    is padded to ``B`` with zeros / False (unless ``drop_remainder``)."""
    if shard_is_short(plan.spec, plan.split, plan.data_dir, plan.process_index, plan.process_count):
        # Multi-host evaluation steps line up only when all processes have as many batches.
        blank = ds.take(1).map(lambda ex: {k: tf.zeros_like(v) for k, v in ex.items()})
        ds = ds.concatenate(blank)
    ds = ds.batch(plan.batch_size, drop_remainder=plan.drop_remainder)
    if not plan.drop_remainder:
        ds = ds.map(lambda b: _pad_batch(b, plan.batch_size), num_parallel_calls=tf.data.AUTOTUNE)
    return ds


def _pad_batch(batch: dict, batch_size: int) -> dict:
    """Pads every ``(b, ...)`` value to ``(batch_size, ...)`` with zeros / False."""
    out = {}
    for key, value in batch.items():
        pad = batch_size - tf.shape(value)[0]
        value = tf.pad(value, [[0, pad]] + [[0, 0]] * (value.shape.rank - 1))
        out[key] = tf.ensure_shape(value, [batch_size, *value.shape[1:]])
    return out


def _with_options(ds: tf.data.Dataset, deterministic: bool) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = deterministic
    options.experimental_optimization.map_parallelization = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


class CorruptDataError(ValueError):
    """A record of a prepared dataset cannot be read or decoded (damaged files)."""


def numpy_batches(dataset: tf.data.Dataset, source: str):
    """Iterate ``dataset`` as NumPy dict batches, turning tf.data's read and decode failures
    (a truncated shard, image bytes that are no PNG/JPEG) into :class:`CorruptDataError`.

    Args:
      dataset: a pipeline of :func:`make_pipeline`.
      source: what it reads, for the message, e.g. ``"dataset 'digits', split 'test'"``.

    Yields:
      The batches of ``dataset.as_numpy_iterator()``.

    Raises:
      CorruptDataError: naming ``source``, tf's reason (e.g. ``Invalid PNG``) and the fix.
    """
    iterator = dataset.as_numpy_iterator()
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as error:
            lines = (error.message or str(error)).strip().splitlines() or [""]
            reason = lines[0].rsplit(": ", 1)[-1].strip()  # tf's reason after the op chain
            node = next((ln.strip() for ln in lines[1:] if "node" in ln), "")
            raise CorruptDataError(
                f"cannot decode a record of {source}: {reason} {node}".rstrip()
                + ". The prepared files are damaged: delete the dataset's directory in the "
                "data dir and prepare it again (`jaxcv data prepare NAME`)."
            ) from error
        yield batch
