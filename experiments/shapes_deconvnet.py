"""DeconvNet (small encoder) semantic segmentation of the built-in `shapes/multi` scenes.

Command:   jaxcv train shapes_deconvnet --workdir runs/shapes_deconvnet
Hardware:  2 CPU cores, no GPU, no network (shapes/multi is generated locally on first use:
           6,000 train / 500 validation / 1,000 test 128x128 scenes, 4 object classes + background).
Expected:  test mIoU, pixel/mean accuracy and fwIoU in results.json (`test/mIoU`, ...), for the
           FCN-paper-style table next to shapes_fcn32s/16s/8s and shapes_patch_cnn. Measured at
           step 1,000 of this 3,000-step schedule (the FCNs' comparison point): mIoU 0.245, pixel
           accuracy 0.898, mean accuracy 0.331, fwIoU 0.839 (FCN-8s 0.740 at the same step), train
           loss 0.45 against FCN-8s' 0.20. Why it lags here: `fc6` squeezes the whole 128x128 scene
           into one 1x1 vector, so where the objects are reaches the decoder only through the
           pooling switches; the paper applies DeconvNet to object proposals (one object per
           input, centred) and ensembles it with FCN-8s for whole images.

Model: DeconvNet (Noh et al. 2015) with BatchNorm: a five-stage encoder (16, 32, 64x2, 96x2,
128x2 channels) whose 2x2 max-pools keep their switches, `fc6` a 4x4 valid conv (the 4x4 `pool5`
of a 128x128 input -> 1x1, as VGG-16's 7x7 `fc6` on 224x224), `fc7` 1x1, then the mirrored
decoder: a 4x4 transposed conv, and per stage unpooling through the switches followed by 3x3
transposed convs. Trained from scratch with AdamW and a cosine schedule; per-pixel softmax
cross-entropy with ignore label 255. `model.num_classes = 5` counts the background.
"""

import ml_collections

from . import bases


def get_config() -> ml_collections.ConfigDict:
    """The shapes_deconvnet config (see the module docstring)."""
    config = bases.segmentation("shapes_deconvnet")
    config.model = ml_collections.ConfigDict(
        {
            "name": "deconvnet",
            "num_classes": 5,  # background + 4 shape classes
            "stages": ((16,), (32,), (64, 64), (96, 96), (128, 128)),
            "batch_norm": True,
            "fc_width": 256,
            "fc6_kernel": 4,
            "dropout_rate": 0.2,
            "dtype": "float32",
        }
    )
    return config
