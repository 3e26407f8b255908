"""Fast R-CNN with the small stride-16 backbone on `shapes/multi`, on selective-search proposals.

Command:   jaxcv train shapes_fast_rcnn --workdir runs/shapes_fast_rcnn
Hardware:  2 CPU cores (shared), no GPU, no network.
Proposals: selective search "fast" mode (jaxcv.proposals), computed once for the first 2,000
           train images and the 1,000 test images and cached in
           <data_dir>/jaxcv_proposals (measured 0.35 s per 128x128 image on one idle core);
           the best-ranked 500 per image are used: recall of the test ground truth 1.000 at
           IoU 0.5 and 0.994 at 0.7 (train[:2000]: 1.000 / 0.995); 324 proposals per test
           image on average (40 to 1,145).
Expected:  measured with this config (700 steps of batch 4, 1.4 epochs of train[:2000], from
           scratch, on 2 heavily shared cores, 25 minutes wall including 2 minutes of
           compilation): test (1,000 images) VOC07 mAP@0.5 0.290, COCO AP 0.136 / AP50 0.267.
           Resumed to 1,400 steps (`--set train.num_steps=1400 --set train.eval_every=1400`
           on the same workdir; the cosine schedule then restarts from its midpoint at step
           700): mAP@0.5 0.386, COCO AP 0.189 / AP50 0.360. Time per test image: 0.046 s
           for the detector (500 proposals, batches of 50, CPU) plus selective search,
           0.35 s (one idle core) to 0.75 s (cores shared) per 128x128 image. Far from
           converged; shapes_faster_rcnn (1,200 steps of batch 8) reached 0.56.

The model follows the paper with the CPU-sized trunk of shapes_faster_rcnn: one conv pass per
image (four stages, stride 16, GroupNorm, an 8x8 map), RoI max pooling 7x7 of the proposals, a
two-layer 256-wide FC head with softmax over K + 1 classes and class-specific box regression,
the multi-task loss (lambda = 1, smooth-L1), 64 sampled RoIs per image with 25% foreground
(IoU >= 0.5; the ground-truth boxes join the candidates), trained end to end in one jitted
step from scratch; the augmentation is the horizontal flip. Test: every proposal is scored,
per-class NMS 0.3, 100 detections per image.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """The shapes_fast_rcnn config (see the module docstring)."""
    config = ml_collections.ConfigDict()
    config.name = "shapes_fast_rcnn"
    config.seed = 0
    config.task = "fast_rcnn"

    config.data = ml_collections.ConfigDict()
    config.data.name = "shapes/multi"
    config.data.data_dir = None
    config.data.batch_size = 4
    config.data.eval_batch_size = 50
    config.data.image_size = None
    config.data.augment = True
    config.data.max_objects = 8
    config.data.train_split = "train[:2000]"
    config.data.eval_split = "test"

    # External proposals joined to the batches (jaxcv.proposals.pipeline).
    config.proposals = ml_collections.ConfigDict()
    config.proposals.mode = "fast"
    config.proposals.num_train = 500
    config.proposals.num_test = 500
    config.proposals.cache_dir = None

    config.model = ml_collections.ConfigDict()
    config.model.name = "fast_rcnn"
    config.model.num_classes = None
    config.model.backbone = "small"
    config.model.backbone_widths = (32, 64, 96, 128)
    config.model.backbone_depth = 2
    config.model.backbone_norm = "group"
    config.model.roi_size = 7
    config.model.representation_size = 256
    config.model.dropout_rate = 0.0
    config.model.dtype = "float32"

    # Fields of jaxcv.tasks.fast_rcnn.ProposalDetectionSettings.
    config.detection = ml_collections.ConfigDict()
    config.detection.roi_batch_size_per_image = 64
    config.detection.roi_positive_fraction = 0.25
    config.detection.box_beta = 1.0
    config.detection.box_score_threshold = 0.05
    config.detection.box_nms_threshold = 0.3
    config.detection.detections_per_image = 100
    config.detection.test_chunk_size = 0

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.weight_decay = 1e-4
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = 50
    config.optimizer.grad_clip_norm = 10.0
    config.optimizer.freeze = []

    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 700
    config.train.log_every = 25
    config.train.eval_every = 700
    config.train.checkpoint_every = 100
    config.train.keep_checkpoints = 2
    config.train.best_metric = "test/mAP50"
    config.train.best_mode = "max"
    config.train.parallel = "mesh"
    config.train.on_nonfinite = "stop"
    return config
