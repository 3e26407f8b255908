"""A VAE on the built-in `digits` (binarised 8x8 images): ELBO, IWAE, samples, interpolation.

Command:   jaxcv train digits_vae --workdir runs/digits_vae
Hardware:  2 CPU cores, no GPU, no network; a few minutes.
Expected:  measured here (seed 0, 2026-11-25), nats per binarised test image: ELBO -17.95
           (reconstruction -10.48, KL 7.47), IWAE -18.17 / -17.09 / -16.77 / -16.64 for K = 1,
           10, 100, 1000 (test/iwae_nats = -16.64), train ELBO -15.69; samples look like
           digits; reconstructions GT / AE / VAE side by side; a smooth interpolation strip.

Study `vae` (jaxcv.studies.unsupervised): MLP encoder (256, 128) -> mean and log-variance of an 8-D
diagonal Gaussian, reparameterised sample, MLP decoder -> Bernoulli logits on the pixels
binarised at 0.5 (so the bounds are proper discrete log-likelihoods), KL to N(0, I), beta = 1;
and a deterministic AE of the same architecture trained with binary cross-entropy for the
side-by-side reconstructions.
"""

import ml_collections

from . import bases


def get_config() -> ml_collections.ConfigDict:
    """The digits_vae config (see the module docstring)."""
    config = bases.vae("digits_vae")
    config.train.num_steps = 6000

    config.unsupervised = ml_collections.ConfigDict()
    config.unsupervised.likelihood = "bernoulli"
    config.unsupervised.decoder_std = 0.1
    config.unsupervised.beta = 1.0
    config.unsupervised.binarize = True
    config.unsupervised.binarize_threshold = 0.5
    config.unsupervised.iwae_ks = (1, 10, 100, 1000)
    config.unsupervised.iwae_chunk = 100
    config.unsupervised.num_interpolations = 4
    return config
