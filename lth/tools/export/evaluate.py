"""The test set of a run and a model's predictions on it: how the export checks that what it wrote computes what the
run measured."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lth.config.run import RunConfig
from lth.run.build import build_data


def read_test_split(cfg: RunConfig, data_dir: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised test images and labels of the run's dataset (read from ``data_dir`` if given)."""
    if data_dir is not None:
        cfg = cfg.but(**{"paths.data_dir": str(data_dir)})
    data = build_data(cfg)
    data.setup()
    return data.splits["test"]


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The logits of ``model`` (in eval mode) for ``x``, in batches."""
    model.eval()
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> int:
    """How many of the images ``x`` ``model`` labels as ``y``."""
    return int((predict(model, x, batch_size).argmax(dim=1) == y).sum())
