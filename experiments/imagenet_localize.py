"""ImageNet-style classification + localization on real data (tfds `voc/2007`).

Command:   jaxcv train imagenet_localize --workdir runs/imagenet_localize
           (needs `voc/2007` prepared in the tfds data dir: `tfds build voc/2007` on a machine
           with network, then `--set data.data_dir=...`)
Hardware:  one GPU/TPU recommended (224x224 inputs, a VGG-sized trunk); only smoke-tested
           here, on tfds mock data (no real-data figure is claimed).

jaxcv's data registry has no ILSVRC localization dataset (tfds' `imagenet2012` carries no
boxes), so this config runs the ImageNet protocol on VOC 2007: the image's class is its first
annotated object's class (:func:`jaxcv.tasks.localization.image_labels`), the network predicts
one class and one box, and localization accuracy counts an image when the class is right and
the box has IoU >= 0.5 with a ground-truth box of that class. Overfeat-style model: VALID 3x3
conv stages (64..512 channels, BatchNorm, 2x2 pools; stride 32, a 5x5 last pool on 224x224),
class head FC-1024-1024, class-specific box head FC-1024 (one box per class, as in Overfeat's
regressor), smooth-L1 box loss; SGD with momentum, cosine decay; flips as augmentation.
"""

import ml_collections

from . import bases


def get_config() -> ml_collections.ConfigDict:
    """The imagenet_localize config (see the module docstring)."""
    config = bases.localizer("imagenet_localize")
    config.data = bases.data(
        "voc/2007",
        batch_size=64,
        eval_batch_size=64,
        image_size=(224, 224),
        augment=True,
        max_objects=16,
        train_split="train+validation",
    )
    config.model.update(
        channels=(64, 128, 256, 512, 512),
        hidden_units=(1024, 1024),
        box_hidden_units=(1024,),
        class_specific=True,
        dropout_rate=0.5,
    )
    config.optimizer = bases.sgd(0.01, weight_decay=5e-4, warmup_steps=500, grad_clip_norm=10.0)
    config.train.update(
        num_steps=40000, log_every=100, eval_every=5000, checkpoint_every=2500, keep_checkpoints=3
    )
    config.train.best_metric = None  # trained on trainval for a fixed schedule, as the paper
    return config
