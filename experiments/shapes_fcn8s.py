"""FCN-8s (small VGG-style trunk) semantic segmentation of the built-in `shapes/multi` scenes.

Command:   jaxcv train shapes_fcn8s --workdir runs/shapes_fcn8s
Hardware:  2 CPU cores, no GPU, no network (shapes/multi is generated locally on first use:
           6,000 train / 500 validation / 1,000 test 128x128 scenes, 4 object classes + background).
Expected:  measured with this config (3,000 steps of batch 16, 8 epochs) on the 1,000 test
           images: mIoU 0.820, pixel accuracy 0.977, mean accuracy 0.902, fwIoU 0.958 (mIoU 0.740
           at step 1,000, 0.801 at 2,000); 57 minutes wall with the 2 cores shared, compile 24 s.
           A second cosine cycle from that run (warm restart, 2,500 more steps at peak rate
           1e-3: `--set model.init_from=runs/shapes_fcn8s --set train.num_steps=2500 --set
           optimizer.learning_rate=1e-3 --set train.eval_every=1250`, new workdir) reached
           mIoU 0.840 (0.831 halfway), pixel accuracy 0.980, mean accuracy 0.913, fwIoU
           0.963, train loss 0.062; 68 minutes wall with the 2 cores shared by 3 jobs.
           Its errors were at object outlines (per-class IoU background 0.983, circle 0.899,
           square 0.827, triangle 0.771, cross 0.718; 11% of cross pixels called background:
           thin arms and corners at the stride-8 skip). A third stage at twice the input
           resolution (`--set model.input_scale=2 --set model.init_from=runs/fcn8s_restart
           --set train.num_steps=1200 --set optimizer.learning_rate=1e-3 --set
           train.eval_every=400`, the same 128x128 labels: logits are averaged back to them)
           reached mIoU 0.887 at step 400, 0.891 at 800 and **0.900** at 1,200 (pixel
           accuracy 0.988, mean accuracy 0.947, fwIoU 0.978; per class 0.991 / 0.940 / 0.894
           / 0.860 / 0.816), 47 minutes wall, ~2.3 s per step of 16 on 2 cores, peak RSS
           3.3 GB: the issue's goal (mIoU >= 0.85) is met by the three-stage schedule.

Model: FCN-8s (Long et al. 2015) on a five-stage VGG-style trunk with BatchNorm
(16, 32, 64x2, 96x2, 128x2 channels, 2x2 max-pooling: stride 32), `fc6` as a 3x3 conv (the
128x128 input gives a 4x4 `pool5`, too small for VGG-16's 7x7 `fc6`), `fc7` 1x1, score layers
on pool4 and pool3 zero-initialised, transposed-conv upsampling initialised to exact bilinear
interpolation (learned here; add `optimizer.freeze=["upscore8/"]` to keep the last one fixed as
in the paper). `model.input_scale = 2` runs the same network on the 2x bilinearly upsampled
image and averages each 2x2 block of logits back to the input pixel (4x the compute).
Trained from scratch with AdamW and a cosine schedule; per-pixel softmax cross-entropy with
ignore label 255. `model.num_classes = 5` counts the background.
"""

import ml_collections

from . import bases


def get_config() -> ml_collections.ConfigDict:
    """The shapes_fcn8s config (see the module docstring)."""
    config = bases.segmentation("shapes_fcn8s")
    config.model = ml_collections.ConfigDict(
        {
            "name": "fcn8s",
            "num_classes": 5,  # background + 4 shape classes
            "backbone": "vgg",
            "stages": ((16,), (32,), (64, 64), (96, 96), (128, 128)),
            "batch_norm": True,
            "fc_width": 256,
            "fc6_kernel": 3,
            "dropout_rate": 0.2,
            "input_scale": 1,  # 2: images upsampled 2x, logits averaged back (see FCN)
            "dtype": "float32",
        }
    )
    return config
