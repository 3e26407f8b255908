"""FCN-8s on VGG-16, PASCAL VOC 2012 semantic segmentation, with the paper's settings.

Command:   jaxcv data prepare voc/2012-segmentation --manual-dir DIR   (once; DIR holds the
           official VOCtrainval_11-May-2012.tar or its VOCdevkit/, see the README)
           jaxcv train voc2012_fcn8s --workdir runs/voc2012_fcn8s
Hardware:  one GPU/TPU (VGG-16 at 500x500, 134M parameters). Not run here: this machine has no
           VOC data and 2 CPU cores; only smoke-tested, on a fake VOCdevkit with small images
           (tests/data/test_voc_segmentation.py) and on tfds mock data (JAXCV_SLOW_TESTS=1).
Expected:  Long, Shelhamer & Darrell (CVPR 2015) report FCN-8s (ImageNet-initialised VGG-16)
           at 62.7 mean IU on a subset of VOC 2011 val (pixel acc. 90.3, mean acc. 75.9, f.w.
           IU 83.2) and 62.2 mean IU on VOC 2012 test, trained on SBD's 8,498 train images.
           This config trains on VOC 2012 train only (1,464 images; SBD is out of scope) and
           evaluates on VOC 2012 val (1,449): expect less than the paper, and far less without
           ImageNet initialisation. results.json: `validation/mIoU`, `validation/pixel_accuracy`,
           `validation/mean_accuracy`, `validation/fwIoU`.

Model: `fcn8s` with the VGG-16 trunk (13 convs, no BatchNorm), `fc6` a 7x7 convolution of
4,096 channels (VGG-16's fc6 reshaped), `fc7` 1x1, dropout 0.5 after both, score layers on
pool4 and pool3 zero-initialised, transposed-conv upsampling initialised to bilinear
interpolation (jaxcv.models.fcn). The last upsampling, `upscore8`, is fixed to bilinear
(`optimizer.freeze`), as in the paper; the two 2x ones are learned (the reference code
fixes all three: add "upscore2/" and "upscore_pool4/").

Data: whole images at batch 1, as the paper trains. Static shapes under jit need one input
size, so every image is padded at the bottom/right to 500x500 (the largest VOC size; the
dataset's `fit="pad"`: zeros after normalisation, label 255 = ignore), and the padding counts
in neither the loss nor the metrics. ImageNet mean/std normalisation of RGB images, the
convention of torchvision's VGG-16 weights. No augmentation (the paper found mirroring and
jittering gave no improvement).

The paper's optimisation (the reference "at-once" FCN-8s) and what jaxcv does:

* SGD, momentum 0.99, batch 1: followed.
* Fixed learning rate 1e-10 on the *summed* per-pixel loss (Caffe `normalize: false`): jaxcv's
  loss is the mean over labelled pixels, whose gradient is 1/N of the sum's, so the same steps
  need lr = 1e-10 * N; N ~ 187,500 for a typical 500x375 VOC image: lr = 1.9e-5, constant.
  (The per-image N varies by about 2x over VOC; the mean loss is steadier.)
* Weight decay 5e-4 on the summed loss, i.e. 5e-4 * 1e-10 per step: the same decay on the mean
  loss is 5e-4 / N = 2.7e-9 (practically none, as in Caffe). Biases are not decayed (as
  `decay_mult: 0` there).
* Doubled learning rate for biases: not followed (jaxcv.train.optim has no per-parameter rate
  multipliers; with a constant rate it only speeds up the biases).
* Caffe's 100-pixel zero padding of conv1_1 and the crop offsets: not followed; jaxcv's FCN
  keeps sizes with "same" padding and pads the input to a multiple of 32 instead (aligned
  exactly, see jaxcv/models/fcn.py). The at-once net's 0.01 / 0.0001 scaling of the pool4 /
  pool3 skips is not used either (the score layers start at zero anyway).
* ImageNet initialisation of VGG-16: the paper's starting point, and what makes 62 mIoU
  possible: `jaxcv convert torchvision vgg16 vgg16-397923af.pth runs/vgg16`, then
  `--set model.init_from=runs/vgg16` loads the 13 convs and fc6/fc7, convolutionalised to the
  7x7 and 1x1 kernels (134.3M parameters, `experiments/bench/trunk_transfer.py`); the score
  and upsampling layers keep their initialisation. Without it the trunk starts from scratch
  here, which with this tiny fixed rate will not get far.
* Schedule: 100,000 iterations of one image (about 68 epochs of VOC 2012 train).
"""

import ml_collections

from . import bases, shapes_fcn8s

TYPICAL_PIXELS = 500 * 375  # labelled pixels of a typical VOC image (the summed-loss scale)
CAFFE_LEARNING_RATE = 1e-10  # on the summed loss
CAFFE_WEIGHT_DECAY = 5e-4


def get_config() -> ml_collections.ConfigDict:
    """The voc2012_fcn8s config: shapes_fcn8s's model on VGG-16 (see the module docstring)."""
    config = shapes_fcn8s.get_config()
    config.name = "voc2012_fcn8s"
    config.data = bases.data(
        "voc/2012-segmentation",
        batch_size=1,
        eval_batch_size=8,
        image_size=(500, 500),  # a padded canvas (fit="pad"), not a resize
        max_objects=1,  # unused (no boxes)
        eval_split="validation",
    )

    config.model.update(
        num_classes=21,  # background + 20 VOC classes
        stages=((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512,) * 3),
        batch_norm=False,
        fc_width=4096,
        fc6_kernel=7,
        dropout_rate=0.5,
    )
    del config.model.input_scale  # shapes_fcn8s's 2x-input option is not part of this recipe

    config.optimizer = bases.sgd(
        CAFFE_LEARNING_RATE * TYPICAL_PIXELS,
        momentum=0.99,
        weight_decay=CAFFE_WEIGHT_DECAY / TYPICAL_PIXELS,
        schedule="constant",
        warmup_steps=0,
    )
    config.optimizer.freeze = ["upscore8/"]
    config.train.update(
        num_steps=100_000,
        log_every=100,
        eval_every=10_000,
        checkpoint_every=2_000,
        best_metric=None,  # a fixed schedule, the final model on val (the test set has no labels)
    )
    return config
