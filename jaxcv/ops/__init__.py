"""Pure, jit-able array ops for detection and segmentation (no Flax, no tf).

Boxes are ``(..., 4)`` float32 ``xyxy`` in absolute pixels everywhere. Every op has static
output shapes (padded results come with a ``valid`` mask), checks ranks on entry and raises
``ValueError`` naming the shape it received.
"""

from jaxcv.ops.anchors import (
    base_anchors,
    make_anchors,
    make_anchors_numpy,
    num_anchors_per_location,
)
from jaxcv.ops.boxes import (
    DEFAULT_SCALE_CLAMP,
    box_area,
    box_iou,
    clip_boxes,
    cxcywh_to_xyxy,
    decode_boxes,
    elementwise_box_intersection,
    elementwise_box_iou,
    encode_boxes,
    small_boxes_mask,
    xywh_to_xyxy,
    xyxy_to_cxcywh,
    xyxy_to_xywh,
)
from jaxcv.ops.losses import (
    kl_divergence_standard_normal,
    sigmoid_binary_cross_entropy,
    smooth_l1,
    softmax_cross_entropy,
)
from jaxcv.ops.masks import crop_masks_to_rois, paste_masks_in_image
from jaxcv.ops.matching import MatchLabel, indices_to_mask, match_boxes, sample_balanced
from jaxcv.ops.nms import batched_nms, nms
from jaxcv.ops.roi_align import roi_align
from jaxcv.ops.roi_pool import roi_pool

__all__ = [
    "DEFAULT_SCALE_CLAMP",
    "MatchLabel",
    "base_anchors",
    "batched_nms",
    "box_area",
    "box_iou",
    "clip_boxes",
    "crop_masks_to_rois",
    "cxcywh_to_xyxy",
    "decode_boxes",
    "elementwise_box_intersection",
    "elementwise_box_iou",
    "encode_boxes",
    "indices_to_mask",
    "kl_divergence_standard_normal",
    "make_anchors",
    "make_anchors_numpy",
    "match_boxes",
    "nms",
    "num_anchors_per_location",
    "paste_masks_in_image",
    "roi_align",
    "roi_pool",
    "sample_balanced",
    "sigmoid_binary_cross_entropy",
    "small_boxes_mask",
    "smooth_l1",
    "softmax_cross_entropy",
    "xywh_to_xyxy",
    "xyxy_to_cxcywh",
    "xyxy_to_xywh",
]
