"""Faster R-CNN with VGG-16 on PASCAL VOC 2007, with the paper's settings (Ren et al. 2015).

Command:   jaxcv train voc07_faster_rcnn_vgg16 --workdir runs/voc07_faster_rcnn_vgg16
           (needs `voc/2007` prepared in the tfds data dir: `tfds build voc/2007` on a machine
           with network, then `--set data.data_dir=...`)
Hardware:  one GPU/TPU (600x800 inputs through VGG-16); only smoke-tested here, on tfds mock
           data for a few steps (no real-data figure is claimed). The paper reports 69.9 mAP
           on VOC 2007 test (trained on 07 trainval, ImageNet-pretrained VGG-16).

Settings as in the paper and its reference implementation (py-faster-rcnn):

* backbone VGG-16 ``conv5_3`` (stride 16, 512 channels); RPN 3x3 conv of 512 channels;
* anchors of 128, 256, 512 pixels x aspect ratios 0.5, 1, 2 (9 per position);
* input: the paper rescales the shorter side to 600 pixels (longer side at most 1000); shapes
  are static under jit here, so every image is resized to a fixed 600x800 (VOC's typical 3:4
  aspect ratio). Detections are mapped back to the original image size for evaluation;
* RPN: 256 sampled anchors per image, up to half positive, IoU >= 0.7 positive, < 0.3
  negative; proposals: 12,000 top anchors before NMS (0.7) and 2,000 after in training,
  6,000 / 300 at test time;
* RoI head: 128 RoIs per image with up to 25% foreground (IoU >= 0.5; background [0, 0.5)),
  RoI pooling to 7x7 (RoI align here, torchvision's choice), fc6/fc7 of 4096 units;
* SGD with momentum 0.9 and weight decay 5e-4, learning rate 1e-3 for 60k iterations then
  1e-4 for 20k (the paper's VOC schedule), 2 images per batch, horizontal flips.

The paper's recipe, from torchvision's ImageNet VGG-16 (conv1_1 ... fc7 load, 134.3M
parameters, `experiments/bench/trunk_transfer.py`; the classifier layer is dropped, the RPN /
box outputs start fresh), with conv1-conv2 frozen as the paper::

    jaxcv convert torchvision vgg16 vgg16-397923af.pth runs/vgg16
    jaxcv train voc07_faster_rcnn_vgg16 --workdir runs/voc07_faster_rcnn_vgg16 \\
        --set model.init_from=runs/vgg16 \\
        --set 'optimizer.freeze=["backbone/conv1_", "backbone/conv2_"]'

Without ``init_from`` the trunk starts from scratch. Differences from the paper, on purpose:
the box head's dropout is not used (torchvision's TwoMLPHead has none either). VOC07 AP leaves
"difficult" objects out, as the devkit does (the dataset's ``ignore`` flags reach the
evaluator).
"""

import ml_collections

from . import bases


def get_config() -> ml_collections.ConfigDict:
    """The voc07_faster_rcnn_vgg16 config (see the module docstring)."""
    config = bases.faster_rcnn("voc07_faster_rcnn_vgg16")
    config.data = bases.data(
        "voc/2007",
        batch_size=2,
        eval_batch_size=8,
        image_size=(600, 800),
        augment=True,
        max_objects=48,
        train_split="train+validation",
    )
    config.model = bases.detector_model(
        "faster_rcnn",
        {"backbone": "vgg16"},
        anchor_sizes=(128.0, 256.0, 512.0),
        aspect_ratios=(0.5, 1.0, 2.0),
        rpn_channels=512,
        roi_size=7,
        sampling_ratio=2,
        aligned=False,
        representation_size=4096,
    )
    config.detection.update(
        rpn_positive_fraction=0.5,
        rpn_fg_iou=0.7,
        rpn_bg_iou=0.3,
        rpn_pre_nms_top_n_train=12000,
        rpn_post_nms_top_n_train=2000,
        rpn_pre_nms_top_n_test=6000,
        rpn_post_nms_top_n_test=300,
        rpn_nms_threshold=0.7,
        box_nms_threshold=0.3,
    )
    config.optimizer = bases.sgd(
        1e-3,
        weight_decay=5e-4,
        warmup_steps=500,
        schedule="step",
        boundaries=(30000,),
        grad_clip_norm=10.0,
    )
    # 60k + 20k iterations of one image = 40k steps of two images, the decay after 30k.
    config.train.update(num_steps=40000, log_every=100, eval_every=10000, checkpoint_every=2000)
    # The paper's protocol: a fixed schedule on trainval, the final model tested; no selection.
    config.train.best_metric = None
    return config
