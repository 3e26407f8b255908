"""FCN-32s (small VGG-style trunk) semantic segmentation of the built-in `shapes/multi` scenes.

Command:   jaxcv train shapes_fcn32s --workdir runs/shapes_fcn32s
Hardware:  2 CPU cores, no GPU, no network (shapes/multi is generated locally on first use:
           6,000 train / 500 validation / 1,000 test 128x128 scenes, 4 object classes + background).
Expected:  test mIoU, pixel/mean accuracy and fwIoU in results.json (`test/mIoU`, ...): the
           coarsest of the three FCNs (one stride-32 upsampling). Measured at step 1,000 of this
           3,000-step schedule (stopped there; the three FCNs share the schedule, so their
           step-1,000 evaluations compare like for like): mIoU 0.603, pixel accuracy 0.941, mean
           accuracy 0.708, fwIoU 0.898 on the 1,000 test images (FCN-16s 0.725, FCN-8s 0.740 at
           the same step).

Same trunk, head, optimizer and schedule as `shapes_fcn8s` (see there), without skip
connections: `upscore32(score_fr(fc7))`, the 32x transposed convolution initialised to exact
bilinear interpolation (`F.interpolate(align_corners=False)` at initialisation; add
`optimizer.freeze=["upscore32/"]` to keep it fixed as in the paper).
"""

import ml_collections

from . import shapes_fcn8s


def get_config() -> ml_collections.ConfigDict:
    """The shapes_fcn32s config: shapes_fcn8s with the FCN-32s head (see the docstring)."""
    config = shapes_fcn8s.get_config()
    config.name = "shapes_fcn32s"
    config.model.name = "fcn32s"
    return config
