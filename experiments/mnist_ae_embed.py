"""AE embeddings and clustering on MNIST (real data: needs the tfds `mnist` dataset prepared).

Command:   jaxcv data prepare mnist && jaxcv train mnist_ae_embed --workdir runs/mnist_ae_embed
Hardware:  any machine with the data; an estimated 20 minutes on 2 CPU cores, a few on a GPU.
           Offline without the data, the run stops with a message naming the dataset, how to
           prepare it, and the built-in alternative.
Expected:  not measured here (only smoke-tested on tfds mock data). The same study as
           `digits_ae_embed` (whose config this one derives from) on 28x28 images: a 2-D latent
           scatter coloured by class, and k-means NMI/ARI on AE latents vs on pixels.
"""

import ml_collections

from . import digits_ae_embed


def get_config() -> ml_collections.ConfigDict:
    """The mnist_ae_embed config: digits_ae_embed on MNIST (see the module docstring)."""
    config = digits_ae_embed.get_config()
    config.name = "mnist_ae_embed"
    config.data.update(name="mnist", batch_size=128, eval_batch_size=500)
    config.model.image_shape = (28, 28, 1)
    config.train.num_steps = 5000
    return config
