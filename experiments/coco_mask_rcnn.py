"""Mask R-CNN with a ResNet-50 C4 trunk on COCO 2017 instance masks (He et al. 2017 settings).

Command:   jaxcv train coco_mask_rcnn --workdir runs/coco_mask_rcnn --set data.data_dir=DIR
           (needs tfds' `coco/2017_panoptic` in DIR: `tfds build coco/2017_panoptic --data_dir
           DIR` on a machine with network; jaxcv reads the instance masks of the 80 "thing"
           classes from its panoptic PNGs, see jaxcv.data.registry)
Hardware:  8 GPUs/TPU cores (batch 16 of 768x1024 images through ResNet-50); only
           smoke-tested here, on tfds mock data for a few steps (no real-data figure is
           claimed). The paper reports mask AP 30.3 / box AP 32.7 for ResNet-50-C4 on
           test-dev with ImageNet pre-training.

Settings as in the paper and Detectron's R-50-C4 1x schedule:

* backbone ResNet-50 up to ``layer3`` (C4, stride 16, 1024 channels); RPN on C4 with anchors of
  32..512 pixels x aspect ratios 0.5, 1, 2 (15 per position);
* input: the paper rescales the shorter side to 800 pixels; shapes are static under jit, so
  every image is resized to a fixed 768x1024 (COCO's typical 3:4); detections and masks are
  evaluated at that size;
* RPN: 256 sampled anchors per image, IoU >= 0.7 / < 0.3; proposals 12,000 -> 2,000 in
  training, 6,000 -> 1,000 at test time (NMS 0.7);
* RoI head: 512 RoIs per image, 25% foreground; box head of two 1024-wide FC layers on 7x7 RoI
  align (torchvision's TwoMLPHead, where the paper's C4 head runs ``res5``);
* mask branch: 14x14 RoI align, four 3x3 convs of 256, a 2x2 transposed conv to 28x28, one
  sigmoid mask per class, trained on every foreground RoI (at most 128 per image);
* SGD, momentum 0.9, weight decay 1e-4, learning rate 0.02 for batch 16 with 1,000 warm-up
  steps, 90k iterations, divided by 10 at 60k and 80k; horizontal flips.

Differences from the paper, on purpose: no ImageNet initialisation is available offline, so
the trunk starts from scratch (with pre-trained weights, start it with `model.init_from`);
instance masks come from the panoptic annotations (non-overlapping segments, crowds dropped:
see jaxcv.data.registry), so AP is not exactly the official instances' AP.
"""

import ml_collections

from . import bases, shapes_mask_rcnn


def get_config() -> ml_collections.ConfigDict:
    """The coco_mask_rcnn config: shapes_mask_rcnn at COCO scale (see the module docstring)."""
    config = shapes_mask_rcnn.get_config()
    config.name = "coco_mask_rcnn"
    config.data.update(
        name="coco/2017_panoptic",
        batch_size=16,
        eval_batch_size=8,
        image_size=(768, 1024),
        max_objects=100,
        eval_split="validation",
        test_split=None,  # test2017 has no labels
    )

    model = config.model  # num_classes None: the 80 thing classes, from the dataset
    for key in ("backbone_widths", "backbone_depth", "backbone_norm"):  # the "small" trunk's
        del model[key]
    model.update(
        backbone="resnet50",
        anchor_sizes=(32.0, 64.0, 128.0, 256.0, 512.0),
        representation_size=1024,
        mask_channels=256,
        init_fresh=[],
    )
    config.detection.update(
        rpn_pre_nms_top_n_train=12000,
        rpn_post_nms_top_n_train=2000,
        rpn_pre_nms_top_n_test=6000,
        rpn_post_nms_top_n_test=1000,
        roi_batch_size_per_image=512,
        detections_per_image=100,
    )
    config.mask.mask_rois_per_image = 128

    config.optimizer = bases.sgd(
        0.02, weight_decay=1e-4, warmup_steps=1000, schedule="step", boundaries=(60000, 80000)
    )
    config.train.update(
        num_steps=90000,
        log_every=100,
        eval_every=10000,
        checkpoint_every=2000,
        best_metric=None,  # a fixed schedule, the final model on val2017 (no labelled test)
    )
    return config
