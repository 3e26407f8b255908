"""Autoencoders vs PCA on the built-in `digits` (8x8, 1,437 train / 360 test images).

Command:   jaxcv train digits_ae_pca --workdir runs/digits_ae_pca
Hardware:  2 CPU cores, no GPU, no network; a few minutes.
Expected:  measured here (seed 0, 2026-11-25), test MSE per pixel, pixels in [0, 1]:
             k    PCA      linear AE  conv AE   max / mean angle (deg)   eigengap
             2    0.05310  0.05310    0.03548   0.01 / 0.01              1.13
             8    0.02460  0.02459    0.01241   5.4 / 0.75               1.12
             32   0.00260  0.00269    0.00281   70 / 3.7                 1.05
           The linear AE matches PCA's error and subspace; its largest angle grows where PCA's
           eigengap is near 1 (1.05 at k = 32). The conv AE halves PCA's error at k = 2 and 8,
           and does not beat it at k = 32.

Study `ae_pca` (jaxcv.studies.unsupervised): for each k, PCA (SVD of the centred train
pixels), a linear AE trained with MSE (SGD with momentum: Adam stalls on its low-variance
directions), and a conv AE (two stride-2 3x3 convs 32/64 -> Dense(k); decoder
Dense -> two stride-2 3x3 transposed convs -> 3x3 conv, sigmoid output). MSE per pixel on the
test images, pixels in [0, 1] (the pipeline's normalisation undone).
"""

import ml_collections

from . import bases


def get_config() -> ml_collections.ConfigDict:
    """The digits_ae_pca config (see the module docstring)."""
    config = bases.autoencoder("digits_ae_pca", study="ae_pca")
    config.unsupervised = ml_collections.ConfigDict()
    config.unsupervised.latent_sizes = (2, 8, 32)
    config.unsupervised.linear_steps = 6000
    # SGD with momentum: Adam stalls on the low-variance directions of a linear AE.
    config.unsupervised.linear_optimizer = ml_collections.ConfigDict()
    config.unsupervised.linear_optimizer.name = "sgd"
    config.unsupervised.linear_optimizer.learning_rate = 0.5
    config.unsupervised.linear_optimizer.momentum = 0.9
    config.unsupervised.linear_optimizer.schedule = "cosine"
    config.unsupervised.linear_optimizer.warmup_steps = 100
    return config
