"""ImageNet-style classification + localization on real data (tfds `voc/2007`).

Command:   jaxcv train imagenet_localize --workdir runs/imagenet_localize
           (needs `voc/2007` prepared in the tfds data dir: `tfds build voc/2007` on a machine
           with network, then `--set data.data_dir=...`)
Hardware:  one GPU/TPU recommended (224x224 inputs, a VGG-sized trunk); only smoke-tested
           here, on tfds mock data (no real-data figure is claimed).

jaxcv's data registry has no ILSVRC localization dataset (tfds' `imagenet2012` carries no
boxes), so this config runs the ImageNet protocol on VOC 2007: the image's class is its first
annotated object's class (:func:`jaxcv.tasks.localization.image_labels`), the network predicts
one class and one box, and localization accuracy counts an image when the class is right and
the box has IoU >= 0.5 with a ground-truth box of that class. Overfeat-style model: VALID 3x3
conv stages (64..512 channels, BatchNorm, 2x2 pools; stride 32, a 5x5 last pool on 224x224),
class head FC-1024-1024, class-specific box head FC-1024 (one box per class, as in Overfeat's
regressor), smooth-L1 box loss; SGD with momentum, cosine decay; flips as augmentation.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """The imagenet_localize config (see the module docstring)."""
    config = ml_collections.ConfigDict()
    config.name = "imagenet_localize"
    config.seed = 0
    config.task = "localization"

    config.data = ml_collections.ConfigDict()
    config.data.name = "voc/2007"
    config.data.data_dir = None
    config.data.batch_size = 64
    config.data.eval_batch_size = 64
    config.data.image_size = (224, 224)
    config.data.augment = True
    config.data.max_objects = 16
    config.data.train_split = "train+validation"
    config.data.eval_split = "test"

    config.model = ml_collections.ConfigDict()
    config.model.name = "localizer"
    config.model.num_classes = None
    config.model.channels = (64, 128, 256, 512, 512)
    config.model.kernel_size = 3
    config.model.pool_size = 2
    config.model.batch_norm = True
    config.model.hidden_units = (1024, 1024)
    config.model.box_hidden_units = (1024,)
    config.model.class_specific = True
    config.model.dropout_rate = 0.5
    config.model.dtype = "float32"

    config.localization = ml_collections.ConfigDict()
    config.localization.box_loss = "smooth_l1"
    config.localization.box_loss_weight = 1.0
    config.localization.box_weights = (10.0, 10.0, 5.0, 5.0)
    config.localization.smooth_l1_beta = 1.0

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.01
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = False
    config.optimizer.weight_decay = 5e-4
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = 500
    config.optimizer.grad_clip_norm = 10.0
    config.optimizer.freeze = []

    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 40000
    config.train.log_every = 100
    config.train.eval_every = 5000
    config.train.checkpoint_every = 2500
    config.train.keep_checkpoints = 3
    config.train.best_metric = "test/localization_accuracy"
    config.train.best_mode = "max"
    config.train.parallel = "mesh"
    config.train.on_nonfinite = "stop"
    config.train.label_smoothing = 0.0
    return config
