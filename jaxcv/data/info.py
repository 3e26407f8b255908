"""Dataset metadata, data dirs and preparation (generation of the built-in datasets)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import sys
from collections.abc import Mapping

import tensorflow_datasets as tfds

from jaxcv import console
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
    """``data_dir``, else ``$JAXCV_DATA_DIR``, else None (tfds' default data dir).

    Raises:
      ValueError: the dir exists but is not a directory, or cannot be read (a missing dir is
        fine: built-in datasets are generated into it).
    """
    path = os.fspath(data_dir) if data_dir is not None else os.environ.get(DATA_DIR_ENV) or None
    if path is not None and os.path.exists(path):
        where = "data.data_dir / --data-dir / $" + DATA_DIR_ENV
        if not os.path.isdir(path):
            raise ValueError(f"data dir {path} is not a directory ({where})")
        if not os.access(path, os.R_OK | os.X_OK):
            raise ValueError(f"data dir {path} is not readable: check its permissions ({where})")
    return path


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
    manual_dir: str | os.PathLike | None = None,
) -> DatasetInfo:
    """Makes dataset ``name`` ready to load; returns its :class:`DatasetInfo`.

    A built-in dataset is generated into the data dir (with progress bars) unless it is already
    there; generation is never repeated. A real dataset is only checked: jaxcv never downloads.
    A real dataset built from files the user downloaded (``manual_download`` in its spec, e.g.
    ``voc/2012-segmentation``) is built from ``manual_dir`` when it is not prepared yet (its
    builder has no URLs: it only reads, and extracts archives from, that dir).

    Args:
      name: a key of :data:`jaxcv.data.DATASETS`.
      data_dir: root of the tfds data (default ``$JAXCV_DATA_DIR``, else tfds' default).
      split_sizes: ``shapes`` only: examples per split, overriding the defaults (e.g. small
        splits for a test suite; build them into their own data dir).
      manual_dir: where the downloaded files are (default ``<data_dir>/downloads/manual``);
        only for datasets with ``manual_download``.

    Raises:
      ValueError: unknown name, ``split_sizes`` for a dataset without them, or a prepared
        dataset whose split sizes differ from ``split_sizes``.
      DatasetNotPreparedError: a real dataset missing from the data dir (and, for a manual
        one, its files missing from the manual dir).
    """
    spec = get_spec(name)
    if manual_dir is not None and spec.manual_download is None:
        raise ValueError(f"{name!r} is not built from a manual dir; drop manual_dir")
    kwargs = {}
    if split_sizes is not None:
        if not spec.tfds_name.startswith("jaxcv_shapes"):
            raise ValueError(f"split_sizes is only supported by shapes datasets, not {name!r}")
        kwargs["split_sizes"] = split_sizes
    builder = load_builder(spec, data_dir, **kwargs)
    if spec.manual_download is not None and not builder.is_prepared():
        _prepare_from_manual_dir(spec, builder, manual_dir)
        return get_info(name, data_dir)
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
        _generate(spec, builder)
    return get_info(name, data_dir)


def _generate(spec: DatasetSpec, builder: tfds.core.DatasetBuilder) -> None:
    """Generates a built-in dataset, announced in one line (tfds' own output only when
    ``JAXCV_DEBUG=1``: its "Downloading and preparing" text and bars describe a download)."""
    if console.debug_enabled():
        tfds.enable_progress_bar()
        builder.download_and_prepare()
        return
    count = sum(builder.expected_split_sizes().values())
    seconds = max(1.0, count / spec.generated_per_s)
    about = f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
    print(
        f"Generating {spec.name} once into {builder.data_dir_root} ({count:,} images, about "
        f"{about} on 2 CPU cores); later runs reuse it",
        file=sys.stderr,
        flush=True,
    )
    tfds.disable_progress_bar()
    with contextlib.redirect_stdout(io.StringIO()):
        builder.download_and_prepare()


def _prepare_from_manual_dir(spec: DatasetSpec, builder, manual_dir) -> None:
    """Builds ``spec``'s dataset from the manual dir; a missing dir or missing files raise the
    dataset's :class:`DatasetNotPreparedError` (with the builder's reason chained)."""
    data_dir = os.fspath(builder.data_dir_root)
    config = tfds.download.DownloadConfig(
        manual_dir=None if manual_dir is None else os.fspath(manual_dir)
    )
    tfds.enable_progress_bar()
    try:
        builder.download_and_prepare(download_config=config)
    except FileNotFoundError as error:  # the builder: no data in the manual dir
        raise not_prepared_error(spec, data_dir, str(error)) from error
    except AssertionError as error:  # tfds: "Manual directory ... does not exist or is empty"
        if "Manual directory" not in str(error):
            raise
        detail = str(error).split(". ")[0]  # the rest repeats the download instructions
        raise not_prepared_error(spec, data_dir, detail) from error
