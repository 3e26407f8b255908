"""The classic small CNN on MNIST (real data: needs the tfds `mnist` dataset prepared).

Command:   jaxcv data prepare mnist && jaxcv train mnist_cnn --workdir runs/mnist_cnn
Hardware:  any machine with the data; about 10 minutes on 2 CPU cores, well under a minute on
           a GPU. Offline without the data, the run stops with a message naming the dataset,
           how to prepare it, and the built-in `digits_cnn` alternative.
Expected:  test accuracy about 0.99.

Two 3x3 conv layers (32, 64 channels) with 2x2 max-pooling, a 128-unit hidden layer with
dropout 0.5; AdamW with warmup and a cosine decay over 3,000 steps of batch 128 (about 6.4
epochs).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """The mnist_cnn config (see the module docstring)."""
    config = ml_collections.ConfigDict()
    config.name = "mnist_cnn"
    config.seed = 0
    config.task = "classification"

    config.data = ml_collections.ConfigDict()
    config.data.name = "mnist"
    config.data.data_dir = None
    config.data.batch_size = 128
    config.data.eval_batch_size = 500
    config.data.image_size = None
    config.data.augment = False
    config.data.max_objects = 1
    config.data.train_split = "train"
    config.data.eval_split = "test"

    config.model = ml_collections.ConfigDict()
    config.model.name = "cnn"
    config.model.num_classes = None
    config.model.channels = (32, 64)
    config.model.kernel_size = 3
    config.model.padding = "SAME"
    config.model.pool_size = 2
    config.model.batch_norm = False
    config.model.hidden_units = (128,)
    config.model.dropout_rate = 0.5
    config.model.dtype = "float32"

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.weight_decay = 1e-4
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = 200
    config.optimizer.grad_clip_norm = None
    config.optimizer.freeze = []

    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 3000
    config.train.log_every = 100
    config.train.eval_every = 1000
    config.train.checkpoint_every = 1000
    config.train.keep_checkpoints = 2
    config.train.best_metric = "test/accuracy"
    config.train.best_mode = "max"
    config.train.parallel = "mesh"
    config.train.on_nonfinite = "stop"
    config.train.label_smoothing = 0.0
    return config
