"""Autoencoders vs PCA on MNIST (real data: needs the tfds `mnist` dataset prepared).

Command:   jaxcv data prepare mnist && jaxcv train mnist_ae_pca --workdir runs/mnist_ae_pca
Hardware:  any machine with the data; an estimated 30 minutes on 2 CPU cores, a few on a GPU.
           Offline without the data, the run stops with a message naming the dataset, how to
           prepare it, and the built-in `digits_ae_pca` alternative.
Expected:  not measured here (only smoke-tested on tfds mock data). What the method should show,
           as measured on digits (see digits_ae_pca): the linear AE's test MSE equals PCA's at
           each latent size and its decoder spans the leading PCA directions (the angles grow
           only for directions with a near-1 eigengap); the conv AE has a lower MSE than PCA at
           small latent sizes.

Same study as `digits_ae_pca` (study `ae_pca` of jaxcv.studies.unsupervised) on 28x28 images
(60,000 train / 10,000 test): for each k in (2, 8, 32), PCA (SVD of the centred train pixels), a
linear AE trained with MSE (SGD with momentum), and a conv AE (two stride-2 3x3 convs 32/64 ->
Dense(k); decoder Dense -> 7x7x64 -> two stride-2 3x3 transposed convs -> 3x3 conv, sigmoid).
MSE per pixel on the test images, pixels in [0, 1] (the pipeline's normalisation undone).
"""

import ml_collections

from . import digits_ae_pca


def get_config() -> ml_collections.ConfigDict:
    """The mnist_ae_pca config: digits_ae_pca on MNIST (a smaller, clipped linear-AE step)."""
    config = digits_ae_pca.get_config()
    config.name = "mnist_ae_pca"
    config.data.update(name="mnist", batch_size=128, eval_batch_size=500)
    config.model.image_shape = (28, 28, 1)
    config.train.num_steps = 5000
    config.unsupervised.linear_steps = 20000
    # Far below digits' 0.5: the stable SGD step falls with the input dimension (784 vs 64), and
    # 0.5 or 0.04 diverge on tfds mock data. Not tuned on real MNIST (not on this machine).
    config.unsupervised.linear_optimizer.learning_rate = 0.01
    config.unsupervised.linear_optimizer.grad_clip_norm = 1.0
    return config
