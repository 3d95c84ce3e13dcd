"""What the models share: the one-line refusal of images a model cannot take, and the standard initialisations."""

from __future__ import annotations

from typing import NoReturn

from torch import nn

from lth.core.errors import ConfigError


def refuse(message: str) -> NoReturn:
    """Raise the config error of a model that cannot be built as asked (key ``model``)."""
    raise ConfigError("model", message)


def check_halvings(model: str, image_size: int, halvings: int) -> None:
    """Refuse an image size that ``halvings`` 2x2 poolings would not divide exactly."""
    if image_size % 2**halvings:
        refuse(
            f"{model} halves the image {halvings} times, so image_size must be a multiple of {2**halvings}; "
            f"got {image_size}"
        )


def scaled(channels: int, width: float) -> int:
    """``channels`` times the width multiplier, at least one."""
    if not width > 0:
        refuse(f"width must be a positive multiplier; got {width}")
    return max(1, round(channels * width))


def init_glorot(model: nn.Module) -> None:
    """Glorot-normal weights for every Linear and Conv layer, zero biases (Frankle & Carbin 2019)."""
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


BATCHNORM_INITS = ("ones", "uniform")


def check_batchnorm_init(batchnorm_init: str | None) -> str:
    """The BatchNorm weight initialisation asked for: ``ones`` (also for ``None``, the default) or ``uniform``.

    A model config leaves ``batchnorm_init`` null by default, so the key changes no run's identity.
    """
    mode = "ones" if batchnorm_init is None else batchnorm_init
    if mode not in BATCHNORM_INITS:
        refuse(
            f"batchnorm_init {batchnorm_init!r} is unknown; allowed: ones (weight 1, the default), "
            "uniform (weight drawn from U[0, 1), as open_lth's batchnorm_init='uniform')"
        )
    return mode


def init_kaiming(model: nn.Module, batchnorm_init: str | None = None) -> None:
    """Kaiming-normal weights for Linear and Conv layers, zero biases (He et al. 2015); BatchNorm bias zero.

    The BatchNorm weight is 1 (identity) by default; ``batchnorm_init="uniform"`` draws it from U[0, 1) as
    open_lth does for its CIFAR VGGs and ResNets. Every draw comes from torch's global generator, layer by
    layer in module order (the run seeds it from a named stream), so the default draws exactly what it did
    before the option existed.
    """
    mode = check_batchnorm_init(batchnorm_init)
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            if mode == "uniform":
                nn.init.uniform_(m.weight, 0.0, 1.0)
            else:
                nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
