"""This process's share of a tfds split, decoded to batch keys: the first stage of
:func:`jaxcv.data.pipeline.make_pipeline`.

With ``process_count`` processes, each reads an even, disjoint share of the split
(``tfds.even_splits``): training shares have equal sizes (the remainder is dropped); evaluation
shares differ by at most one example, the first processes getting the remainder
(:func:`shard_is_short`). Features of keys nobody asked for (``DatasetSpec.optional_features``
of :mod:`jaxcv.data.registry`, e.g. masks) are not even decoded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import tensorflow as tf
import tensorflow_datasets as tfds

from jaxcv.data import transforms as T
from jaxcv.data.info import load_builder, prepare
from jaxcv.data.registry import DatasetSpec, not_prepared_error
from jaxcv.types import BOXES, IMAGE, VALID


def wanted_keys(spec: DatasetSpec, keys: Sequence[str] | None) -> tuple[str, ...]:
    """The batch keys to decode for ``keys`` (default: all of ``spec``'s), with the ``image``
    and, when object keys are asked for, the ``boxes`` that padding needs.

    Raises:
      ValueError: a key the dataset does not have.
    """
    available = (*spec.keys, VALID) if spec.has_objects else spec.keys
    if keys is None:
        return available
    unknown = [k for k in keys if k not in available]
    if unknown:
        raise ValueError(f"{spec.name!r} has no keys {unknown}; available: {list(available)}")
    if spec.has_objects and any(k in keys for k in (*T.OBJECT_KEYS, VALID)):
        keys = (*keys, BOXES) if BOXES not in keys else keys  # padding needs the boxes
    return (*keys, IMAGE) if IMAGE not in keys else tuple(keys)


def read_examples(
    spec: DatasetSpec,
    split: str,
    wanted: Sequence[str],
    *,
    data_dir: str | os.PathLike | None,
    train: bool,
    shuffle_files: bool,
    seed: int,
    process_index: int,
    process_count: int,
    deterministic: bool,
) -> tf.data.Dataset:
    """The examples of this process's share of ``split`` as dicts of the ``wanted`` keys
    (``spec.to_example``: before augmentation, resizing and padding).

    Args:
      spec: the dataset (built-in datasets are generated on first use).
      split: a tfds split, e.g. ``"train[:90%]"``.
      wanted: batch keys to keep (:func:`wanted_keys`).
      data_dir: tfds data dir (see :func:`jaxcv.data.info.resolve_data_dir`).
      train: equal shares (the remainder of the split dropped).
      shuffle_files: read the files in a seeded random order.
      seed: the file-order seed.
      process_index, process_count: this process's share.
      deterministic: keep the order of the parallel decode.

    Raises:
      DatasetNotPreparedError: a real dataset that is not in the data dir.
    """
    skipped = [path for key, path in spec.optional_features.items() if key not in wanted]
    ds = _read(
        spec,
        split,
        data_dir=data_dir,
        train=train,
        shuffle_files=shuffle_files,
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

    return ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)


def shard_is_short(
    spec: DatasetSpec,
    split: str,
    data_dir: str | os.PathLike | None,
    process_index: int,
    process_count: int,
) -> bool:
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


def _read(
    spec, split, *, data_dir, train, shuffle_files, seed, skipped, process_index, process_count
):
    """The decoded tfds dataset of this process's share of ``split``."""
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
            shuffle_files=shuffle_files,
            decoders=decoders or None,
            read_config=read_config,
        )
    except AssertionError as error:  # tfds' "could not find data" check
        if "could not find data" not in str(error):
            raise
        raise not_prepared_error(spec, os.fspath(builder.data_dir_root)) from None


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
