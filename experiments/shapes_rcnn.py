"""R-CNN (warped proposals, one CNN pass per proposal) on `shapes/multi`.

Command:   jaxcv train shapes_rcnn --workdir runs/shapes_rcnn
Hardware:  2 CPU cores (shared), no GPU, no network.
Proposals: selective search "fast" mode, cached (the same caches as shapes_fast_rcnn: first
           2,000 train images, the test split); 500 per training image, the best-ranked 100
           per test image (test recall 0.992 at IoU 0.5, 0.965 at 0.7).
Expected:  measured with this config (300 steps of batch 4 = 128 windows per step, 0.6
           epoch of train[:2000], from scratch, 19 minutes wall on 2 heavily shared cores,
           1.3 images/s): on the first 200 test images (R-CNN scores every proposal; the
           full split was not evaluated for time) VOC07 mAP@0.5 0.313, COCO AP 0.192 / AP50
           0.306. Time per test image: 0.129 s for the 100 warped crops through the CNN
           (batches of 50 images, CPU) plus selective search (0.35-0.75 s per image).
           Far from converged (loss still falling).

Every proposal is dilated to leave 4 pixels of context at the warped size (the paper's 16 at
227 pixels is 2.3 at this 32-pixel warp; 4 keeps a little more context for the small objects
here) and warped to 32x32 with a bilinear crop-and-resize (64x64 took about 9 s per step on
the shared CPU); the trunk is the small stride-16 conv trunk of shapes_faster_rcnn run on each
crop (2x2x128 "pool5"), then two 256-wide FC layers, a softmax over K + 1 classes (instead
of the paper's per-class SVMs) and class-specific box regression from pool5 (as the paper).
Fine-tuning samples 32 windows
per image (25% foreground at IoU >= 0.5, ground truth included), batches of 4 images (the
paper's 128 windows per minibatch), from scratch. Test: every proposal is warped and scored in
chunks of 50, per-class NMS 0.3.
"""

import ml_collections

from . import bases, shapes_fast_rcnn


def get_config() -> ml_collections.ConfigDict:
    """The shapes_rcnn config (see the module docstring)."""
    config = shapes_fast_rcnn.get_config()
    config.name = "shapes_rcnn"
    config.task = "rcnn"
    config.data.eval_split, config.data.test_split = "validation[:200]", "test[:200]"
    config.proposals.num_test = 100
    config.model = bases.detector_model(
        "rcnn",
        bases.small_trunk((32, 64, 96, 128)),
        warp_size=32,
        context_padding=4.0,
        representation_size=256,
        dropout_rate=0.0,
        box_features="pool5",
    )
    config.detection.update(roi_batch_size_per_image=32, test_chunk_size=50, roi_bg_iou_low=0.0)
    config.train.update(
        num_steps=300, eval_every=300, checkpoint_every=100, best_metric="validation[:200]/mAP50"
    )
    return config
