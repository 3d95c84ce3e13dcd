"""Conv-2, Conv-4 and Conv-6 (Frankle & Carbin 2019, Figure 2): VGG-like networks for CIFAR-10, Glorot-normal init.

3x3 convolutions with padding 1 in pairs, each pair followed by a 2x2 max-pool, then fully connected layers
256, 256 and the output. Prunable weights on CIFAR-10: Conv-2 4,300,992, Conv-4 2,425,024, Conv-6 2,261,184.
The paper's table gives 4.3M, 2.4M and 1.7M: the first two agree, but for Conv-6 its own layer list
(4x4x256 = 4096 inputs to the first 256-wide layer) gives 2.26M; its conv-weight count, 1.1M, agrees.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from lth.models.common import check_halvings, init_glorot, refuse

PAIRS = {2: (64,), 4: (64, 128), 6: (64, 128, 256)}  # output channels of each conv pair


class ConvNet(nn.Module):
    """Conv-``depth``: ``convs`` (conv, ReLU, conv, ReLU, max-pool per pair), ``fcs`` (ReLU), ``out``."""

    def __init__(
        self, in_channels: int, image_size: int, num_classes: int, depth: int = 2, hidden: Sequence[int] = (256, 256)
    ) -> None:
        super().__init__()
        if depth not in PAIRS:
            refuse(f"Conv-{depth} does not exist; allowed depth: 2, 4, 6")
        check_halvings(f"Conv-{depth}", image_size, len(PAIRS[depth]))
        layers: list[nn.Module] = []
        channels = in_channels
        for width in PAIRS[depth]:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            channels = width
        self.convs = nn.Sequential(*layers)
        side = image_size // 2 ** len(PAIRS[depth])
        widths = [channels * side * side, *hidden]
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.out = nn.Linear(widths[-1], num_classes)
        init_glorot(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x).flatten(1)
        for layer in self.fcs:
            x = torch.relu(layer(x))
        return self.out(x)

    def lth_chain(self) -> nn.Sequential:
        """The same function as one ``nn.Sequential`` of standard layers (what export shrinks)."""
        parts = [(f"convs_{i}", m) for i, m in enumerate(self.convs)] + [("flatten", nn.Flatten())]
        for i, layer in enumerate(self.fcs):
            parts += [(f"fcs_{i}", layer), (f"relu_{i}", nn.ReLU())]
        return nn.Sequential(OrderedDict([*parts, ("out", self.out)]))
