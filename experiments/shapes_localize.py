"""Classification + localization of the single object of `shapes/single` scenes.

Command:   jaxcv train shapes_localize --workdir runs/shapes_localize
Hardware:  2 CPU cores, no GPU, no network (the dataset is generated locally on first use:
           8,000 train / 1,000 validation / 1,000 test 128x128 scenes with one object each).
Expected:  goal test localization accuracy (class right and IoU >= 0.5) >= 0.95; see the
           run's results.json for the measured figure.

Scenes are resized to 64x64 (objects 13..38 px). The `localizer` model: four VALID 3x3 conv
stages (16, 32, 64, 128 channels, BatchNorm, ReLU, 2x2 max-pool; stride 16, a 2x2x128 last
pool), then a class head (FC-256, dropout, FC-K, softmax loss) and a class-agnostic box head
(FC-256, FC-4, smooth-L1 on R-CNN deltas relative to the 64x64 window). VALID convolutions
keep the network exactly convertible to a fully-convolutional Overfeat detector
(`shapes_overfeat`). AdamW, warmup + cosine decay, no augmentation.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """The shapes_localize config (see the module docstring)."""
    config = ml_collections.ConfigDict()
    config.name = "shapes_localize"
    config.seed = 0
    config.task = "localization"

    config.data = ml_collections.ConfigDict()
    config.data.name = "shapes/single"
    config.data.data_dir = None
    config.data.batch_size = 64
    config.data.eval_batch_size = 200
    config.data.image_size = (64, 64)
    config.data.augment = False
    config.data.max_objects = 1
    config.data.train_split = "train"
    config.data.eval_split = "test"

    config.model = ml_collections.ConfigDict()
    config.model.name = "localizer"
    config.model.num_classes = None
    config.model.channels = (16, 32, 64, 128)
    config.model.kernel_size = 3
    config.model.pool_size = 2
    config.model.batch_norm = True
    config.model.hidden_units = (256,)
    config.model.box_hidden_units = (256,)
    config.model.class_specific = False
    config.model.dropout_rate = 0.3
    config.model.dtype = "float32"

    config.localization = ml_collections.ConfigDict()
    config.localization.box_loss = "smooth_l1"  # or "l2"
    config.localization.box_loss_weight = 1.0
    config.localization.box_weights = (10.0, 10.0, 5.0, 5.0)
    config.localization.smooth_l1_beta = 1.0

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 2e-3
    config.optimizer.weight_decay = 1e-4
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = 50
    config.optimizer.grad_clip_norm = None
    config.optimizer.freeze = []

    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 1500
    config.train.log_every = 50
    config.train.eval_every = 500
    config.train.checkpoint_every = 500
    config.train.keep_checkpoints = 2
    config.train.best_metric = "test/localization_accuracy"
    config.train.best_mode = "max"
    config.train.parallel = "mesh"
    config.train.on_nonfinite = "stop"
    config.train.label_smoothing = 0.0
    return config
