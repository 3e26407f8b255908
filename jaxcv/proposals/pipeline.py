"""The external proposals a config's input pipeline joins (R-CNN, Fast R-CNN).

Selective-search proposals are computed once per split and cached
(:func:`jaxcv.proposals.cache.split_proposals`), padded to a fixed count ``P`` per image
(:class:`jaxcv.proposals.table.ProposalTable`) and joined onto the examples by position by
:func:`jaxcv.data.make_pipeline` (``proposals=``, :mod:`jaxcv.data.proposals`).

A config opts in with a ``proposals`` section, read only by :func:`proposal_table`::

    config.proposals.mode = "fast"          # selective-search mode
    config.proposals.num_train = 2000       # P in training batches
    config.proposals.num_test = 2000        # P in evaluation batches
                                            # (num_train = 0: none in training batches)
    config.proposals.cache_dir = None       # default: <data_dir>/jaxcv_proposals

Splits are a split name with an optional prefix slice, ``"train"`` or ``"train[:1500]"``
(proposals are then computed for the first 1,500 images only), or a ``+`` of them
(``"train+validation"``). :func:`precompute` fills the same caches ahead of training
(``jaxcv data proposals``, :mod:`jaxcv.cli`).
"""

from __future__ import annotations

from jaxcv.proposals.cache import dataset_proposals, split_proposals
from jaxcv.proposals.table import ProposalTable, concatenate


def proposal_table(config, split: str, *, train: bool) -> ProposalTable | None:
    """The proposals a config's pipeline on ``split`` joins, or None without a
    ``config.proposals`` section (the hook of the train loop and the eval pipeline).

    ``P`` is ``num_train`` or ``num_test`` by ``train``; a ``P`` of 0 joins none (a task that
    uses proposals at test time only, :mod:`jaxcv.tasks.proposal_segmentation`). The cache is
    ``cache_dir``, else :func:`jaxcv.proposals.cache.default_cache_dir` of
    ``config.data.data_dir``.
    """
    section = config.get("proposals", None)
    if section is None:
        return None
    num = int(section.num_train if train else section.num_test)
    if num == 0:
        return None
    parts = [
        split_proposals(
            config.data.name,
            part,
            num,
            mode=section.get("mode", "fast"),
            data_dir=config.data.data_dir,
            cache_dir=section.get("cache_dir", None),
        )
        for part in split.split("+")  # "train+validation": tfds reads the parts in order
    ]
    return parts[0] if len(parts) == 1 else concatenate(parts)


def precompute(name: str, splits: dict[str, int | None], **kwargs) -> dict[str, int]:
    """Fill the proposal caches of ``splits`` (``{"train": 1500, "test": None}``, image counts);
    returns the number of images per split. ``kwargs``: ``mode``, ``data_dir``, ``cache_dir``
    (default :func:`jaxcv.proposals.cache.default_cache_dir` of ``data_dir``, where
    :func:`proposal_table` looks)."""
    return {
        split: len(dataset_proposals(name, split, num_images=count, **kwargs))
        for split, count in splits.items()
    }
