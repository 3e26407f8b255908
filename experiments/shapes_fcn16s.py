"""FCN-16s (small VGG-style trunk) semantic segmentation of the built-in `shapes/multi` scenes.

Command:   jaxcv train shapes_fcn16s --workdir runs/shapes_fcn16s
Hardware:  2 CPU cores, no GPU, no network (shapes/multi is generated locally on first use:
           6,000 train / 500 validation / 1,000 test 128x128 scenes, 4 object classes + background).
Expected:  test mIoU, pixel/mean accuracy and fwIoU in results.json (`test/mIoU`, ...): between
           FCN-32s and FCN-8s (one skip connection from pool4). Measured at step 1,000 of this
           3,000-step schedule (stopped there to compare with FCN-32s/8s at the same step): mIoU
           0.725, pixel accuracy 0.961, mean accuracy 0.848, fwIoU 0.931 on the 1,000 test images
           (FCN-32s 0.603, FCN-8s 0.740).

Same trunk, head, optimizer and schedule as `shapes_fcn8s` (see there), with one skip:
`upscore16(upscore2(score_fr) + score_pool4(pool4))`, `score_pool4` zero-initialised and both
transposed convolutions initialised to exact bilinear interpolation.
"""

import ml_collections

from . import shapes_fcn8s


def get_config() -> ml_collections.ConfigDict:
    """The shapes_fcn16s config: shapes_fcn8s with the FCN-16s head (see the docstring)."""
    config = shapes_fcn8s.get_config()
    config.name = "shapes_fcn16s"
    config.model.name = "fcn16s"
    return config
