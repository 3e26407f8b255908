"""Mask R-CNN with a ResNet-50 FPN on COCO 2017 instance masks: detectron2's R50-FPN 1x schedule.

Command:   jaxcv convert torchvision resnet50 resnet50-0676ba61.pth runs/r50_imagenet
           jaxcv train coco_mask_rcnn_r50_fpn_1x --workdir runs/coco_mrcnn_fpn \
               --set data.data_dir=DIR --set model.init_from=runs/r50_imagenet
           (needs tfds' `coco/2017_panoptic` in DIR: `tfds build coco/2017_panoptic --data_dir
           DIR` on a machine with network; jaxcv reads the instance masks of the 80 "thing"
           classes from its panoptic PNGs, see jaxcv.data.registry)
Hardware:  8 GPUs/TPU cores (batch 16 of 800x1088 images through ResNet-50 + FPN); only
           smoke-tested here, on tfds mock data for two steps (no real-data figure is
           claimed). detectron2 reports box AP 38.6 / mask AP 35.2 on val2017 for this model
           and schedule (torchvision's COCO weights, trained 26 epochs: 37.9 / 34.6).

Everything of `coco_faster_rcnn_r50_fpn_1x` (input canvas, trunk, FPN, RPN, RoI sampling, box
head, optimizer, schedule, frozen trunk layers) plus torchvision's ``maskrcnn_resnet50_fpn``
mask branch (model ``mask_rcnn_fpn``, jaxcv.models.mask_rcnn_fpn): 14x14 multi-scale RoI align
(each RoI from its own level), four 3x3 convs of 256, a 2x2 transposed conv to 28x28 and one
mask per class; the mask loss (jaxcv.tasks.mask_rcnn: per-pixel sigmoid cross-entropy of the
ground-truth class's mask, targets cropped from the instance masks by RoI align) on every
foreground sampled RoI (at most 128 per image); at test time masks of the 100 detections pasted
at the input size and thresholded at 0.5. Evaluation: COCO box and mask AP on val2017.

Differences, on purpose: the fixed 800x1088 canvas of the Faster R-CNN config; instance masks
come from the panoptic annotations (non-overlapping segments, crowds dropped: see
jaxcv.data.registry), so AP is not exactly the official instances' AP.
"""

import ml_collections

from . import coco_faster_rcnn_r50_fpn_1x


def get_config() -> ml_collections.ConfigDict:
    """The coco_mask_rcnn_r50_fpn_1x config (see the module docstring)."""
    config = coco_faster_rcnn_r50_fpn_1x.get_config()
    config.name = "coco_mask_rcnn_r50_fpn_1x"
    config.task = "mask_rcnn_fpn"
    config.data.name = "coco/2017_panoptic"
    config.model.name = "mask_rcnn_fpn"
    config.model.update(
        mask_roi_size=14,
        mask_sampling_ratio=2,
        mask_channels=256,
        mask_num_convs=4,
        mask_dim_reduced=256,
    )
    # Fields of jaxcv.tasks.mask_rcnn.MaskSettings.
    config.mask = ml_collections.ConfigDict(
        {"mask_rois_per_image": 128, "mask_loss_weight": 1.0, "mask_threshold": 0.5}
    )
    return config
