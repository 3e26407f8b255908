"""Autoencoder embeddings of the built-in `digits`: a 2-D latent map and k-means clustering.

Command:   jaxcv train digits_ae_embed --workdir runs/digits_ae_embed
Hardware:  2 CPU cores, no GPU, no network; a few minutes.
Expected:  measured here (seed 0, 2026-11-25): the 2-D conv-AE latents separate most digit
           classes (figures/latent_scatter.png); k-means (k = 10) on the 360 test images scores
           NMI 0.684 / ARI 0.554 on the 10-D conv-AE latents, 0.684 / 0.560 on 10-D PCA codes
           and 0.682 / 0.560 on the 64 raw pixels (no gain from the AE on digits), and 0.575 /
           0.384 on the 2-D latents.

Study `ae_embed` (jaxcv.studies.unsupervised): two conv AEs (latent 2 and 10, MSE on [0, 1] pixels)
trained on the train images without labels; k-means on the 360 test images' latents, pixels and
PCA codes of the same size, scored with NMI and ARI against the true digits.
"""

import ml_collections

from . import bases


def get_config() -> ml_collections.ConfigDict:
    """The digits_ae_embed config (see the module docstring)."""
    config = bases.autoencoder("digits_ae_embed", study="ae_embed")
    config.unsupervised = ml_collections.ConfigDict()
    config.unsupervised.scatter_latent_dim = 2
    config.unsupervised.cluster_latent_dim = 10
    return config
