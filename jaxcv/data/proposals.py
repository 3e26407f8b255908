"""External proposals joined onto the examples of a tf.data pipeline (R-CNN, Fast R-CNN).

The proposals of a split come as a table with one row per example, in split order
(:class:`jaxcv.proposals.table.ProposalTable`; :func:`jaxcv.proposals.pipeline.proposal_table`
builds it from a config). :func:`join_proposals` zips those rows with the decoded examples *by
their position in the split*, before any caching, shuffling or augmentation (see
:func:`jaxcv.data.pipeline.make_pipeline`), so each example carries its own proposals through
the shuffle buffer. The geometric transforms of :mod:`jaxcv.data.transforms` (resize,
horizontal flip) move them like the ground-truth boxes; :func:`mask_padding` then zeroes the
padding rows again.

Keys added to each example: ``proposals (P, 4)`` float32 ``xyxy`` pixels and
``proposal_valid (P,)`` bool (:mod:`jaxcv.types`). This module reads only the table's
``boxes (I, P, 4)`` and ``valid (I, P)`` arrays, so :mod:`jaxcv.data` imports nothing of
:mod:`jaxcv.proposals` (which reads datasets through :mod:`jaxcv.data`).
"""

from __future__ import annotations

import tensorflow as tf

from jaxcv.types import PROPOSAL_VALID, PROPOSALS


def join_proposals(ds: tf.data.Dataset, table) -> tf.data.Dataset:
    """Zip the examples of ``ds`` (unbatched dicts, in split order) with ``table``'s rows.

    Args:
      ds: decoded examples of a split, in split order.
      table: a :class:`jaxcv.proposals.table.ProposalTable` (``boxes (I, P, 4)`` float32,
        ``valid (I, P)`` bool, ``len(table) == I``).

    Returns:
      The examples, each with ``proposals (P, 4)`` float32 and ``proposal_valid (P,)`` bool.

    Raises:
      ValueError: the split and the table have different (known) lengths.
    """
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
    """Zero the padded proposal rows of an example (after the transforms moved them)."""
    if PROPOSALS not in example:
        return example
    valid = example[PROPOSAL_VALID]
    boxes = tf.where(valid[:, None], example[PROPOSALS], tf.zeros_like(example[PROPOSALS]))
    return {**example, PROPOSALS: boxes}
