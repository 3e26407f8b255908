"""The demo's small Faster R-CNN: `shapes_faster_rcnn` shrunk to a few minutes of CPU training.

Command:   jaxcv train demo_faster_rcnn --workdir runs/demo_faster_rcnn (also run by `make demo`)
Hardware:  2 CPU cores, no GPU, no network (shapes/multi is generated locally on first use).
Expected:  measured once (`make demo WORKDIR=runs/demo_check`, shapes/multi already cached):
           test VOC07 mAP@0.5 0.308 (far below `shapes_faster_rcnn`'s 0.884: a 500-step
           schedule at 192x192); 2,235 s of training wall and 157 s compile with the 2 cores
           shared with other training jobs (load 15-19), the whole `make demo` 44 min. The
           10-minute target of the demo is NOT verified under that load.

Same detector, targets and optimizer as `shapes_faster_rcnn` (see there), with the input
upscaled to 192x192 (a 12x12 stride-16 map), anchors scaled with it (24, 48, 96 pixels), a
narrower trunk and a 500-step schedule, evaluated once at the end on the 1,000 test images.
"""

import ml_collections

from jaxcv.experiments import load_config


def get_config() -> ml_collections.ConfigDict:
    """The demo_faster_rcnn config: a short shapes_faster_rcnn (see the module docstring)."""
    config = load_config("shapes_faster_rcnn")
    config.name = "demo_faster_rcnn"
    config.data.image_size = (192, 192)
    config.model.backbone_widths = (16, 32, 64, 96)
    config.model.anchor_sizes = (24.0, 48.0, 96.0)
    config.detection.rpn_pre_nms_top_n_train = 400
    config.detection.rpn_pre_nms_top_n_test = 400
    config.optimizer.warmup_steps = 30
    config.train.num_steps = 500
    config.train.eval_every = 500
    config.train.checkpoint_every = 500
    config.train.keep_checkpoints = 1
    return config
