"""Classification + localization of the single object of `shapes/single` scenes.

Command:   jaxcv train shapes_localize --workdir runs/shapes_localize
Hardware:  2 CPU cores, no GPU, no network (the dataset is generated locally on first use:
           8,000 train / 1,000 validation / 1,000 test 128x128 scenes with one object each).
Expected:  goal test localization accuracy (class right and IoU >= 0.5) >= 0.95; see the
           run's results.json for the measured figure.

Scenes are resized to 64x64 (objects 13..38 px). The `localizer` model: four VALID 3x3 conv
stages (16, 32, 64, 128 channels, BatchNorm, ReLU, 2x2 max-pool; stride 16, a 2x2x128 last
pool), then a class head (FC-256, dropout, FC-K, softmax loss) and a class-agnostic box head
(FC-256, FC-4, smooth-L1 on R-CNN deltas relative to the 64x64 window). VALID convolutions
keep the network exactly convertible to a fully-convolutional Overfeat detector
(`shapes_overfeat`). AdamW, warmup + cosine decay, no augmentation.
"""

import ml_collections

from . import bases


def get_config() -> ml_collections.ConfigDict:
    """The shapes_localize config: the localizer base as it is (see the module docstring)."""
    return bases.localizer("shapes_localize")
