"""The LeNets: LeNet-300-100 (Frankle & Carbin 2019) and LeNet-5 (LeCun et al. 1998), Glorot-normal initialisation."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from lth.models.common import init_glorot


class LeNet300100(nn.Module):
    """Flatten, then the hidden layers ``layers.0``, ``layers.1`` (ReLU) and the output layer ``out``.

    With MNIST and ``hidden=(300, 100)``: 266,610 parameters, 266,200 of them prunable weights.
    """

    def __init__(self, in_channels: int, image_size: int, num_classes: int, hidden: Sequence[int] = (300, 100)) -> None:
        super().__init__()
        widths = [in_channels * image_size * image_size, *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.out = nn.Linear(widths[-1], num_classes)
        init_glorot(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.layers:
            x = torch.relu(layer(x))
        return self.out(x)

    def lth_chain(self) -> nn.Sequential:
        """The same function as one ``nn.Sequential`` of standard layers (what export shrinks)."""
        parts: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
        for i, layer in enumerate(self.layers):
            parts += [(f"layers_{i}", layer), (f"relu_{i}", nn.ReLU())]
        return nn.Sequential(OrderedDict([*parts, ("out", self.out)]))


class LeNet5(nn.Module):
    """LeNet-5, ReLU and max-pooling: ``conv1`` 6@5x5, pool, ``conv2`` 16@5x5, pool, ``fc1`` 120, ``fc2`` 84, ``out``.

    LeNet-5 was designed for 32x32 images; smaller ones are zero-padded up to 32 by ``conv1`` (LeCun et al.
    padded MNIST to 32x32), so 28x28 and 32x32 both end in 16 maps of 5x5. On MNIST: 61,706 parameters.
    """

    def __init__(self, in_channels: int, image_size: int, num_classes: int) -> None:
        super().__init__()
        pad = max(0, (32 - image_size) // 2)
        side = ((image_size + 2 * pad - 4) // 2 - 4) // 2
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=pad)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * side * side, 120)
        self.fc2 = nn.Linear(120, 84)
        self.out = nn.Linear(84, num_classes)
        init_glorot(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2).flatten(1)
        x = torch.relu(self.fc2(torch.relu(self.fc1(x))))
        return self.out(x)

    def lth_chain(self) -> nn.Sequential:
        """The same function as one ``nn.Sequential`` of standard layers (what export shrinks)."""
        parts = [("conv1", self.conv1), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2))]
        parts += [("conv2", self.conv2), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)), ("flatten", nn.Flatten())]
        parts += [("fc1", self.fc1), ("relu3", nn.ReLU()), ("fc2", self.fc2), ("relu4", nn.ReLU())]
        return nn.Sequential(OrderedDict([*parts, ("out", self.out)]))
