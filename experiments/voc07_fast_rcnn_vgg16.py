"""Fast R-CNN with VGG-16 on PASCAL VOC 2007, with the paper's settings (Girshick 2015).

Command:   jaxcv train voc07_fast_rcnn_vgg16 --workdir runs/voc07_fast_rcnn_vgg16
           (needs `voc/2007` prepared in the tfds data dir; selective-search proposals of
           trainval and test are computed on first use and cached, about 0.5-2 s per image
           per CPU core in "fast" mode, so some hours for the 9,963 images)
Hardware:  one GPU/TPU; only smoke-tested here, on tfds mock data for a few steps (no
           real-data figure is claimed). The paper reports 66.9 mAP on VOC 2007 test (07
           trainval, ImageNet-pretrained VGG-16, single scale 600).

Settings as in the paper:

* selective search "fast" mode, about 2,000 proposals per image (the best-ranked 2,000 here);
* VGG-16 ``conv5_3`` (stride 16), RoI max pooling to 7x7 in place of ``pool5``, fc6/fc7 of
  4,096 units with dropout 0.5, sibling softmax (21 classes) and class-specific box regression;
* minibatches of 2 images with 128 RoIs (64 per image), 25% foreground (IoU >= 0.5);
  background RoIs from IoU [0.1, 0.5) (the paper's hard-example heuristic);
  horizontal flips; multi-task loss with lambda = 1 and smooth-L1;
* input: the paper rescales the shorter side to 600 pixels; shapes are static under jit
  here, so every image is resized to 600x800 and detections are mapped back to the original
  size for evaluation;
* SGD, momentum 0.9, weight decay 5e-4, learning rate 1e-3 for 30k minibatches, then 1e-4
  for 10k; test: per-class NMS 0.3.

The paper's recipe, from torchvision's ImageNet VGG-16 (conv1_1 ... fc7 load, 134.3M
parameters, `experiments/bench/trunk_transfer.py`; the classifier layer is dropped, the box
outputs start fresh), with conv1-conv2 frozen as the paper::

    jaxcv convert torchvision vgg16 vgg16-397923af.pth runs/vgg16
    jaxcv train voc07_fast_rcnn_vgg16 --workdir runs/voc07_fast_rcnn_vgg16 \\
        --set model.init_from=runs/vgg16 \\
        --set 'optimizer.freeze=["backbone/conv1_", "backbone/conv2_"]'

(fc6/fc7 land in the box head.) Without ``init_from`` the trunk starts from scratch. VOC07 AP
leaves "difficult" objects out, as the devkit does.
"""

import ml_collections

from . import bases, voc07_faster_rcnn_vgg16


def get_config() -> ml_collections.ConfigDict:
    """The voc07_fast_rcnn_vgg16 config (see the module docstring).

    Data, optimizer and schedule are those of ``voc07_faster_rcnn_vgg16`` (the two papers
    share them); the model, the RoI settings and the external proposals are Fast R-CNN's.
    """
    config = voc07_faster_rcnn_vgg16.get_config()
    config.name = "voc07_fast_rcnn_vgg16"
    config.task = "fast_rcnn"
    config.proposals = bases.proposals(2000)
    config.model = bases.detector_model(
        "fast_rcnn", {"backbone": "vgg16"}, roi_size=7, representation_size=4096, dropout_rate=0.5
    )
    config.detection = bases.proposal_detection()
    config.detection.roi_bg_iou_low = 0.1  # background RoIs from IoU [0.1, 0.5), as the paper
    return config
