"""Dataset metadata, data dirs and preparation (generation of the built-in datasets)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import tensorflow_datasets as tfds

from jaxcv.data import builders  # noqa: F401  (registers the jaxcv_* builders with tfds)
from jaxcv.data.registry import DatasetSpec, get_spec, not_prepared_error

DATA_DIR_ENV = "JAXCV_DATA_DIR"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model and a training loop need to know about a dataset.

    Attributes:
      name: user-facing name, e.g. ``"shapes/multi"``.
      num_classes: object classes ``K``, excluding background.
      class_names: ``K`` names; class id ``k`` in ``label`` is ``class_names[k]``, class
        ``c`` in ``classes`` (1..K) is ``class_names[c - 1]``.
      image_shape: ``(H, W, C)`` as stored; ``None`` for sizes that vary per image.
      splits: examples per split (empty for a real dataset that is not prepared).
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    image_shape: tuple[int | None, int | None, int]
    splits: dict[str, int]


def resolve_data_dir(data_dir: str | os.PathLike | None) -> str | None:
    """``data_dir``, else ``$JAXCV_DATA_DIR``, else None (tfds' default data dir)."""
    if data_dir is not None:
        return os.fspath(data_dir)
    return os.environ.get(DATA_DIR_ENV) or None


def load_builder(
    spec: DatasetSpec, data_dir: str | os.PathLike | None, **kwargs
) -> tfds.core.DatasetBuilder:
    """The tfds builder of ``spec`` rooted at the resolved data dir (nothing is downloaded)."""
    return tfds.builder(
        spec.tfds_name, data_dir=resolve_data_dir(data_dir), **spec.builder_kwargs, **kwargs
    )


def _feature(builder: tfds.core.DatasetBuilder, path: tuple[str, ...]):
    feature = builder.info.features
    for part in path:
        feature = feature[part]
        if isinstance(feature, tfds.features.Sequence):
            feature = feature.feature
    return feature


def get_info(name: str, data_dir: str | os.PathLike | None = None) -> DatasetInfo:
    """Metadata of dataset ``name``; never generates or downloads anything.

    Split sizes come from the prepared data, or for a built-in dataset not generated yet, from
    its builder config; for a real dataset that is not prepared, ``splits`` is empty.

    Raises:
      ValueError: unknown ``name`` (the message lists the valid names).
    """
    spec = get_spec(name)
    builder = load_builder(spec, data_dir)
    names = spec.class_names or tuple(_feature(builder, spec.label_feature).names)
    if builder.is_prepared():
        splits = {k: int(v.num_examples) for k, v in builder.info.splits.items()}
    elif spec.builtin:
        splits = builder.expected_split_sizes()
    else:
        splits = {}
    return DatasetInfo(
        name=name,
        num_classes=len(names),
        class_names=names,
        image_shape=spec.image_shape,
        splits=splits,
    )


def prepare(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    split_sizes: Mapping[str, int] | None = None,
) -> DatasetInfo:
    """Makes dataset ``name`` ready to load; returns its :class:`DatasetInfo`.

    A built-in dataset is generated into the data dir (with progress bars) unless it is already
    there; generation is never repeated. A real dataset is only checked: jaxcv never downloads.

    Args:
      name: a key of :data:`jaxcv.data.DATASETS`.
      data_dir: root of the tfds data (default ``$JAXCV_DATA_DIR``, else tfds' default).
      split_sizes: ``shapes`` only: examples per split, overriding the defaults (e.g. small
        splits for a test suite; build them into their own data dir).

    Raises:
      ValueError: unknown name, ``split_sizes`` for a dataset without them, or a prepared
        dataset whose split sizes differ from ``split_sizes``.
      DatasetNotPreparedError: a real dataset missing from the data dir.
    """
    spec = get_spec(name)
    kwargs = {}
    if split_sizes is not None:
        if not spec.tfds_name.startswith("jaxcv_shapes"):
            raise ValueError(f"split_sizes is only supported by shapes datasets, not {name!r}")
        kwargs["split_sizes"] = split_sizes
    builder = load_builder(spec, data_dir, **kwargs)
    if not spec.builtin:
        if not builder.is_prepared():
            raise not_prepared_error(spec, os.fspath(builder.data_dir_root))
        return get_info(name, data_dir)
    if builder.is_prepared():
        have = {k: int(v.num_examples) for k, v in builder.info.splits.items()}
        want = builder.expected_split_sizes()
        if split_sizes is not None and have != want:
            raise ValueError(
                f"{name!r} is already prepared in {builder.data_dir} with splits {have}, not "
                f"{want}; use another data dir for other split sizes"
            )
    else:
        tfds.enable_progress_bar()
        builder.download_and_prepare()
    return get_info(name, data_dir)
