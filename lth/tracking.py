"""Early stopping as in the paper: the early-stop point of a round is its evaluation with the lowest
validation loss. The weights there are kept in memory, so the test set is evaluated once, at that point."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch


class EarlyStopPoint(pl.Callback):
    """Remembers the iteration, validation metrics and weights of the lowest validation loss of a fit."""

    def __init__(self, monitor: str = "val_loss") -> None:
        self.monitor = monitor
        self.iteration: int | None = None
        self.metrics: dict[str, float] = {}
        self.state: dict[str, torch.Tensor] | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.iteration, self.metrics, self.state = None, {}, None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        best = self.metrics.get(self.monitor, math.inf)
        if self.state is None or value < best:
            self.iteration = trainer.global_step
            self.metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
            self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
