"""Proposals for a whole dataset: computed once (with a progress bar), cached on disk, reused.

A cache file is an ``.npz`` holding all boxes concatenated (``boxes (sum N_i, 4)`` float32),
per-image offsets (``offsets (I + 1,)`` int64) and a JSON ``meta`` record of the settings
(mode, max_proposals, min_size, seed, image count). A file whose settings differ from the
request, or that cannot be read, is recomputed and replaced atomically (written to a temporary
file, then renamed), so an interrupted run never leaves a half-written cache behind.

Cache files live in :func:`default_cache_dir` (``<data dir>/jaxcv_proposals``) unless a
``cache_dir`` is given; :func:`split_proposals` looks up the padded
:class:`~jaxcv.proposals.table.ProposalTable` of a split there (computing it on first use).

:mod:`jaxcv.data` (TensorFlow) is imported inside the functions that read datasets, so that
``import jaxcv.proposals`` (selective search, NumPy) does not load TensorFlow.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
from tqdm.auto import tqdm

from jaxcv.proposals.selective_search import DEFAULT_MIN_SIZE, Strategy, selective_search
from jaxcv.proposals.table import ProposalTable, pad_proposals, parse_split

_FORMAT = 1

#: The cache folder's name inside the data dir (:func:`default_cache_dir`).
CACHE_DIRNAME = "jaxcv_proposals"
#: The data dir when neither ``data_dir`` nor ``$JAXCV_DATA_DIR`` names one (tfds' default).
_TFDS_DEFAULT_DATA_DIR = "~/tensorflow_datasets"


def _mode_key(mode: str | tuple[Strategy, ...]) -> str:
    return mode if isinstance(mode, str) else repr(tuple(mode))


def _settings(mode, max_proposals, min_size, seed) -> dict:
    return {
        "format": _FORMAT,
        "mode": _mode_key(mode),
        "max_proposals": max_proposals,
        "min_size": int(min_size),
        "seed": int(seed),
    }


def _load(path: str, settings: dict, num_images: int | None) -> list[np.ndarray] | None:
    """The cached proposals at ``path`` if readable and made with ``settings``, else None."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"][()]))
            boxes, offsets = data["boxes"], data["offsets"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        warnings.warn(f"ignoring unreadable proposal cache {path}: {error}", stacklevel=3)
        return None
    cached_count = meta.pop("num_images", None)
    if meta != settings or (num_images is not None and cached_count != num_images):
        warnings.warn(
            f"proposal cache {path} was made with {meta} for {cached_count} images; recomputing "
            f"for {settings}" + (f" and {num_images} images" if num_images is not None else ""),
            stacklevel=3,
        )
        return None
    return [boxes[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def _save(path: str, proposals: list[np.ndarray], settings: dict) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    counts = np.array([len(p) for p in proposals], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    boxes = np.concatenate([np.zeros((0, 4), np.float32), *proposals]).astype(np.float32)
    meta = json.dumps({**settings, "num_images": len(proposals)})
    fd, tmp = tempfile.mkstemp(prefix=".proposals-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, boxes=boxes, offsets=offsets, meta=np.array(meta))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def compute_proposals(
    images: Iterable[np.ndarray] | Iterable[Mapping[str, np.ndarray]],
    cache_path: str | os.PathLike | None = None,
    *,
    mode: str | tuple[Strategy, ...] = "fast",
    max_proposals: int | None = None,
    min_size: int = DEFAULT_MIN_SIZE,
    seed: int = 0,
    num_images: int | None = None,
    desc: str = "selective search",
) -> list[np.ndarray]:
    """Selective-search proposals of every image, cached in ``cache_path``.

    When ``cache_path`` holds proposals made with the same settings (and, if ``num_images``
    is given, for that many images), they are returned and ``images`` is never iterated.
    Otherwise each image goes through :func:`~jaxcv.proposals.selective_search` (with a tqdm
    progress bar) and the result is written to ``cache_path`` before returning.

    Args:
      images: iterable of ``(H, W, 3)`` uint8 (or float ``[0, 1]``) RGB images, or of dicts
        with such an ``"image"`` (e.g. :func:`raw_examples`; not the normalised pipeline
        output).
      cache_path: ``.npz`` file; None computes without caching.
      mode, max_proposals, min_size, seed: passed to ``selective_search``.
      num_images: expected image count (progress-bar total and part of the cache check).
      desc: progress-bar label.

    Returns:
      Per image ``i``, an ``(N_i, 4)`` float32 xyxy pixel box array, best-ranked first.

    Raises:
      ValueError: an image of the wrong shape/dtype, or ``num_images`` differing from the
        number of images iterated.
    """
    settings = _settings(mode, max_proposals, min_size, seed)
    path = None if cache_path is None else os.fspath(cache_path)
    if path is not None:
        cached = _load(path, settings, num_images)
        if cached is not None:
            return cached
    proposals = []
    for item in tqdm(images, total=num_images, desc=desc, unit="img"):
        image = item["image"] if isinstance(item, Mapping) else item
        proposals.append(selective_search(image, mode, max_proposals, min_size, seed=seed))
    if num_images is not None and len(proposals) != num_images:
        raise ValueError(f"expected {num_images} images, got {len(proposals)}")
    if path is not None:
        _save(path, proposals, settings)
    return proposals


def raw_examples(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    num_images: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Raw examples of a jaxcv dataset split, in the order of an evaluation pipeline.

    Yields dicts with ``image (H, W, 3)`` uint8 as stored (not normalised or resized) and,
    for detection datasets, ``boxes (M, 4)`` float32 xyxy pixels and ``classes (M,)`` int32 in
    1..K. Built-in datasets are generated on first use.

    Args:
      name: a key of :data:`jaxcv.data.DATASETS`, e.g. ``"shapes/multi"``.
      split: a tfds split name, e.g. ``"test"``.
      data_dir: tfds data dir (default ``$JAXCV_DATA_DIR``, else tfds' default).
      num_images: only the first ``num_images`` examples.
    """
    import tensorflow_datasets as tfds

    from jaxcv import data
    from jaxcv.data.info import load_builder
    from jaxcv.data.registry import get_spec
    from jaxcv.types import BOXES, CLASSES, IMAGE

    spec = get_spec(name)
    if spec.builtin:
        data.prepare(name, data_dir)
    if num_images is not None:
        split = f"{split}[:{int(num_images)}]"
    ds = load_builder(spec, data_dir).as_dataset(split=split, shuffle_files=False)
    keys = [k for k in (IMAGE, BOXES, CLASSES) if k in spec.keys]
    ds = ds.map(lambda ex: {k: v for k, v in spec.to_example(ex).items() if k in keys})
    yield from tfds.as_numpy(ds)


def default_cache_dir(data_dir: str | os.PathLike | None = None) -> str:
    """``<data dir>/jaxcv_proposals``, the one place proposal caches go by default.

    The data dir is ``data_dir``, else ``$JAXCV_DATA_DIR``
    (:func:`jaxcv.data.info.resolve_data_dir`), else ``~/tensorflow_datasets``.
    """
    from jaxcv.data.info import resolve_data_dir

    root = resolve_data_dir(data_dir) or os.path.expanduser(_TFDS_DEFAULT_DATA_DIR)
    return os.path.join(root, CACHE_DIRNAME)


def default_cache_path(
    name: str,
    split: str,
    mode: str,
    num_images: int,
    max_proposals: int | None,
    *,
    cache_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
) -> str:
    """``CACHE_DIR/<name>-<split>-<mode>-n<count>-max<max>.npz`` (``/`` in names -> ``_``).

    ``cache_dir`` defaults to :func:`default_cache_dir` of ``data_dir``.
    """
    if cache_dir is None:
        cache_dir = default_cache_dir(data_dir)
    stem = f"{name}-{split}-{mode}-n{num_images}-max{max_proposals or 'all'}"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
    return os.path.join(os.fspath(cache_dir), f"{safe}.npz")


def dataset_proposals(
    name: str,
    split: str,
    *,
    mode: str = "fast",
    max_proposals: int | None = None,
    num_images: int | None = None,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    min_size: int = DEFAULT_MIN_SIZE,
    seed: int = 0,
) -> list[np.ndarray]:
    """Cached selective-search proposals of the raw images of a dataset split.

    The cache file is :func:`default_cache_path` (keyed by dataset, split, mode, image count
    and ``max_proposals``); proposals follow the split's order (that of
    ``make_pipeline(..., train=False)``).

    Args:
      name: a key of :data:`jaxcv.data.DATASETS`.
      split: a split name (no slicing: use ``num_images`` for the first images).
      mode, max_proposals, min_size, seed: passed to ``selective_search``.
      num_images: only the first ``num_images`` images (default: the whole split).
      data_dir: tfds data dir; cache_dir: see :func:`default_cache_path`.

    Returns:
      Per image, ``(N_i, 4)`` float32 xyxy pixel boxes.

    Raises:
      ValueError: unknown dataset or split.
    """
    from jaxcv.data import get_info

    splits = get_info(name, data_dir).splits
    if splits and split not in splits:
        raise ValueError(f"dataset {name!r} has no split {split!r}; splits: {list(splits)}")
    if split in splits:
        available = splits[split]
        count = available if num_images is None else min(int(num_images), available)
    elif num_images is not None:  # split sizes unknown (e.g. tfds mock data)
        count = int(num_images)
    else:
        count = sum(1 for _ in raw_examples(name, split, data_dir=data_dir))
    path = default_cache_path(
        name, split, mode, count, max_proposals, cache_dir=cache_dir, data_dir=data_dir
    )
    images = (ex["image"] for ex in raw_examples(name, split, data_dir=data_dir, num_images=count))
    return compute_proposals(
        images,
        path,
        mode=mode,
        max_proposals=max_proposals,
        min_size=min_size,
        seed=seed,
        num_images=count,
        desc=f"selective search {name} {split} ({mode})",
    )


def split_proposals(
    name: str,
    split: str,
    num_proposals: int,
    *,
    mode: str = "fast",
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> ProposalTable:
    """Cached selective-search proposals of ``split`` (``"test"``, ``"train[:1500]"``) padded to
    ``num_proposals`` (computed on first use, with a progress bar).

    A prefix ``"train[:1500]"`` of a split whose whole cache exists is read from that cache;
    otherwise the prefix has its own cache file. ``cache_dir``: see :func:`default_cache_path`.

    Raises:
      ValueError: a split that is no name with an optional prefix slice
        (:func:`jaxcv.proposals.table.parse_split`), or unknown.
    """
    from jaxcv.data import get_info

    split_name, count = parse_split(split)
    if count is not None:
        total = get_info(name, data_dir).splits.get(split_name)
        whole = (
            None
            if total is None
            else default_cache_path(
                name, split_name, mode, total, None, cache_dir=cache_dir, data_dir=data_dir
            )
        )
        if whole is not None and count <= total and os.path.exists(whole):
            boxes = dataset_proposals(
                name, split_name, mode=mode, data_dir=data_dir, cache_dir=cache_dir
            )
            return pad_proposals(boxes[:count], num_proposals)
    boxes = dataset_proposals(
        name, split_name, mode=mode, num_images=count, data_dir=data_dir, cache_dir=cache_dir
    )
    return pad_proposals(boxes, num_proposals)
