"""Fast R-CNN with the small stride-16 backbone on `shapes/multi`, on selective-search proposals.

Command:   jaxcv train shapes_fast_rcnn --workdir runs/shapes_fast_rcnn
Hardware:  2 CPU cores (shared), no GPU, no network.
Proposals: selective search "fast" mode (jaxcv.proposals), computed once for the first 2,000
           train images and the 1,000 test images and cached in
           <data_dir>/jaxcv_proposals (measured 0.35 s per 128x128 image on one idle core);
           the best-ranked 500 per image are used: recall of the test ground truth 1.000 at
           IoU 0.5 and 0.994 at 0.7 (train[:2000]: 1.000 / 0.995); 324 proposals per test
           image on average (40 to 1,145).
Expected:  measured with this config (700 steps of batch 4, 1.4 epochs of train[:2000], from
           scratch, on 2 heavily shared cores, 25 minutes wall including 2 minutes of
           compilation): test (1,000 images) VOC07 mAP@0.5 0.290, COCO AP 0.136 / AP50 0.267.
           Resumed to 1,400 steps (`--set train.num_steps=1400 --set train.eval_every=1400`
           on the same workdir; the cosine schedule then restarts from its midpoint at step
           700): mAP@0.5 0.386, COCO AP 0.189 / AP50 0.360. Time per test image: 0.046 s
           for the detector (500 proposals, batches of 50, CPU) plus selective search,
           0.35 s (one idle core) to 0.75 s (cores shared) per 128x128 image. Far from
           converged; shapes_faster_rcnn (1,200 steps of batch 8) reached 0.56.

The model follows the paper with the CPU-sized trunk of shapes_faster_rcnn: one conv pass per
image (four stages, stride 16, GroupNorm, an 8x8 map), RoI max pooling 7x7 of the proposals, a
two-layer 256-wide FC head with softmax over K + 1 classes and class-specific box regression,
the multi-task loss (lambda = 1, smooth-L1), 64 sampled RoIs per image with 25% foreground
(IoU >= 0.5; the ground-truth boxes join the candidates), trained end to end in one jitted
step from scratch; the augmentation is the horizontal flip. Test: every proposal is scored,
per-class NMS 0.3, 100 detections per image.
"""

import ml_collections

from . import bases


def get_config() -> ml_collections.ConfigDict:
    """The shapes_fast_rcnn config: the Faster R-CNN base's data and optimizer, on external
    proposals (see the module docstring)."""
    config = bases.faster_rcnn("shapes_fast_rcnn")
    config.task = "fast_rcnn"
    config.data.update(batch_size=4, image_size=None, train_split="train[:2000]")
    # External proposals joined to the batches (jaxcv.proposals.pipeline).
    config.proposals = bases.proposals(500)
    config.model = bases.detector_model(
        "fast_rcnn",
        bases.small_trunk((32, 64, 96, 128)),
        roi_size=7,
        representation_size=256,
        dropout_rate=0.0,
    )
    config.detection = bases.proposal_detection()
    config.detection.roi_bg_iou_low = 0.1  # background RoIs from IoU [0.1, 0.5), as the paper
    config.train.update(num_steps=700, eval_every=700, checkpoint_every=100)
    return config
