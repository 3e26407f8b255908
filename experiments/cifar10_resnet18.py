"""ResNet-18 (CIFAR stem) on CIFAR-10 (real data: needs the tfds `cifar10` dataset prepared).

Command:   jaxcv data prepare cifar10 && jaxcv train cifar10_resnet18 --workdir runs/cifar10_r18
Hardware:  a GPU or TPU (about 30 minutes on one modern GPU); on 2 CPU cores a step of batch 128
           takes seconds, so the full schedule would take days there. Offline without the data,
           the run stops with a message naming the dataset, how to prepare it, and the built-in
           `shapes_classify` alternative.
Expected:  test accuracy about 0.95 (the usual ResNet-18 CIFAR-10 recipe: SGD momentum 0.9,
           nesterov, lr 0.1 with warmup and cosine decay, weight decay 5e-4, random crop + flip,
           label smoothing 0.1, about 120 epochs).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """The cifar10_resnet18 config (see the module docstring)."""
    config = ml_collections.ConfigDict()
    config.name = "cifar10_resnet18"
    config.seed = 0
    config.task = "classification"

    config.data = ml_collections.ConfigDict()
    config.data.name = "cifar10"
    config.data.data_dir = None
    config.data.batch_size = 128
    config.data.eval_batch_size = 500
    config.data.image_size = None
    config.data.augment = True
    config.data.max_objects = 1
    config.data.train_split = "train"
    config.data.eval_split = "test"

    config.model = ml_collections.ConfigDict()
    config.model.name = "resnet18"
    config.model.num_classes = None
    config.model.stem = "cifar"
    config.model.dtype = "float32"

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.1
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 5e-4
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = 1000
    config.optimizer.grad_clip_norm = None
    config.optimizer.freeze = []

    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 47000  # about 120 epochs of 50,000 images at batch 128
    config.train.log_every = 100
    config.train.eval_every = 2000
    config.train.checkpoint_every = 2000
    config.train.keep_checkpoints = 3
    config.train.best_metric = "test/accuracy"
    config.train.best_mode = "max"
    config.train.parallel = "mesh"
    config.train.on_nonfinite = "stop"
    config.train.label_smoothing = 0.1
    return config
