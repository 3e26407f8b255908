"""Conv trunks returning named feature maps, and the classifiers built on them."""

from jaxcv.models.backbones.cnn import CNN, CNNBackbone
from jaxcv.models.backbones.resnet import (
    RESNET_SPECS,
    BasicBlock,
    Bottleneck,
    ResNet,
    ResNet18,
    ResNet34,
    ResNet50,
    ResNetBackbone,
    ResNetStage,
)
from jaxcv.models.backbones.small import SmallBackbone, SmallClassifier
from jaxcv.models.backbones.vgg import (
    VGG,
    VGG11,
    VGG11_STAGES,
    VGG11BN,
    VGG16,
    VGG16_STAGES,
    VGG16BN,
    VGGBackbone,
)

__all__ = [
    "CNN",
    "RESNET_SPECS",
    "VGG",
    "VGG11",
    "VGG11BN",
    "VGG11_STAGES",
    "VGG16",
    "VGG16BN",
    "VGG16_STAGES",
    "BasicBlock",
    "Bottleneck",
    "CNNBackbone",
    "ResNet",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "ResNetBackbone",
    "ResNetStage",
    "SmallBackbone",
    "SmallClassifier",
    "VGGBackbone",
]
