"""Fixed-count proposal tables: one row of ``P`` boxes per image of a split, in split order.

Selective search gives each image its own number of boxes; a training batch needs a fixed
``P``. :func:`pad_proposals` keeps the ``P`` best-ranked boxes of each image and zero-pads the
rest, with a ``valid`` mask. The input pipeline joins the rows onto the examples by position
(:func:`jaxcv.data.proposals.join_proposals`). NumPy only.

Splits with proposals are a split name with an optional prefix slice, ``"train"`` or
``"train[:1500]"`` (:func:`parse_split`): proposals are cached per split prefix
(:mod:`jaxcv.proposals.cache`).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

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


def concatenate(tables: list[ProposalTable]) -> ProposalTable:
    """The rows of ``tables`` one after the other (e.g. ``"train+validation"``)."""
    return ProposalTable(
        np.concatenate([t.boxes for t in tables]), np.concatenate([t.valid for t in tables])
    )
