"""LeNet-300-100 (Frankle & Carbin 2019): a fully connected network with Glorot-normal initialisation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class LeNet300100(nn.Module):
    """Flatten, then the hidden layers ``layers.0``, ``layers.1`` (ReLU) and the output layer ``out``.

    With MNIST and ``hidden=(300, 100)``: 266,610 parameters, 266,200 of them prunable weights.
    """

    def __init__(self, in_channels: int, image_size: int, num_classes: int, hidden: Sequence[int] = (300, 100)) -> None:
        super().__init__()
        widths = [in_channels * image_size * image_size, *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.out = nn.Linear(widths[-1], num_classes)
        for layer in [*self.layers, self.out]:
            nn.init.xavier_normal_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.layers:
            x = torch.relu(layer(x))
        return self.out(x)
