"""A VAE on MNIST (binarised 28x28 images; real data: needs the tfds `mnist` dataset prepared).

Command:   jaxcv data prepare mnist && jaxcv train mnist_vae --workdir runs/mnist_vae
Hardware:  any machine with the data; an estimated 30 minutes on 2 CPU cores (the K = 1000 IWAE pass
           decodes 10^7 images), a few on a GPU. Offline without the data, the run stops with a
           message naming the dataset and the built-in `digits_vae` alternative. Smoke-tested
           here on tfds mock data only: nothing below was measured here.
Expected:  test ELBO and importance-weighted log-likelihood in nats per binarised image, with
           iwae_K increasing in K and above the ELBO (K = 1000 is test/iwae_nats); samples that
           look like digits; reconstructions GT / AE / VAE side by side; a smooth latent
           interpolation strip. Measured numbers are in report.md.

Study `vae` (jaxcv.studies.unsupervised): MLP encoder (512, 256) -> mean and log-variance of a 16-D
diagonal Gaussian, reparameterised sample, MLP decoder -> Bernoulli logits on the pixels
binarised at 0.5 (so the bounds are proper discrete log-likelihoods), KL to N(0, I), beta = 1;
and a deterministic AE of the same architecture trained with binary cross-entropy for the
side-by-side reconstructions.
"""

import ml_collections

from . import digits_vae


def get_config() -> ml_collections.ConfigDict:
    """The mnist_vae config: digits_vae on MNIST (wider MLP, 16-D latent)."""
    config = digits_vae.get_config()
    config.name = "mnist_vae"
    config.data.update(name="mnist", batch_size=128, eval_batch_size=500)
    config.model.image_shape = (28, 28, 1)
    config.model.latent_dim = 16
    config.model.hidden_units = (512, 256)
    config.train.num_steps = 20000
    return config
