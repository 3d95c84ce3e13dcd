"""VGG-11/13/16/19 for CIFAR (Simonyan & Zisserman 2015, as adapted by open_lth): BatchNorm, one linear head.

Each 3x3 convolution (padding 1) is followed by BatchNorm and ReLU; four 2x2 max-pools, then a global average
pool over the last 2x2 (on 32x32 images) and a single linear layer ``out``. Kaiming-normal init; BatchNorm
weights at 1, or uniformly at random in [0, 1) with ``batchnorm_init="uniform"`` (open_lth's ``cifar_vgg_*``
default). open_lth's convolutions also have a bias; ours do not, since the BatchNorm after each one subtracts
it again (the function computed is the same; 4,224 fewer parameters for VGG-16).
VGG-19 on CIFAR-10: 20,024,000 prunable weights (Frankle & Carbin 2019: 20.0M).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from lth.models.common import check_batchnorm_init, init_kaiming, refuse

POOL = "M"
PLANS: dict[int, list[int | str]] = {
    11: [64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512],
    13: [64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512],
    16: [64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512],
    19: [64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL, 512, 512, 512, 512, POOL, 512, 512, 512, 512],
}


class VGG(nn.Module):
    """VGG-``depth``: ``features`` (conv, BatchNorm, ReLU and max-pools), global average pool, ``out``.

    ``batchnorm_init``: ``None``/``"ones"`` (BatchNorm weight 1) or ``"uniform"`` (drawn from U[0, 1), as open_lth).
    """

    def __init__(
        self, in_channels: int, image_size: int, num_classes: int, depth: int = 19, batchnorm_init: str | None = None
    ) -> None:
        super().__init__()
        check_batchnorm_init(batchnorm_init)
        if depth not in PLANS:
            refuse(f"VGG-{depth} does not exist; allowed depth: {', '.join(map(str, PLANS))}")
        if image_size % 32:
            refuse(
                f"VGG-{depth} halves the image five times (four max-pools, then a 2x2 average pool), "
                f"so image_size must be a multiple of 32; got {image_size}"
            )
        layers: list[nn.Module] = []
        channels = in_channels
        for step in PLANS[depth]:
            if step == POOL:
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(channels, step, 3, padding=1, bias=False), nn.BatchNorm2d(step), nn.ReLU()]
                channels = step
        self.features = nn.Sequential(*layers)
        self.out = nn.Linear(channels, num_classes)
        init_kaiming(self, batchnorm_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x).mean(dim=(2, 3)))

    def lth_chain(self) -> nn.Sequential:
        """The same function as one ``nn.Sequential`` of standard layers (what export shrinks)."""
        parts = [(f"features_{i}", m) for i, m in enumerate(self.features)]
        parts += [("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten())]
        return nn.Sequential(OrderedDict([*parts, ("out", self.out)]))
