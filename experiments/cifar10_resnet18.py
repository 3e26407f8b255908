"""ResNet-18 (CIFAR stem) on CIFAR-10 (real data: needs the tfds `cifar10` dataset prepared).

Command:   jaxcv data prepare cifar10 && jaxcv train cifar10_resnet18 --workdir runs/cifar10_r18
Hardware:  a GPU or TPU (about 30 minutes on one modern GPU); on 2 CPU cores a step of batch 128
           takes seconds, so the full schedule would take days there. Offline without the data,
           the run stops with a message naming the dataset, how to prepare it, and the built-in
           `shapes_classify` alternative.
Expected:  test accuracy about 0.95 (the usual ResNet-18 CIFAR-10 recipe: SGD momentum 0.9,
           nesterov, lr 0.1 with warmup and cosine decay, weight decay 5e-4, random crop + flip,
           label smoothing 0.1, about 120 epochs).
Precision: ``model.dtype="auto"`` (jaxcv/models/layers.py): bfloat16 compute on a GPU or TPU,
           float32 on CPU; ``--set model.dtype=float32`` for float32 everywhere.
"""

import ml_collections

from . import bases


def get_config() -> ml_collections.ConfigDict:
    """The cifar10_resnet18 config (see the module docstring)."""
    config = bases.classifier("cifar10_resnet18")
    config.data.update(name="cifar10", batch_size=128, eval_batch_size=500, augment=True)
    bases.select_on(config, "train[45000:]")
    config.data.train_split = "train[:45000]"
    config.model = ml_collections.ConfigDict(
        {"name": "resnet18", "num_classes": None, "stem": "cifar", "dtype": "auto"}
    )
    config.optimizer = bases.sgd(0.1, nesterov=True, weight_decay=5e-4, warmup_steps=1000)
    config.train.update(
        num_steps=47000,  # about 120 epochs of 50,000 images at batch 128
        log_every=100,
        eval_every=2000,
        checkpoint_every=2000,
        keep_checkpoints=3,
        label_smoothing=0.1,
    )
    return config
