"""The ImageNet stage of Overfeat on shapes: the localizer's trunk pre-trained to classify.

Command:   jaxcv train shapes_localizer_pretrain --workdir runs/shapes_localizer_pretrain
Hardware:  2 CPU cores, no GPU, no network (shapes/single is generated locally on first use:
           8,000 train / 1,000 validation / 1,000 test 128x128 scenes with one object each).
Expected:  a trunk for the localizer (`shapes_localize`) and the Overfeat localizer of
           `overfeat_family`, as ImageNet's classifier is for the paper's: `--set
           model.init_from=runs/shapes_localizer_pretrain` on a localizer loads its four conv
           and BatchNorm layers (jaxcv.train.trunk) and leaves `fc1` and `logits` out (the
           localizer's heads start fresh). Classification accuracy is reported on test
           (checkpoint chosen on validation); it is a means here, not the goal. The
           `overfeat_family` study trains this config as its `pretrain` stage.

Model: the `cnn` classifier with exactly the localizer's trunk (jaxcv.models.backbones.cnn
CNNBackbone: four VALID 3x3 conv stages of 16, 32, 64 and 128 channels, BatchNorm, ReLU, 2x2
max-pool; a 64x64 input ends in a 2x2x128 pool), flattened, one hidden layer of 256 units with
dropout and the class layer. Scenes resized to 64x64 as for `shapes_localize`, the dataset's
flip and random resized crop. AdamW 2e-3 with warmup and cosine decay, 1,000 steps of batch 64
(8 epochs), the checkpoint chosen by validation accuracy every 250 steps, test once.
"""

import ml_collections

from . import bases


def get_config() -> ml_collections.ConfigDict:
    """The shapes_localizer_pretrain config (see the module docstring)."""
    config = bases.classifier("shapes_localizer_pretrain")
    config.data.update(
        name="shapes/single",
        batch_size=64,
        eval_batch_size=200,
        image_size=(64, 64),
        augment=True,
        train_split="train",
    )
    bases.select_on(config)
    localizer = bases.localizer("shapes_localize").model
    config.model.update(
        channels=tuple(localizer.channels),
        kernel_size=localizer.kernel_size,
        padding="VALID",  # the localizer's trunk: exactly convertible to Overfeat's
        pool_size=localizer.pool_size,
        batch_norm=localizer.batch_norm,
        hidden_units=(256,),
        dropout_rate=0.3,
    )
    config.optimizer.update(learning_rate=2e-3, warmup_steps=50)
    config.train.update(num_steps=1000, eval_every=250, checkpoint_every=250)
    return config
