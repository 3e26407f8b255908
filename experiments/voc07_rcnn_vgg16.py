"""R-CNN with VGG-16 on PASCAL VOC 2007, with the paper's settings (Girshick et al. 2014).

Command:   jaxcv train voc07_rcnn_vgg16 --workdir runs/voc07_rcnn_vgg16
           (needs `voc/2007` prepared; proposals as in voc07_fast_rcnn_vgg16, same caches)
Hardware:  one GPU/TPU (every proposal is a 224x224 VGG-16 pass: ~2,000 per test image);
           only smoke-tested here, on tfds mock data for a few steps (no real-data figure is
           claimed). The paper reports 66.0 mAP on VOC 2007 test with VGG-16 ("O-Net") and
           box regression, 62.2 without (AlexNet: 58.5 / 54.2).

Settings as in the paper:

* selective search "fast" mode, about 2,000 proposals per image;
* each proposal dilated by 16 pixels of context at the warped size and warped to 224x224
  (VGG-16's input; 227 for AlexNet); context outside the image is the mean (zero);
* VGG-16's five conv stages, ``pool5`` (7x7x512), fc6/fc7 of 4,096 with dropout 0.5;
* fine-tuning: windows labelled by IoU >= 0.5 with a ground-truth box (its class), the rest
  background; minibatches of 128 windows (32 foreground, 96 background): 4 images x 32 windows
  here; SGD at 1e-3 (a tenth of the pre-training rate), momentum 0.9, weight decay 5e-4;
* box regression on ``pool5`` features (class-specific, the paper's targets);
* test: every proposal scored (chunks of 64 crops), per-class greedy NMS 0.3.

Differences on purpose: the softmax of the fine-tuned network replaces the per-class linear
SVMs and their hard-negative mining (Fast R-CNN, sec. 5.4: as good); the box regressor is a
linear layer trained jointly rather than a ridge regression fitted afterwards; images are
resized to a fixed 500x500 before warping (static shapes). VOC07 AP leaves "difficult"
objects out, as the devkit does.

The paper's recipe, from torchvision's ImageNet VGG-16 (conv1_1 ... fc7 load, 134.3M
parameters, `experiments/bench/trunk_transfer.py`; the classifier layer is dropped, the box
outputs start fresh), with conv1-conv2 frozen as the paper::

    jaxcv convert torchvision vgg16 vgg16-397923af.pth runs/vgg16
    jaxcv train voc07_rcnn_vgg16 --workdir runs/voc07_rcnn_vgg16 \\
        --set model.init_from=runs/vgg16 \\
        --set 'optimizer.freeze=["backbone/conv1_", "backbone/conv2_"]'
"""

import ml_collections

from . import bases, voc07_fast_rcnn_vgg16


def get_config() -> ml_collections.ConfigDict:
    """The voc07_rcnn_vgg16 config (see the module docstring)."""
    config = voc07_fast_rcnn_vgg16.get_config()
    config.name = "voc07_rcnn_vgg16"
    config.task = "rcnn"
    config.data.update(batch_size=4, eval_batch_size=2, image_size=(500, 500))
    config.model = bases.detector_model(
        "rcnn",
        {"backbone": "vgg16"},
        warp_size=224,
        context_padding=16.0,
        representation_size=4096,
        dropout_rate=0.5,
        box_features="pool5",
    )
    config.detection.update(roi_batch_size_per_image=32, test_chunk_size=64, roi_bg_iou_low=0.0)
    return config
