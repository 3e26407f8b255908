"""Conventions shared by every part of jaxcv.

Boxes are ``(..., 4)`` float32 ``xyxy`` in absolute pixels of the network input, everywhere;
conversions to other formats live only in :mod:`jaxcv.ops.boxes`.

Images are NHWC float32, normalised by the input pipeline.

A batch is a dict with (a subset of) these keys:

==============  ===================  ======================================================
key             shape / dtype        meaning
==============  ===================  ======================================================
image           (B, H, W, 3) f32     normalised pixels
label           (B,) int32           image-level class
boxes           (B, M, 4) f32        ground-truth boxes, xyxy pixels, padded to M objects
classes         (B, M) int32         object classes, 0 = background (padding)
valid           (B, M) bool          which of the M objects are real
masks           (B, M, H, W) uint8   instance masks
ignore          (B, M) bool          objects left out of evaluation (VOC difficult, COCO crowd)
segmentation    (B, H, W) int32      semantic labels, ``IGNORE_LABEL`` (255) = no label
original_size   (B, 2) int32         ``(H, W)`` of the image before resizing
example_valid   (B,) bool            False on the padding rows of a last evaluation batch
==============  ===================  ======================================================
"""

from typing import Final

IMAGE: Final = "image"
LABEL: Final = "label"
BOXES: Final = "boxes"
CLASSES: Final = "classes"
VALID: Final = "valid"
MASKS: Final = "masks"
SEGMENTATION: Final = "segmentation"
IGNORE: Final = "ignore"
ORIGINAL_SIZE: Final = "original_size"
EXAMPLE_VALID: Final = "example_valid"
#: External proposals (R-CNN, Fast R-CNN): ``(B, P, 4)`` f32 xyxy pixels and ``(B, P)`` bool.
PROPOSALS: Final = "proposals"
PROPOSAL_VALID: Final = "proposal_valid"
#: The per-pixel argmax of a segmentation task's outputs, ``(B, H, W)`` int32.
PRED_SEGMENTATION: Final = "pred_segmentation"

BATCH_KEYS: Final = (
    IMAGE,
    LABEL,
    BOXES,
    CLASSES,
    VALID,
    MASKS,
    IGNORE,
    SEGMENTATION,
    ORIGINAL_SIZE,
    EXAMPLE_VALID,
)
#: The per-pixel label of ``segmentation`` that takes no part in the loss or the metrics.
IGNORE_LABEL: Final = 255
BACKGROUND: Final = 0
