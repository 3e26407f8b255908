"""Per-pixel patch CNN ("a CNN for every pixel") on the built-in `shapes/multi` scenes.

Command:   jaxcv train shapes_patch_cnn --workdir runs/shapes_patch_cnn
Hardware:  2 CPU cores, no GPU, no network (shapes/multi is generated locally on first use:
           6,000 train / 500 validation / 1,000 test 128x128 scenes, 4 object classes + background).
Expected:  test mIoU, pixel/mean accuracy and fwIoU in results.json (`test/mIoU`, ...), the
           baseline row of the FCN-paper-style table. Evaluation is dense: every one of the
           16,384 pixels of each test image has its own patch classified (see
           experiments/bench/segmentation.py for the cost against FCN-8s), so the single
           evaluation at the end dominates the run time. Measured only with a short schedule
           (`--set train.num_steps=300 --set data.eval_split='test[:100]'`, 20 minutes on a shared
           CPU): mIoU 0.231, pixel accuracy 0.761, mean accuracy 0.405, fwIoU 0.724, train loss
           1.22 (undertrained); the dense evaluation peaked at 10.7 GB host memory.

Model: a patch classifier (3x3 conv + ReLU + 2x2 max-pool stages of 16, 32, 32 channels, a
128-unit hidden layer) on two scales around each pixel: the 17x17 patch, and a 34x34 window
average-pooled to 17x17 (shared conv weights, features concatenated). Trained on 128 pixels per
image per step, sampled without replacement by random priorities with class-balanced weights
(`segmentation.balance_classes`), never on ignore (255) pixels; dense prediction evaluates 4,096
pixels' patches per chunk. `model.num_classes = 5` counts the background.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """The shapes_patch_cnn config (see the module docstring)."""
    config = ml_collections.ConfigDict()
    config.name = "shapes_patch_cnn"
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
    config.model.name = "patch_cnn"
    config.model.num_classes = 5  # background + 4 shape classes
    config.model.patch_size = 17
    config.model.scales = (1, 2)
    config.model.channels = (16, 32, 32)
    config.model.hidden_units = 128
    config.model.dropout_rate = 0.2
    config.model.dtype = "float32"

    config.segmentation = ml_collections.ConfigDict()
    config.segmentation.ignore_label = 255
    config.segmentation.pixels_per_image = 128
    config.segmentation.balance_classes = True
    config.segmentation.chunk_size = 4096

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 2e-3
    config.optimizer.weight_decay = 1e-4
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = 100
    config.optimizer.grad_clip_norm = None
    config.optimizer.freeze = []

    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 3000
    config.train.log_every = 50
    config.train.eval_every = 3000  # dense evaluation is the expensive part: once, at the end
    config.train.checkpoint_every = 500
    config.train.keep_checkpoints = 2
    config.train.best_metric = "test/mIoU"
    config.train.best_mode = "max"
    config.train.parallel = "mesh"
    config.train.on_nonfinite = "stop"
    return config
