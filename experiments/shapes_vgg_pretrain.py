"""The ImageNet stage of the segmentation family: the FCNs' small VGG pre-trained to classify.

Command:   jaxcv train shapes_vgg_pretrain --workdir runs/shapes_vgg_pretrain
Hardware:  2 CPU cores, no GPU, no network (shapes/single is generated locally on first use:
           8,000 train / 1,000 validation / 1,000 test 128x128 scenes with one object each).
Expected:  a VGG whose trunk and fc6/fc7 start FCN-32s, DeconvNet and the patch CNN of
           `segmentation_family` (`model.init_from`, jaxcv.train.trunk), as ImageNet's VGG-16
           starts them in their papers. Test accuracy (checkpoint chosen on validation) is
           reported; it is a means here, not the goal.

Model: VGG (jaxcv.models.backbones.vgg) with the segmenters' five stages (16, 32, 64x2, 96x2,
128x2 channels, BatchNorm, 2x2 max-pooling), `fc6`/`fc7` of 256 units on the flattened last
pool, `fc8` the classifier. The input is 96x96: its 3x3 `pool5` makes `fc6` a 3x3 kernel once
convolutionalised (FCN's `fc6_kernel=3`, DeconvNet's 3x3 valid `fc6`), as VGG-16's 224x224
input makes its `fc6` 7x7. At 96x96 the objects of shapes/single measure 20..58 px, those of
shapes/multi at the segmenters' `input_scale=2` 26..76 px: the trunk is trained at the scale it
will see. The dataset's flip and random resized crop; AdamW with warmup and cosine decay at a
peak of 5e-4: at the 2e-3 of the small trunk's pre-training the VGG (fc layers initialised with
std 0.01, as torchvision's) stayed at chance for 600 steps (validation accuracy 0.25 at step
500); on 1,024 unaugmented images 5e-4 brought the training loss to 0.63 in 300 steps where
2e-3 with PyTorch's default fc initialisation reached 0.89.
"""

import ml_collections

from . import bases

#: The segmenters' VGG stages (jaxcv.models.fcn.SMALL_VGG_STAGES).
STAGES = ((16,), (32,), (64, 64), (96, 96), (128, 128))


def get_config() -> ml_collections.ConfigDict:
    """The shapes_vgg_pretrain config (see the module docstring)."""
    config = bases.classifier("shapes_vgg_pretrain")
    config.data.update(
        name="shapes/single",
        batch_size=32,
        eval_batch_size=100,
        image_size=(96, 96),
        augment=True,
        train_split="train",
    )
    bases.select_on(config)
    config.model = ml_collections.ConfigDict(
        {
            "name": "vgg",
            "num_classes": None,  # from the dataset
            "stages": STAGES,
            "batch_norm": True,
            "fc_width": 256,
            "dropout_rate": 0.3,
            "pool_output": None,  # fc6 on the flattened 3x3 pool5
            "dtype": "float32",
        }
    )
    config.optimizer.update(learning_rate=5e-4, warmup_steps=100)
    config.train.update(num_steps=2000, log_every=50, eval_every=500, checkpoint_every=500)
    return config
