"""External proposals in the tf.data input pipeline (R-CNN, Fast R-CNN).

Selective-search proposals are computed once per split (:func:`jaxcv.proposals.dataset_proposals`,
cached ``.npz``), padded to a fixed count ``P`` (best-ranked first, :func:`pad_proposals`) and
joined to the examples *by their position in the split*: the proposal rows are a
``tf.data.Dataset`` zipped with the decoded examples before any caching, shuffling or
augmentation (:func:`join_proposals`, called by :func:`jaxcv.data.make_pipeline`), so each
example carries its own proposals through the shuffle buffer. The geometric transforms of
:mod:`jaxcv.data.transforms` (resize, horizontal flip) move them like the ground-truth boxes.

Batch keys added: ``proposals (B, P, 4)`` float32 ``xyxy`` pixels of the network input and
``proposal_valid (B, P)`` bool (padding rows are zero boxes).

A config opts in with a ``proposals`` section (:func:`proposal_table` reads it)::

    config.proposals.mode = "fast"          # selective-search mode
    config.proposals.num_train = 2000       # P in training batches
    config.proposals.num_test = 2000        # P in evaluation batches
    config.proposals.cache_dir = None       # default: <data_dir>/jaxcv_proposals

Splits are a split name with an optional prefix slice, ``"train"`` or ``"train[:1500]"``
(proposals are then computed for the first 1,500 images only), or a ``+`` of them
(``"train+validation"``).
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

from jaxcv.types import PROPOSAL_VALID, PROPOSALS

_SPLIT = re.compile(r"^(?P<name>[A-Za-z0-9_\-]+)(\[:(?P<count>\d+)\])?$")


@dataclasses.dataclass(frozen=True)
class ProposalTable:
    """Fixed-count proposals of every image of a split, in split order.

    Attributes:
      boxes: ``(I, P, 4)`` float32 ``xyxy`` pixels of the stored image (zero rows = padding).
      valid: ``(I, P)`` bool.
    """

    boxes: np.ndarray
    valid: np.ndarray

    def __post_init__(self):
        if self.boxes.ndim != 3 or self.boxes.shape[-1] != 4:
            raise ValueError(f"boxes must be (I, P, 4); got shape {self.boxes.shape}")
        if self.valid.shape != self.boxes.shape[:2]:
            raise ValueError(
                f"valid must be (I, P) = {self.boxes.shape[:2]}; got {self.valid.shape}"
            )

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def num_proposals(self) -> int:
        """``P``."""
        return int(self.boxes.shape[1])


def parse_split(split: str) -> tuple[str, int | None]:
    """``"train" -> ("train", None)``, ``"train[:1500]" -> ("train", 1500)``.

    Raises:
      ValueError: any other slice form (proposals are cached per split prefix).
    """
    match = _SPLIT.match(split.strip())
    if match is None:
        raise ValueError(
            f"split {split!r} is not supported with external proposals: use a split name with "
            "an optional prefix slice, e.g. 'train' or 'train[:1500]'"
        )
    count = match.group("count")
    return match.group("name"), None if count is None else int(count)


def pad_proposals(proposals: list[np.ndarray], num_proposals: int) -> ProposalTable:
    """The first ``num_proposals`` boxes of each image, zero-padded, with a valid mask.

    Args:
      proposals: per image ``i``, ``(N_i, 4)`` xyxy boxes, best-ranked first.
      num_proposals: ``P``.

    Returns:
      A :class:`ProposalTable` of ``I = len(proposals)`` rows.
    """
    if num_proposals < 1:
        raise ValueError(f"num_proposals must be >= 1; got {num_proposals}")
    boxes = np.zeros((len(proposals), num_proposals, 4), np.float32)
    valid = np.zeros((len(proposals), num_proposals), bool)
    for i, p in enumerate(proposals):
        p = np.asarray(p, np.float32).reshape(-1, 4)[:num_proposals]
        boxes[i, : len(p)] = p
        valid[i, : len(p)] = True
    return ProposalTable(boxes, valid)


def _cache_dir(section, data_dir) -> str | None:
    cache_dir = section.get("cache_dir", None)
    if cache_dir is None and data_dir is not None:
        cache_dir = os.path.join(os.fspath(data_dir), "jaxcv_proposals")
    return cache_dir


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
    ``num_proposals`` (computed on first use, with a progress bar)."""
    from jaxcv.data import get_info
    from jaxcv.proposals.cache import dataset_proposals, default_cache_path

    split_name, count = parse_split(split)
    if count is not None:
        # A prefix of a split whose whole cache exists is read from that cache.
        total = get_info(name, data_dir).splits.get(split_name)
        whole = (
            None
            if total is None
            else default_cache_path(name, split_name, mode, total, None, cache_dir=cache_dir)
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


def _concatenate(tables: list[ProposalTable]) -> ProposalTable:
    return ProposalTable(
        np.concatenate([t.boxes for t in tables]), np.concatenate([t.valid for t in tables])
    )


def proposal_table(config, split: str, *, train: bool) -> ProposalTable | None:
    """The proposals a config's pipeline on ``split`` joins, or None without a
    ``config.proposals`` section (the hook of the train loop and the eval pipeline)."""
    section = config.get("proposals", None)
    if section is None:
        return None
    parts = [
        split_proposals(
            config.data.name,
            part,
            int(section.num_train if train else section.num_test),
            mode=section.get("mode", "fast"),
            data_dir=config.data.data_dir,
            cache_dir=_cache_dir(section, config.data.data_dir),
        )
        for part in split.split("+")  # "train+validation": tfds reads the parts in order
    ]
    return parts[0] if len(parts) == 1 else _concatenate(parts)


def join_proposals(ds, table: ProposalTable):
    """Zip the examples of ``ds`` (unbatched dicts, in split order) with ``table``'s rows.

    Each example gets ``proposals (P, 4)`` float32 and ``proposal_valid (P,)`` bool.

    Raises:
      ValueError: the split and the table have different (known) lengths.
    """
    import tensorflow as tf

    cardinality = int(ds.cardinality())
    if cardinality >= 0 and cardinality != len(table):
        raise ValueError(
            f"the split has {cardinality} examples but the proposal table {len(table)} rows"
        )
    rows = tf.data.Dataset.from_tensor_slices((table.boxes, table.valid))

    def merge(example, row):
        return {**example, PROPOSALS: row[0], PROPOSAL_VALID: row[1]}

    return tf.data.Dataset.zip(ds, rows).map(merge)


def mask_padding(example: dict) -> dict:
    """Zero the padded proposal rows (after transforms moved them)."""
    import tensorflow as tf

    if PROPOSALS not in example:
        return example
    valid = example[PROPOSAL_VALID]
    boxes = tf.where(valid[:, None], example[PROPOSALS], tf.zeros_like(example[PROPOSALS]))
    return {**example, PROPOSALS: boxes}


def precompute(name: str, splits: dict[str, int | None], **kwargs) -> dict[str, int]:
    """Fill the proposal caches of ``splits`` (``{"train": 1500, "test": None}``, image counts);
    returns the number of images per split. ``kwargs``: ``mode``, ``data_dir``, ``cache_dir``."""
    from jaxcv.proposals.cache import dataset_proposals

    return {
        split: len(dataset_proposals(name, split, num_images=count, **kwargs))
        for split, count in splits.items()
    }
