"""The demo's Faster R-CNN: `shapes_faster_rcnn` on a few minutes of CPU, in batches of 2.

Command:   jaxcv train demo_faster_rcnn --workdir runs/demo_faster_rcnn (also run by `make demo`)
Hardware:  2 CPU cores, no GPU, no network (shapes/multi is generated locally on first use).
Expected:  test VOC07 mAP@0.5 >= 0.70 on the 1,000 test images (measured: see the README's
           results table, from `make demo`).

The same detector, input (256x256), anchors and optimizer as `shapes_faster_rcnn`, trained for
4,800 images (0.8 epoch) in batches of 2 with 64 sampled RoIs per image, evaluated once at the
end. The batch size was chosen on the validation split, at 4,800 training images each
(AdamW 1e-3, cosine, 64 RoIs per image; `--set data.eval_split=validation`):

    batch 8,   600 steps: validation mAP@0.5 0.492
    batch 4, 1,200 steps: validation mAP@0.5 0.765
    batch 2, 2,400 steps: validation mAP@0.5 0.795   <- this config

More updates for the same images is what a short schedule needs (GroupNorm makes the small
batch harmless), and on 2 CPU cores a batch of 2 also runs about twice the images per second
of a batch of 8 (its activations stay in cache).
"""

import ml_collections

from . import shapes_faster_rcnn


def get_config() -> ml_collections.ConfigDict:
    """The demo_faster_rcnn config: a short shapes_faster_rcnn (see the module docstring)."""
    config = shapes_faster_rcnn.get_config()
    config.name = "demo_faster_rcnn"
    config.data.batch_size = 2
    config.detection.roi_batch_size_per_image = 64
    config.optimizer.warmup_steps = 100
    config.train.num_steps = 2400
    config.train.log_every = 50
    config.train.eval_every = 2400
    config.train.checkpoint_every = 1200
    config.train.keep_checkpoints = 1
    # One evaluation, of the final state, on test: nothing is selected on it.
    config.data.eval_split, config.data.test_split = "test", None
    config.train.best_metric = None
    return config
