"""The FCN paper's table on shapes: patch CNN, FCN-32s -> 16s -> 8s, DeconvNet, all pre-trained.

Command:   jaxcv train segmentation_family --workdir runs/segmentation_family
           (a rerun resumes where it stopped)
Hardware:  2 CPU cores, no GPU, no network (shapes/single and shapes/multi are generated
           locally on first use).
Expected:  the measured table is in the README (results), with this command.

Study `segmentation_family` (jaxcv.studies.segmentation_family). The ImageNet stage is
`pretrain` (the shapes_vgg_pretrain experiment: the segmenters' small VGG with fc6/fc7,
classifying shapes/single at 96x96); its run folder is reused when it has finished, also when
trained on its own (`jaxcv train shapes_vgg_pretrain --workdir W/pretrain`). Every model starts
from it (`model.init_from`: conv and BatchNorm layers, fc6/fc7 convolutionalised) or, for
FCN-16s and FCN-8s, from the coarser FCN as in the FCN paper (new skip layers zero-initialised,
the upsampling re-initialised to bilinear). Each is trained on shapes/multi with its checkpoint
chosen on validation mIoU and the test split evaluated once:

* `fcn32s`, `fcn16s`, `fcn8s`: the shapes FCNs with fc6 a 3x3 conv (the pre-trained fc6) at
  `model.input_scale=2`: the 128x128 scenes run at 256x256, so objects measure 26..76 px, the
  scale the trunk was trained at (logits are averaged back to the 128x128 labels);
* `deconvnet`: the shapes DeconvNet with a 3x3 valid fc6 (the pre-trained one), at the same
  input scale, trained on whole scenes (the paper's two-stage training on object-centred
  crops then proposals does not apply to scenes of 2..6 small objects; what it ensembles with
  FCN-8s is kept: `deconvnet_fcn8s_ensemble`, the mean of the two softmax maps);
* `patch_cnn`: the first three VGG stages on 17x17 patches at scales 1, 2 and 4 (17, 34 and
  68 px of context), trained on sampled pixels, evaluated densely (every pixel's patches)
  on the `data.eval_split`/`test_split` subsets its config names, the cost it is known for.

Then `timing`: inference seconds per 128x128 test image at batch 1 for each, and the patch CNN
over FCN-8s ratio. Every stage is a whole config (`--set fcn32s.train.num_steps=2` shrinks one;
tests/test_segmentation_family.py smoke-runs the study so); `data.data_dir` is given to all.
"""

import ml_collections

from . import (
    bases,
    shapes_deconvnet,
    shapes_fcn8s,
    shapes_fcn16s,
    shapes_fcn32s,
    shapes_patch_cnn,
    shapes_vgg_pretrain,
)


def _fine_tune(config, steps: int, every: int, learning_rate: float, input_scale: int):
    """From a pre-trained start: ``steps`` steps at peak ``learning_rate``, the checkpoint chosen
    on validation mIoU every ``every`` steps, test once; the model at ``input_scale``."""
    config.model.update(fc6_kernel=3, input_scale=input_scale)
    config.data.batch_size = 8  # at input_scale 2 a step of 8 costs twice one of 16 at scale 1
    config.optimizer.update(learning_rate=learning_rate, warmup_steps=50)
    config.train.update(num_steps=steps, eval_every=every, checkpoint_every=every)
    return config


def get_config() -> ml_collections.ConfigDict:
    """The segmentation_family config (see the module docstring)."""
    config = bases.experiment("segmentation_family", "segmentation", study="segmentation_family")
    config.data = ml_collections.ConfigDict({"name": "shapes/multi", "data_dir": None})
    config.pretrain = shapes_vgg_pretrain.get_config()
    config.fcn32s = _fine_tune(shapes_fcn32s.get_config(), 1200, 400, 1e-3, 2)
    config.fcn16s = _fine_tune(shapes_fcn16s.get_config(), 800, 400, 5e-4, 2)
    config.fcn8s = _fine_tune(shapes_fcn8s.get_config(), 800, 400, 5e-4, 2)
    config.deconvnet = _fine_tune(shapes_deconvnet.get_config(), 2000, 500, 1e-3, 2)

    patch = shapes_patch_cnn.get_config()
    patch.model.update(
        stages=shapes_vgg_pretrain.STAGES[:3], batch_norm=True, scales=(1, 2, 4), hidden_units=256
    )
    patch.model.channels = ()
    # Dense evaluation classifies all 16,384 pixels' patches of an image (49,152 patches, about
    # 3 s on 2 cores, slower per image in larger batches): the checkpoint is chosen on 50
    # validation scenes and 200 test scenes are evaluated.
    patch.data.update(
        batch_size=8, eval_batch_size=2, eval_split="validation[:50]", test_split="test[:200]"
    )
    patch.segmentation.chunk_size = 2048
    patch.optimizer.update(learning_rate=1e-3, warmup_steps=50)
    patch.train.update(
        num_steps=1500, eval_every=750, checkpoint_every=750, best_metric="validation[:50]/mIoU"
    )
    config.patch_cnn = patch

    config.family = ml_collections.ConfigDict({"timing_images": 10})
    return config
