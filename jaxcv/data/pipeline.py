"""tf.data input pipelines: decode -> batch keys -> augment -> resize or pad -> normalise ->
pad objects -> batch.

See :func:`make_pipeline`. The batch keys follow :mod:`jaxcv.types`; extra keys are
``example_valid (B,)`` bool (evaluation), ``ignore (B, M)`` bool (VOC difficult / COCO crowd)
and ``original_size (B, 2)`` int32 (image ``(H, W)`` as stored, for mapping boxes back).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import tensorflow as tf
import tensorflow_datasets as tfds

from jaxcv.data import batched
from jaxcv.data import transforms as T
from jaxcv.data.info import load_builder, prepare
from jaxcv.data.proposals import join_proposals, mask_padding
from jaxcv.data.registry import FITS, DatasetSpec, get_spec, not_prepared_error
from jaxcv.types import BOXES, EXAMPLE_VALID, IGNORE_LABEL, IMAGE, VALID

DEFAULT_SHUFFLE_BUFFER = 2048


def _nested(path: tuple[str, ...], leaf) -> dict:
    out = leaf
    for part in reversed(path):
        out = {part: out}
    return out


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        out[key] = _merge(out[key], value) if key in out else value
    return out


def _drop_path(example: dict, path: tuple[str, ...]) -> dict:
    out = dict(example)
    if len(path) == 1:
        out.pop(path[0], None)
    elif path[0] in out:
        out[path[0]] = _drop_path(out[path[0]], path[1:])
    return out


def _wanted_keys(spec: DatasetSpec, keys: Sequence[str] | None) -> tuple[str, ...]:
    available = (*spec.keys, VALID) if spec.has_objects else spec.keys
    if keys is None:
        return available
    unknown = [k for k in keys if k not in available]
    if unknown:
        raise ValueError(f"{spec.name!r} has no keys {unknown}; available: {list(available)}")
    if spec.has_objects and any(k in keys for k in (*T.OBJECT_KEYS, VALID)):
        keys = (*keys, BOXES) if BOXES not in keys else keys  # padding needs the boxes
    return (*keys, IMAGE) if IMAGE not in keys else tuple(keys)


def _read(spec, split, *, data_dir, train, seed, skipped, process_index, process_count):
    """The decoded tfds dataset of this process's shard of ``split``."""
    if spec.builtin:
        prepare(spec.name, data_dir)  # generates once; a no-op when cached
    builder = load_builder(spec, data_dir)
    if process_count > 1:
        split = tfds.even_splits(split, n=process_count, drop_remainder=train)[process_index]
    decoders = {}
    for path in skipped:
        decoders = _merge(decoders, _nested(path, tfds.decode.SkipDecoding()))
    read_config = tfds.ReadConfig(shuffle_seed=seed, try_autocache=False)
    try:
        return builder.as_dataset(
            split=split,
            shuffle_files=train,
            decoders=decoders or None,
            read_config=read_config,
        )
    except AssertionError as error:  # tfds' "could not find data" check
        if "could not find data" not in str(error):
            raise
        raise not_prepared_error(spec, os.fspath(builder.data_dir_root)) from None


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
    spec = get_spec(name)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= process_index < process_count:
        raise ValueError(
            f"need 0 <= process_index < process_count, got {process_index}, {process_count}"
        )
    if image_size is not None:
        image_size = tuple(int(s) for s in image_size)
        if len(image_size) != 2 or min(image_size) < 1:
            raise ValueError(f"image_size must be (H, W) positive, got {image_size}")
    elif None in spec.image_shape[:2]:
        raise ValueError(f"{name!r} has images of varying size: pass image_size=(H, W)")
    fit = spec.fit if fit is None else fit
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    wanted = _wanted_keys(spec, keys)
    skipped = [p for k, p in spec.optional_features.items() if k not in wanted]
    if repeat is None:
        repeat = train
    epochs = None if repeat is True else max(1, int(repeat))
    drop_remainder = train if drop_remainder is None else drop_remainder

    if proposals is not None and process_count > 1:
        raise ValueError("external proposals are joined by position: use process_count=1")
    ds = _read(
        spec,
        split,
        data_dir=data_dir,
        train=train and proposals is None,
        seed=seed,
        skipped=skipped,
        process_index=process_index,
        process_count=process_count,
    )

    def to_example(ex: dict) -> dict:
        for path in skipped:
            ex = _drop_path(ex, path)
        example = spec.to_example(ex)
        return {k: v for k, v in example.items() if k in wanted}

    ds = ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if proposals is not None:
        ds = join_proposals(ds, proposals)
    if spec.cache:
        ds = ds.cache()
    if train:
        if shuffle_buffer is None:
            size = int(ds.cardinality())
            shuffle_buffer = size if spec.cache and size > 0 else DEFAULT_SHUFFLE_BUFFER
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.repeat(epochs) if epochs != 1 else ds

    aug = spec.augmentation
    base_seed = tf.constant([seed, process_index], tf.int64)

    def seeds_of(index: tf.Tensor) -> tf.Tensor:
        """``(3, 2)`` augmentation seeds of the example (or batch) ``index`` of this process."""
        return tf.random.experimental.stateless_split(
            tf.stack([base_seed[0], base_seed[1] * (1 << 40) + index]), 3
        )

    if train and batched.can_batch(
        wanted, spec.image_shape, aug, augment=augment, fit=fit, proposals=proposals
    ):
        ds = ds.batch(batch_size, drop_remainder=drop_remainder).enumerate()
        ds = ds.map(
            lambda index, batch: batched.transform(
                batch, seeds_of(index), aug, augment=augment, image_size=image_size,
                grayscale_to_rgb=grayscale_to_rgb, mean=spec.mean, std=spec.std,
            ),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic,
        )  # fmt: skip
        return _with_options(ds, deterministic)

    def process(index: tf.Tensor, example: dict) -> dict:
        if train and augment:
            seeds = seeds_of(index)
            if aug.hflip:
                example = T.random_flip(example, seeds[0])
            # Shifts and crops would cut external proposals: with them, the flip only.
            if aug.translate and proposals is None:
                example = T.random_translate(example, seeds[1], aug.translate)
            if aug.crop_min_scale is not None and proposals is None:
                example = T.random_resized_crop(
                    example,
                    seeds[2],
                    aug.crop_min_scale,
                    out_size=image_size if fit == "resize" else None,
                )
        resized = tuple(example[IMAGE].shape[:2]) == image_size
        if image_size is not None and fit == "resize" and not resized:
            example = T.resize(example, image_size)
        if grayscale_to_rgb and example[IMAGE].shape[-1] == 1:
            example = T.grayscale_to_rgb(example)
        example = T.normalize(example, spec.mean, spec.std)
        if image_size is not None and fit == "pad":
            example = T.pad_to_size(example, image_size, ignore_label=IGNORE_LABEL)
        if proposals is not None:
            example = mask_padding(example)
        if BOXES in example:
            example = T.pad_objects(example, max_objects)
            if BOXES not in (keys or wanted):
                example.pop(BOXES)
        if not train:
            example[EXAMPLE_VALID] = tf.constant(True)
        return example

    ds = ds.enumerate().map(
        process, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic
    )
    if not train and _eval_shard_is_short(spec, split, data_dir, process_index, process_count):
        # Shares of an uneven split differ by one example; a blank one (example_valid False)
        # gives every process the same number of batches, so multi-host eval steps line up.
        blank = ds.take(1).map(lambda ex: {k: tf.zeros_like(v) for k, v in ex.items()})
        ds = ds.concatenate(blank)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if not train and not drop_remainder:
        ds = ds.map(lambda b: _pad_batch(b, batch_size), num_parallel_calls=tf.data.AUTOTUNE)
    return _with_options(ds, deterministic)


def _with_options(ds: tf.data.Dataset, deterministic: bool) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = deterministic
    options.experimental_optimization.map_parallelization = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _eval_shard_is_short(spec, split, data_dir, process_index, process_count) -> bool:
    """Whether this process's even share of ``split`` has one example fewer than the first's
    (tfds.even_splits gives the remainder to the first processes)."""
    if process_count == 1:
        return False
    try:
        total = load_builder(spec, data_dir).info.splits[split].num_examples
    except (KeyError, ValueError):  # split sizes unknown (e.g. tfds mock data)
        return False
    remainder = total % process_count
    return remainder > 0 and process_index >= remainder


def _pad_batch(batch: dict, batch_size: int) -> dict:
    """Pads every ``(b, ...)`` value to ``(batch_size, ...)`` with zeros / False."""
    out = {}
    for key, value in batch.items():
        pad = batch_size - tf.shape(value)[0]
        value = tf.pad(value, [[0, pad]] + [[0, 0]] * (value.shape.rank - 1))
        out[key] = tf.ensure_shape(value, [batch_size, *value.shape[1:]])
    return out


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
