"""FCN-32s (small VGG-style trunk) semantic segmentation of the built-in `shapes/multi` scenes.

Command:   jaxcv train shapes_fcn32s --workdir runs/shapes_fcn32s
Hardware:  2 CPU cores, no GPU, no network (shapes/multi is generated locally on first use:
           6,000 train / 500 validation / 1,000 test 128x128 scenes, 4 object classes + background).
Expected:  test mIoU, pixel/mean accuracy and fwIoU in results.json (`test/mIoU`, ...): the
           coarsest of the three FCNs (one stride-32 upsampling), so lower mIoU than FCN-16s/8s,
           mostly at object boundaries. Not run to the end in the session that wrote it.

Same trunk, head, optimizer and schedule as `shapes_fcn8s` (see there), without skip
connections: `upscore32(score_fr(fc7))`, the 32x transposed convolution initialised to exact
bilinear interpolation (`F.interpolate(align_corners=False)` at initialisation; add
`optimizer.freeze=["upscore32/"]` to keep it fixed as in the paper).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """The shapes_fcn32s config (see the module docstring)."""
    config = ml_collections.ConfigDict()
    config.name = "shapes_fcn32s"
    config.seed = 0
    config.task = "segmentation"

    config.data = ml_collections.ConfigDict()
    config.data.name = "shapes/multi"
    config.data.data_dir = None
    config.data.batch_size = 16
    config.data.eval_batch_size = 50
    config.data.image_size = None
    config.data.augment = True
    config.data.max_objects = 16
    config.data.train_split = "train"
    config.data.eval_split = "test"

    config.model = ml_collections.ConfigDict()
    config.model.name = "fcn32s"
    config.model.num_classes = 5  # background + 4 shape classes
    config.model.backbone = "vgg"
    config.model.stages = ((16,), (32,), (64, 64), (96, 96), (128, 128))
    config.model.batch_norm = True
    config.model.fc_width = 256
    config.model.fc6_kernel = 3
    config.model.dropout_rate = 0.2
    config.model.dtype = "float32"

    config.segmentation = ml_collections.ConfigDict()
    config.segmentation.ignore_label = 255

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 3e-3
    config.optimizer.weight_decay = 1e-4
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = 100
    config.optimizer.grad_clip_norm = None
    config.optimizer.freeze = []

    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 3000
    config.train.log_every = 50
    config.train.eval_every = 1000
    config.train.checkpoint_every = 500
    config.train.keep_checkpoints = 2
    config.train.best_metric = "test/mIoU"
    config.train.best_mode = "max"
    config.train.parallel = "mesh"
    config.train.on_nonfinite = "stop"
    return config
