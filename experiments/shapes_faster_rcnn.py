"""Faster R-CNN with the small stride-16 backbone on the built-in `shapes/multi` scenes.

Command:   jaxcv train shapes_faster_rcnn --workdir runs/shapes_faster_rcnn
Hardware:  2 CPU cores, no GPU, no network (shapes/multi is generated locally on first use:
           6,000 train / 500 validation / 1,000 test 128x128 scenes with 1-5 objects of 4
           classes).
Expected:  measured with this config (3,000 steps of batch 8, 4 epochs): test VOC07 mAP@0.5
           0.905 (0.872 at step 1,000, 0.903 at 2,000), COCO AP 0.817 / AP50 0.956 / AP75
           0.896 on the 1,000 test images; 1.1-1.3 s per step with the 2 cores shared with one
           other training, 70 minutes wall, compile 19 s. The issue's goal (mAP@0.5 >= 0.90) is
           met. A 1,500-step schedule of the same config gave 0.884 / AP 0.756.

Why the input is upscaled to 256x256: the objects are small for a stride-16 detector (square
root of the box area on the test split: median 33 px, 5% below 17 px, 24% below 24 px at
128x128), so at the native size the feature map is 8x8 and most objects cover one or two
cells. The first version (128x128 input, anchors 16/32/64, widths 32..128, 1,200 steps) reached
mAP@0.5 0.562 / COCO AP 0.408. Doubling the input (a 16x16 map; anchors doubled to 32, 64,
128 px) with narrower early stages (widths 16, 32, 64, 128: 1.1 s per step against 1.5 s for
32, 64, 96, 128 at 256 px, same load) gave 0.832 after 750 steps and 0.884 after 1,500.

The model is trained from scratch, end to end (approximate joint training in one jitted step):
a four-stage conv trunk (stride 16, GroupNorm) gives a 16x16 map; the RPN has 9 anchors per
position (sizes 32, 64, 128 pixels of the 256-px input, aspect ratios 0.5, 1, 2); 256 sampled
anchors per image; proposals: the 600 best of the 2,304 anchors before NMS, 128 kept in
training and 100 at test time; 128 sampled RoIs per image (25% foreground); RoI align 7x7; a
two-layer 256-wide FC box head. AdamW with warmup and a cosine decay, gradient clipping.
Detections are mapped back to the 128x128 originals for evaluation.
"""

import ml_collections

from . import bases


def get_config() -> ml_collections.ConfigDict:
    """The shapes_faster_rcnn config: the Faster R-CNN base as it is (see the module
    docstring)."""
    return bases.faster_rcnn("shapes_faster_rcnn")
