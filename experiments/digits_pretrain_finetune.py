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

from . import bases


def get_config() -> ml_collections.ConfigDict:
    """The digits_pretrain_finetune config (see the module docstring)."""
    config = bases.autoencoder("digits_pretrain_finetune", study="pretrain_finetune")
    config.model.latent_dim = 32

    config.unsupervised = ml_collections.ConfigDict()
    config.unsupervised.pretrain_latent_dim = 32
    config.unsupervised.label_fractions = (0.01, 0.05, 0.1, 1.0)
    config.unsupervised.finetune_seeds = (0, 1, 2)
    config.unsupervised.finetune_steps = 600
    config.unsupervised.head_units = ()

    config.finetune_optimizer = bases.finetune_adamw(warmup_steps=50)
    return config
