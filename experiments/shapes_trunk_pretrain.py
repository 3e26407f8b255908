"""The ImageNet stage of the shapes world: the detectors' small trunk pre-trained to classify.

Command:   jaxcv train shapes_trunk_pretrain --workdir runs/shapes_trunk_pretrain
Hardware:  2 CPU cores, no GPU, no network (shapes/single is generated locally on first use:
           8,000 train / 1,000 validation / 1,000 test 128x128 scenes with one object each).
Expected:  a trunk for R-CNN, Fast R-CNN and Faster R-CNN on shapes/multi, as ImageNet's VGG-16
           is for the papers': `--set model.init_from=runs/shapes_trunk_pretrain` on a detector
           with the same trunk (`model.backbone_widths=(32, 64, 96, 128)`, depth 2, GroupNorm:
           shapes_fast_rcnn and shapes_rcnn already have it) loads its 16 conv and norm layers
           (jaxcv.train.trunk) and drops `fc`. Classification accuracy is reported on test
           (checkpoint chosen on validation); it is a means here, not the goal. Measured:
           test accuracy 0.997 (validation 0.997, step 1,500 selected), 698 s wall on 2 CPU
           cores shared with a test suite.

Model: `small_classifier` (jaxcv.models.backbones.small): the detectors' four stride-2 stages
of two 3x3 convs (32, 64, 96, 128 channels, GroupNorm), global average pooling of the stride-16
map and one linear layer. Input at the scenes' own 128x128 (the detectors' scale, objects of
the same size), the dataset's flip and random resized crop. AdamW 2e-3 with warmup and cosine
decay, 1,500 steps of batch 32 (6 epochs).
"""

import ml_collections

from . import bases


def get_config() -> ml_collections.ConfigDict:
    """The shapes_trunk_pretrain config (see the module docstring)."""
    config = bases.classifier("shapes_trunk_pretrain")
    config.data.update(
        name="shapes/single",
        batch_size=32,
        eval_batch_size=100,
        image_size=(128, 128),
        augment=True,
        train_split="train",
    )
    bases.select_on(config)
    config.model = ml_collections.ConfigDict(
        {
            "name": "small_classifier",
            "num_classes": None,  # from the dataset
            "widths": (32, 64, 96, 128),
            "depth": 2,
            "norm": "group",
            "dropout_rate": 0.0,
            "dtype": "float32",
        }
    )
    config.optimizer.update(learning_rate=2e-3, warmup_steps=100)
    config.train.update(num_steps=1500, log_every=50, eval_every=500, checkpoint_every=500)
    return config
