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

from jaxcv.experiments import load_config


def get_config() -> ml_collections.ConfigDict:
    """The coco_mask_rcnn config (see the module docstring)."""
    config = load_config("shapes_mask_rcnn")
    config.name = "coco_mask_rcnn"

    config.data.name = "coco/2017_panoptic"
    config.data.batch_size = 16
    config.data.eval_batch_size = 8
    config.data.image_size = (768, 1024)
    config.data.max_objects = 100
    config.data.train_split = "train"
    config.data.eval_split = "validation"

    model = config.model
    model.num_classes = None  # 80 thing classes, from the dataset
    model.backbone = "resnet50"
    for key in ("backbone_widths", "backbone_depth", "backbone_norm"):  # the "small" trunk's
        del model[key]
    model.anchor_sizes = (32.0, 64.0, 128.0, 256.0, 512.0)
    model.aspect_ratios = (0.5, 1.0, 2.0)
    model.roi_size = 7
    model.representation_size = 1024
    model.mask_roi_size = 14
    model.mask_channels = 256
    model.mask_num_convs = 4
    model.init_fresh = []

    detection = config.detection
    detection.rpn_batch_size_per_image = 256
    detection.rpn_pre_nms_top_n_train = 12000
    detection.rpn_post_nms_top_n_train = 2000
    detection.rpn_pre_nms_top_n_test = 6000
    detection.rpn_post_nms_top_n_test = 1000
    detection.roi_batch_size_per_image = 512
    detection.roi_positive_fraction = 0.25
    detection.box_score_threshold = 0.05
    detection.box_nms_threshold = 0.5
    detection.detections_per_image = 100
    config.mask.mask_rois_per_image = 128

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.02
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = False
    config.optimizer.weight_decay = 1e-4
    config.optimizer.schedule = "step"
    config.optimizer.boundaries = (60000, 80000)
    config.optimizer.decay_factor = 0.1
    config.optimizer.warmup_steps = 1000
    config.optimizer.grad_clip_norm = None
    config.optimizer.freeze = []

    config.train.num_steps = 90000
    config.train.log_every = 100
    config.train.eval_every = 10000
    config.train.checkpoint_every = 2000
    config.train.keep_checkpoints = 2
    config.train.best_metric = "validation/mask_AP"
    config.train.best_mode = "max"
    return config
