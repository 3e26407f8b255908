"""Pre-train an AE, then fine-tune a classifier with few labels, on MNIST (needs tfds `mnist`).

Command:   jaxcv data prepare mnist && jaxcv train mnist_pretrain_finetune
           --workdir runs/mnist_pretrain_finetune
Hardware:  any machine with the data; an estimated hour on 2 CPU cores, minutes on a GPU.
           Offline without the data, the run stops with a message naming the dataset, how to
           prepare it, and the built-in alternative.
Expected:  not measured here (only smoke-tested on tfds mock data). The same study as
           `digits_pretrain_finetune` (whose config this one derives from) on 28x28 images: test
           accuracy with 1%, 5%, 10% and 100% of the labels, pre-trained encoder vs from scratch.
"""

import ml_collections

from . import digits_pretrain_finetune


def get_config() -> ml_collections.ConfigDict:
    """The mnist_pretrain_finetune config: digits_pretrain_finetune on MNIST."""
    config = digits_pretrain_finetune.get_config()
    config.name = "mnist_pretrain_finetune"
    config.data.update(name="mnist", batch_size=128, eval_batch_size=500)
    config.model.image_shape = (28, 28, 1)
    config.train.num_steps = 5000
    config.unsupervised.finetune_steps = 2000
    return config
