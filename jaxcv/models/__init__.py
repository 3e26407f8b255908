"""jaxcv's Flax Linen models: hyperparameters are fields, parameters live outside.

Look a model up by name in :data:`MODELS` (an explicit dict) or build it with
:func:`build_model`. Every classifier follows one contract::

    logits = model.apply(variables, images, train=False)            # (B, num_classes) float32
    logits, updates = model.apply(variables, images, train=True,
                                  rngs={"dropout": key}, mutable=["batch_stats"])

with ``images`` NHWC ``(B, H, W, C)`` float, ``variables = {"params": ..., "batch_stats": ...}``
(``batch_stats`` only for models with BatchNorm), a ``dtype`` field for the compute dtype
(``"bfloat16"`` for mixed precision; parameters stay float32) and a ``features`` method returning
the backbone's named feature maps.
"""

import dataclasses
from typing import Any

import flax.linen as nn

from jaxcv.models.autoencoder import Autoencoder, EncoderClassifier
from jaxcv.models.backbones import (
    CNN,
    VGG,
    VGG11,
    VGG11BN,
    VGG16,
    VGG16BN,
    CNNBackbone,
    ResNet,
    ResNet18,
    ResNet34,
    ResNet50,
    ResNetBackbone,
    ResNetStage,
    SmallClassifier,
    VGGBackbone,
)
from jaxcv.models.deconvnet import DeconvNet
from jaxcv.models.fast_rcnn import FastRCNN
from jaxcv.models.faster_rcnn import FasterRCNN
from jaxcv.models.faster_rcnn_fpn import FasterRCNNFPN
from jaxcv.models.fcn import FCN, FCN8s, FCN16s, FCN32s
from jaxcv.models.fcn_resnet import FCNResNet
from jaxcv.models.fpn import ResNetFPNBackbone
from jaxcv.models.layers import canonical_dtype
from jaxcv.models.localizer import Localizer
from jaxcv.models.mask_head import MaskRCNN
from jaxcv.models.mask_rcnn_fpn import MaskRCNNFPN
from jaxcv.models.patch_cnn import PatchCNN
from jaxcv.models.rcnn import RCNN
from jaxcv.models.vae import VAE

MODELS: dict[str, type[nn.Module]] = {
    "cnn": CNN,
    "vgg": VGG,
    "vgg11": VGG11,
    "vgg11_bn": VGG11BN,
    "vgg16": VGG16,
    "vgg16_bn": VGG16BN,
    "resnet18": ResNet18,
    "resnet34": ResNet34,
    "resnet50": ResNet50,
    "small_classifier": SmallClassifier,
    "autoencoder": Autoencoder,
    "encoder_classifier": EncoderClassifier,
    "vae": VAE,
    "fcn": FCN,
    "fcn32s": FCN32s,
    "fcn16s": FCN16s,
    "fcn8s": FCN8s,
    "fcn_resnet50": FCNResNet,
    "deconvnet": DeconvNet,
    "patch_cnn": PatchCNN,
    "localizer": Localizer,
    "faster_rcnn": FasterRCNN,
    "mask_rcnn": MaskRCNN,
    "rcnn": RCNN,
    "fast_rcnn": FastRCNN,
    "resnet_fpn": ResNetFPNBackbone,
    "faster_rcnn_fpn": FasterRCNNFPN,
    "mask_rcnn_fpn": MaskRCNNFPN,
}

_DTYPE_FIELDS = ("dtype", "param_dtype")


def model_fields(name: str) -> tuple[str, ...]:
    """The hyperparameter fields :func:`build_model` accepts for model ``name``."""
    cls = _model_class(name)
    return tuple(
        f.name for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")
    )


def _model_class(name: str) -> type[nn.Module]:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def _freeze(value: Any) -> Any:
    """Lists (e.g. from a config override) become tuples, so modules stay hashable."""
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def build_model(name: str, **fields: Any) -> nn.Module:
    """Build model ``name`` of :data:`MODELS` with the given hyperparameter fields.

    Args:
      name: a key of :data:`MODELS`, e.g. ``"resnet18"``.
      **fields: module fields, e.g. ``num_classes=10, stem="cifar", dtype="bfloat16"``.
        ``dtype``/``param_dtype`` may be strings; lists become tuples.

    Returns:
      The (unbound) Flax module.

    Raises:
      ValueError: for an unknown name (listing valid names), unknown fields (listing the valid
        fields) or a non-floating dtype.
    """
    cls = _model_class(name)
    valid = model_fields(name)
    unknown = sorted(set(fields) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown field(s) {unknown} for model {name!r}; valid fields: {', '.join(valid)}"
        )
    kwargs = {k: _freeze(v) for k, v in fields.items()}
    for key in _DTYPE_FIELDS:
        if key in kwargs:
            kwargs[key] = canonical_dtype(kwargs[key])
    return cls(**kwargs)


__all__ = [
    "CNN",
    "MODELS",
    "VGG",
    "CNNBackbone",
    "ResNet",
    "ResNetBackbone",
    "ResNetStage",
    "VGGBackbone",
    "build_model",
    "model_fields",
]
