"""Residual networks of BasicBlocks with BatchNorm (He et al. 2016), Kaiming-normal init.

:class:`CifarResNet` is the CIFAR family ResNet-20/32/56 (16/32/64 channels, ``depth = 6n + 2``); Frankle &
Carbin 2019 call ResNet-20 "Resnet-18". :class:`ResNet18` is the standard 11M-parameter ResNet-18 with the
3x3 stride-1 stem and no max-pool used for small images. Where a block changes shape the shortcut is
``A`` (subsample and zero-pad the new channels: no parameters, He et al.) or ``B`` (1x1 conv + BatchNorm, open_lth).
BatchNorm weights start at 1, or uniformly at random in [0, 1) with ``batchnorm_init="uniform"`` (open_lth's
``cifar_resnet_*`` default).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from lth.core.anatomy import NotShrinkable
from lth.models.common import check_batchnorm_init, init_kaiming, refuse, scaled

SHORTCUTS = ("A", "B")


class ZeroPadShortcut(nn.Module):
    """Shortcut A: keep every ``stride``-th pixel and append ``extra`` zero channels."""

    def __init__(self, extra: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = extra, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.extra))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm, added to the shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ZeroPadShortcut(out_channels - in_channels, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet(nn.Module):
    """``stem`` (3x3 conv, BatchNorm, ReLU), stages of BasicBlocks, global average pool, ``out``.

    The first stage keeps the resolution, each later one halves it in its first block. ``batchnorm_init``:
    ``None``/``"ones"`` (BatchNorm weight 1) or ``"uniform"`` (drawn from U[0, 1), as open_lth).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: Sequence[int],
        blocks: Sequence[int],
        shortcut: str,
        batchnorm_init: str | None = None,
    ) -> None:
        super().__init__()
        check_batchnorm_init(batchnorm_init)
        if shortcut not in SHORTCUTS:
            refuse(f"shortcut {shortcut!r} is unknown; allowed: A (zero-padding, no parameters), B (1x1 conv + BN)")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        stages, channels = [], widths[0]
        for i, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            first = BasicBlock(channels, width, 1 if i == 0 else 2, shortcut)
            stages.append(nn.Sequential(first, *(BasicBlock(width, width, 1, shortcut) for _ in range(count - 1))))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.out = nn.Linear(channels, num_classes)
        init_kaiming(self, batchnorm_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.stages(self.stem(x)).mean(dim=(2, 3)))

    def lth_chain(self) -> nn.Sequential:
        """Not a chain: export says why it does not shrink."""
        raise NotShrinkable(
            f"{type(self).__name__}: residual connections add each block's input to its output, which ties a "
            "channel across all the blocks of a stage; removing units applies to plain chains only"
        )


class CifarResNet(ResNet):
    """ResNet-``depth`` for CIFAR: 3 stages of ``(depth - 2) / 6`` blocks, 16/32/64 channels times ``width``.

    ResNet-20 on CIFAR-10: 272,474 parameters with shortcut B, 269,722 with shortcut A.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        depth: int = 20,
        shortcut: str = "B",
        width: float = 1.0,
        batchnorm_init: str | None = None,
    ) -> None:
        if depth < 8 or (depth - 2) % 6:
            refuse(f"CIFAR ResNets have depth 6n + 2 (20, 32, 44, 56, 110, ...); got depth {depth}")
        widths = [scaled(c, width) for c in (16, 32, 64)]
        super().__init__(in_channels, num_classes, widths, [(depth - 2) // 6] * 3, shortcut, batchnorm_init)


class ResNet18(ResNet):
    """ResNet-18 for small images: 4 stages of 2 blocks, 64/128/256/512 channels times ``width``.

    With 10 classes: 11,173,962 parameters.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        width: float = 1.0,
        shortcut: str = "B",
        batchnorm_init: str | None = None,
    ) -> None:
        widths = [scaled(c, width) for c in (64, 128, 256, 512)]
        super().__init__(in_channels, num_classes, widths, [2, 2, 2, 2], shortcut, batchnorm_init)
