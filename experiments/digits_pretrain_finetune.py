"""Pre-train a conv autoencoder on `digits` without labels, then train with few labels.

Command:   jaxcv train digits_pretrain_finetune --workdir runs/digits_pretrain_finetune
Hardware:  2 CPU cores, no GPU, no network; about 5 minutes (4 label fractions x 3 seeds x 3
           classifiers).
Expected:  measured here (seed 0 AE, seeds 0-2 for the classifiers, 2026-11-25), test accuracy
           on the 360 test images, mean +- std over the 3 seeds:
             labels   scratch          AE pre-trained, fine-tuned   AE pre-trained, frozen
             1%       0.575 +- 0.019   0.564 +- 0.031               0.505 +- 0.049
             5%       0.852 +- 0.013   0.828 +- 0.031               0.766 +- 0.034
             10%      0.904 +- 0.005   0.883 +- 0.004               0.820 +- 0.037
             100%     0.970 +- 0.004   0.966 +- 0.005               0.857 +- 0.007
           On digits, MSE pre-training of this AE does not help: the fine-tuned encoder is
           within noise of (and on average slightly below) training from scratch.

Study `pretrain_finetune` (jaxcv.studies.unsupervised): a conv AE (latent 32) trained with MSE
on all 1,437 train images without labels; then encoder + linear head classifiers trained on a
class-stratified 1%, 5%, 10%, 100% of the train labels (14, 72, 144, 1,437 images) from the
pre-trained encoder (all layers trained, or the encoder frozen through an optax mask) vs from
random initialisation: same architecture, optimizer, steps, seeds and label subsets.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """The digits_pretrain_finetune config (see the module docstring)."""
    config = ml_collections.ConfigDict()
    config.name = "digits_pretrain_finetune"
    config.seed = 0
    config.task = "autoencoder"
    config.study = "pretrain_finetune"

    config.data = ml_collections.ConfigDict()
    config.data.name = "digits"
    config.data.data_dir = None
    config.data.batch_size = 64
    config.data.eval_batch_size = 120
    config.data.image_size = None
    config.data.augment = False
    config.data.max_objects = 1
    config.data.train_split = "train"
    config.data.eval_split = "test"

    config.model = ml_collections.ConfigDict()
    config.model.name = "autoencoder"
    config.model.latent_dim = 32
    config.model.image_shape = (8, 8, 1)
    config.model.architecture = "conv"
    config.model.channels = (32, 64)
    config.model.hidden_units = (256, 128)
    config.model.output_activation = "sigmoid"
    config.model.dtype = "float32"

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 3e-3
    config.optimizer.weight_decay = 0.0
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = 100
    config.optimizer.grad_clip_norm = None
    config.optimizer.freeze = []

    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 3000
    config.train.log_every = 100
    config.train.eval_every = 1000
    config.train.checkpoint_every = 1000
    config.train.keep_checkpoints = 1
    config.train.best_metric = None
    config.train.best_mode = "min"
    config.train.parallel = "mesh"
    config.train.on_nonfinite = "stop"

    config.unsupervised = ml_collections.ConfigDict()
    config.unsupervised.pretrain_latent_dim = 32
    config.unsupervised.label_fractions = (0.01, 0.05, 0.1, 1.0)
    config.unsupervised.finetune_seeds = (0, 1, 2)
    config.unsupervised.finetune_steps = 600
    config.unsupervised.head_units = ()

    config.finetune_optimizer = ml_collections.ConfigDict()
    config.finetune_optimizer.name = "adamw"
    config.finetune_optimizer.learning_rate = 1e-3
    config.finetune_optimizer.weight_decay = 1e-4
    config.finetune_optimizer.schedule = "cosine"
    config.finetune_optimizer.warmup_steps = 50
    config.finetune_optimizer.grad_clip_norm = None
    config.finetune_optimizer.freeze = []
    return config
