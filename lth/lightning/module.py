"""The LightningModule that trains a classifier, and the optimiser and learning-rate schedule it uses.

Schedules are written in Steps and resolved to iterations once the data says how long an epoch is:
``constant``, ``step`` (multiply by ``gamma`` at each milestone), ``cosine`` (to zero at the end of the
round), each optionally behind a linear ``warmup``. The schedule always spans round 0's length, so a
rewind to iteration k resumes it at k.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from lth.core.errors import ConfigError
from lth.core.steps import Step

SCHEDULES = ("constant", "step", "cosine")


@dataclass(frozen=True)
class LRFactor:
    """The multiplier of the base learning rate at each iteration of a schedule over ``total`` iterations.

    A picklable object rather than a closure, so modules survive ``ddp_spawn`` and checkpoints.
    """

    name: str
    total: int
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup: int = 0

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ConfigError("optim.schedule.name", f"unknown schedule {self.name!r}; allowed: {', '.join(SCHEDULES)}")

    def __call__(self, it: int) -> float:
        scale = min(1.0, (it + 1) / self.warmup) if self.warmup else 1.0
        if self.name == "step":
            scale *= self.gamma ** sum(it >= m for m in self.milestones)
        elif self.name == "cosine":
            scale *= 0.5 * (1.0 + math.cos(math.pi * min(it, self.total) / max(self.total, 1)))
        return scale


class Classifier(pl.LightningModule):
    """Cross-entropy classification of ``model``'s logits, with accuracy from torchmetrics.

    Args:
        model: the network (``nn.Module`` mapping images to logits).
        num_classes: number of classes.
        optimizer: a partial optimiser (``optimizer(params)`` builds it), as Hydra's ``_partial_: true`` gives.
        schedule: ``{name, milestones, gamma, warmup}`` with Steps as strings.
        total_steps: iterations of round 0 (the schedule's length).
        iterations_per_epoch: to resolve Steps given in epochs.
        compile: compile ``model`` with ``torch.compile``, in place (``nn.Module.compile``): parameter names,
            checkpoints and masks are unchanged, and masks are multiplied into the parameters outside the graph.

    A test logs ``<test_prefix>test_loss`` and ``<test_prefix>test_acc``: the loop sets ``test_prefix`` to
    ``final_`` to test a round's last weights, and leaves it empty for its early-stop weights, so each value logged
    has its own name, the column of ``rounds.csv`` that holds it.
    """

    test_prefix: str = ""

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        schedule: dict | None = None,
        total_steps: int = 1,
        iterations_per_epoch: int = 1,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if compile:
            model.compile()
        self.model = model
        self.optimizer_factory = optimizer
        schedule = dict(schedule or {"name": "constant"})
        resolve = lambda s, key: Step.parse(s, key).to_iterations(iterations_per_epoch)  # noqa: E731
        self.lr_factor = LRFactor(
            schedule.get("name", "constant"),
            total_steps,
            tuple(sorted(resolve(m, "optim.schedule.milestones") for m in schedule.get("milestones") or [])),
            float(schedule.get("gamma", 0.1)),
            resolve(schedule.get("warmup") or "0it", "optim.schedule.warmup"),
        )
        self.val_acc = torchmetrics.classification.MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = torchmetrics.classification.MulticlassAccuracy(num_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.model(x), y)
        if self._logs_this_step():
            self.log("train_loss", loss, on_step=True, on_epoch=False, batch_size=len(y))
        return loss

    def _logs_this_step(self) -> bool:
        """Whether Lightning's loggers write this step's metrics (every ``log_every_n_steps``-th step).

        ``self.log`` costs about a quarter of a LeNet-300-100 step on a CPU; a value no logger writes is skipped.
        """
        trainer = self._trainer
        if trainer is None or trainer.log_every_n_steps <= 1 or trainer.fast_dev_run:
            return True
        return (self.global_step + 1) % trainer.log_every_n_steps == 0

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], split: str, metric: torchmetrics.Metric) -> None:
        x, y = batch
        logits = self.model(x)
        self.log(f"{split}_loss", F.cross_entropy(logits, y), on_epoch=True, batch_size=len(y), sync_dist=True)
        metric.update(logits, y)
        self.log(f"{split}_acc", metric, on_epoch=True, batch_size=len(y))

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, f"{self.test_prefix}test", self.test_acc)

    def configure_optimizers(self) -> dict:
        optimizer = self.optimizer_factory(self.parameters())
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
