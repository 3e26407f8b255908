"""Selective search object proposals (R-CNN's external proposals), host-side NumPy.

Example::

    from jaxcv import proposals
    boxes = proposals.selective_search(image_uint8, mode="fast")  # (N, 4) float32 xyxy
    props = proposals.dataset_proposals("shapes/multi", "test", num_images=50)  # cached
    gt = [ex["boxes"] for ex in proposals.raw_examples("shapes/multi", "test", num_images=50)]
    recall = proposals.proposal_recall(props, gt, iou_threshold=0.5)

Modules: :mod:`~jaxcv.proposals.features` (colour spaces, histograms),
:mod:`~jaxcv.proposals.felzenszwalb` (the initial segmentation),
:mod:`~jaxcv.proposals.similarity`, :mod:`~jaxcv.proposals.grouping` (hierarchical grouping),
:mod:`~jaxcv.proposals.selective_search` (strategies, ranking), :mod:`~jaxcv.proposals.cache`
(whole datasets, on-disk cache), :mod:`~jaxcv.proposals.table` (fixed-count tables of a split),
:mod:`~jaxcv.proposals.pipeline` (a config's ``proposals`` section) and
:mod:`~jaxcv.proposals.metrics` (recall, MABO). The sequential loops (Felzenszwalb's
union-find, the grouping's merges, per-pixel binning) are numba kernels in
:mod:`~jaxcv.proposals._compiled`, imported on first use.
"""

from jaxcv.proposals.cache import (
    compute_proposals,
    dataset_proposals,
    default_cache_dir,
    default_cache_path,
    raw_examples,
)
from jaxcv.proposals.metrics import best_overlaps, mean_best_overlap, proposal_recall
from jaxcv.proposals.selective_search import MODES, Strategy, selective_search

__all__ = [
    "MODES",
    "Strategy",
    "best_overlaps",
    "compute_proposals",
    "dataset_proposals",
    "default_cache_dir",
    "default_cache_path",
    "mean_best_overlap",
    "proposal_recall",
    "raw_examples",
    "selective_search",
]
