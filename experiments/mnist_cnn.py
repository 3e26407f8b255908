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

from . import bases


def get_config() -> ml_collections.ConfigDict:
    """The mnist_cnn config (see the module docstring)."""
    config = bases.classifier("mnist_cnn")
    config.data.update(name="mnist", batch_size=128, eval_batch_size=500)
    bases.select_on(config, "train[55000:]")
    config.data.train_split = "train[:55000]"
    config.model.update(batch_norm=False, dropout_rate=0.5)
    config.optimizer.update(learning_rate=1e-3, warmup_steps=200)
    config.train.update(num_steps=3000, log_every=100, eval_every=1000, checkpoint_every=1000)
    return config
