"""The model zoo. Every model is built as ``Model(in_channels=, image_size=, num_classes=, **options)``.

The dataset config supplies the first three, so one model config works on every dataset it can take; a
model that cannot take a dataset's images raises a one-line :class:`~lth.core.errors.ConfigError`.
Every model names its output layer ``out`` (so ``prune.exclude: [model.out]`` works for all of them).
Models of other libraries come from :mod:`lth.models.ecosystem` (their libraries imported only when one is built),
pre-trained weights from :mod:`lth.models.weights`. May import :mod:`lth.core` and torch only (and, lazily, the
libraries whose models it builds).
"""

from lth.models.conv import ConvNet
from lth.models.ecosystem import hf_model, timm_model, torchvision_model
from lth.models.lenet import LeNet5, LeNet300100
from lth.models.resnet import CifarResNet, ResNet18
from lth.models.vgg import VGG
from lth.models.vit import ViT

__all__ = [
    "CifarResNet",
    "ConvNet",
    "LeNet300100",
    "LeNet5",
    "ResNet18",
    "VGG",
    "ViT",
    "hf_model",
    "timm_model",
    "torchvision_model",
]
