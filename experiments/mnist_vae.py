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


def get_config() -> ml_collections.ConfigDict:
    """The mnist_vae config (see the module docstring)."""
    config = ml_collections.ConfigDict()
    config.name = "mnist_vae"
    config.seed = 0
    config.task = "vae"
    config.study = "vae"

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
    config.model.name = "vae"
    config.model.latent_dim = 16
    config.model.image_shape = (28, 28, 1)
    config.model.architecture = "mlp"
    config.model.channels = (32, 64)
    config.model.hidden_units = (512, 256)
    config.model.dtype = "float32"

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.weight_decay = 0.0
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = 100
    config.optimizer.grad_clip_norm = None
    config.optimizer.freeze = []

    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 20000
    config.train.log_every = 100
    config.train.eval_every = 1000
    config.train.checkpoint_every = 1000
    config.train.keep_checkpoints = 1
    config.train.best_metric = None
    config.train.best_mode = "min"
    config.train.parallel = "mesh"
    config.train.on_nonfinite = "stop"

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
