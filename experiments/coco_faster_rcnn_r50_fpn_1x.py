"""Faster R-CNN with a ResNet-50 FPN on COCO 2017 boxes: detectron2's R50-FPN 1x schedule.

Command:   jaxcv convert torchvision resnet50 resnet50-0676ba61.pth runs/r50_imagenet
           jaxcv train coco_faster_rcnn_r50_fpn_1x --workdir runs/coco_frcnn_fpn \
               --set data.data_dir=DIR --set model.init_from=runs/r50_imagenet
           (needs tfds' `coco/2017` in DIR: `tfds build coco/2017 --data_dir DIR` on a machine
           with network; the ImageNet ResNet-50 is torchvision's IMAGENET1K_V1 checkpoint)
Hardware:  8 GPUs/TPU cores (batch 16 of 800x1088 images through ResNet-50 + FPN); only
           smoke-tested here, on tfds mock data for two steps (no real-data figure is
           claimed). detectron2 reports box AP 37.9 on val2017 for this model and schedule
           (torchvision's COCO weights, trained 26 epochs: 37.0).

Fine-tuning a converted COCO detector on another dataset (another number of classes) instead:
`jaxcv convert torchvision fasterrcnn_resnet50_fpn COCO.pth runs/frcnn_coco`, then
`--set model.init_from=runs/frcnn_coco` with the user's data section: everything is loaded but
the class-dependent predictor (``cls_score``, ``bbox_pred``: K + 1 and 4 (K + 1) outputs, so
jaxcv.train.init_from sees them as new heads), which starts fresh
(tests/test_faster_rcnn_fpn_train.py).

Settings as torchvision's ``fasterrcnn_resnet50_fpn`` and detectron2's
``faster_rcnn_R_50_FPN_1x``:

* model: ``faster_rcnn_fpn`` (jaxcv.models.faster_rcnn_fpn), ResNet-50 with frozen BatchNorm,
  FPN levels P2-P5 plus the max-pooled P6, a shared RPN head, 7x7 multi-scale RoI align and
  the two-MLP (1024) box head; anchors of 32, 64, 128, 256, 512 pixels (one size per level) x
  aspect ratios 0.5, 1, 2;
* RPN: 256 sampled anchors per image (at most half positive), IoU >= 0.7 / < 0.3 over the
  anchors of all levels; training proposals: the top 2,000 anchors per level, NMS 0.7, the
  best 2,000 per image (test: 1,000 / 1,000);
* RoI head: 512 sampled RoIs per image, at most 25% foreground (IoU >= 0.5), the ground truth
  among the candidates; test: scores > 0.05, class-wise NMS 0.5, 100 detections per image;
* SGD, momentum 0.9, weight decay 1e-4 on every trained parameter (torchvision and detectron2
  decay the biases too), learning rate 0.02 for batch 16 with a 1,000-step linear warm-up,
  90k iterations, divided by 10 at 60k and 80k; horizontal flips; the stem, ``layer1`` and
  every BatchNorm of the ResNet frozen (detectron2's ``FREEZE_AT=2`` with
  ``FrozenBatchNorm2d``, torchvision's ``trainable_backbone_layers=3``).

Differences, on purpose: shapes are static under jit, so every image is resized to one
800x1088 canvas (a multiple of 32; COCO's 3:4 photos are stretched by 2% horizontally), not
to a short side of 800 with the aspect ratio kept and each batch padded to its largest image;
detections are evaluated at that size and mapped back to the original image. Crowd boxes are
evaluation ``ignore`` regions and no training target (as torchvision's COCO reference).
"""

import ml_collections

from . import bases

#: The ResNet's frozen parameters: the stem, ``layer1`` and every BatchNorm's scale and bias.
FROZEN_TRUNK = (
    r"^backbone/body/(conv1|bn1)/",
    r"^backbone/body/layer1/",
    r"^backbone/body/.*bn\d*/(scale|bias)$",
)


def get_config() -> ml_collections.ConfigDict:
    """The coco_faster_rcnn_r50_fpn_1x config (see the module docstring)."""
    config = bases.experiment("coco_faster_rcnn_r50_fpn_1x", "faster_rcnn_fpn")
    config.data = bases.data(
        "coco/2017",
        batch_size=16,
        eval_batch_size=8,
        image_size=(800, 1088),
        augment=True,
        max_objects=100,
        eval_split="validation",
        test_split=None,  # test2017 has no labels
    )
    config.model = ml_collections.ConfigDict(
        {
            "name": "faster_rcnn_fpn",
            "num_classes": None,  # the 80 COCO classes, from the dataset
            "depth": 50,
            "num_anchors": 3,
            "roi_size": 7,
            "sampling_ratio": 2,
            "representation_size": 1024,
            "frozen_batch_norm": True,
            "dtype": "float32",
            "init_from": None,  # the converted ImageNet ResNet-50 (see the command above)
            "init_fresh": [],
        }
    )
    # Fields of jaxcv.tasks.faster_rcnn.FasterRCNNSettings ("per level": tasks/faster_rcnn_fpn.py).
    config.detection = ml_collections.ConfigDict(
        {
            "rpn_batch_size_per_image": 256,
            "rpn_positive_fraction": 0.5,
            "rpn_fg_iou": 0.7,
            "rpn_bg_iou": 0.3,
            "rpn_pre_nms_top_n_train": 2000,  # per level
            "rpn_post_nms_top_n_train": 2000,
            "rpn_pre_nms_top_n_test": 1000,  # per level
            "rpn_post_nms_top_n_test": 1000,
            "rpn_nms_threshold": 0.7,
            "roi_batch_size_per_image": 512,
            "roi_positive_fraction": 0.25,
            "box_score_threshold": 0.05,
            "box_nms_threshold": 0.5,
            "detections_per_image": 100,
        }
    )
    config.optimizer = bases.sgd(
        0.02, weight_decay=1e-4, warmup_steps=1000, schedule="step", boundaries=(60000, 80000)
    )
    config.optimizer.decay_all_params = True
    config.optimizer.freeze = list(FROZEN_TRUNK)
    config.train = bases.train(
        num_steps=90000,
        log_every=100,
        eval_every=10000,
        checkpoint_every=2000,
        best_metric=None,  # a fixed schedule, the final model on val2017 (no labelled test)
    )
    return config
