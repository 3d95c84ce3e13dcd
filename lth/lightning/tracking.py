"""Callbacks that watch a round: when it is evaluated, its early-stop point, divergence, the random state, and
(for checking DDP) what each rank trained with. The round's checkpoint in the run folder is
:mod:`lth.state.checkpoints`.

Every round lives on one iteration axis: iterations since the initialisation its weights come from. Round 0
runs from 0 to ``train.steps``; a round rewound to iteration k runs from k to ``train.steps``. Rounds are
evaluated at the same points of that axis (multiples of ``train.eval_every``, and the last iteration), and
iterations are reported on it, so rounds with and without a rewind compare point for point.

Early stopping is as in the paper: the early-stop point of a round is its evaluation with the lowest
validation loss. The weights there are kept in memory, so the test set is evaluated once, at that point.
Every callback here keeps what it needs after a restart in ``state_dict()``, so a round killed mid-way
resumes from its last checkpoint exactly where it was.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch

if TYPE_CHECKING:
    from lth.lightning.callback import LotteryTicket


class DivergedError(RuntimeError):
    """The loss became NaN or infinite."""


NEVER = 2**62  # a validation interval no fit reaches


class EvaluationCadence(pl.Callback):
    """Evaluates a fit that starts at iteration ``start`` of the axis at every multiple of ``every`` and at ``end``.

    Lightning counts its validation interval from the start of each fit; this callback decides before each
    validation check instead (setting the Trainer's interval to 1 when an evaluation is due, else to never).
    """

    def __init__(self, start: int, every: int, end: int) -> None:
        self.start, self.every, self.end = start, every, end
        self._stepped = -1  # the optimiser step last seen: a batch that only accumulates gradients adds none

    def due(self, iteration: int) -> bool:
        """Whether the axis point ``iteration`` is evaluated."""
        return iteration > self.start and (iteration % self.every == 0 or iteration == self.end)

    def _arm(self, trainer: pl.Trainer) -> None:
        stepped, self._stepped = trainer.global_step != self._stepped, trainer.global_step
        trainer.val_check_batch = 1 if stepped and self.due(self.start + trainer.global_step) else NEVER

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stepped = -1
        self._arm(trainer)  # a resumed fit checks the batch it stopped after before training on

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._arm(trainer)


class EarlyStopPoint(pl.Callback):
    """Remembers the iteration, validation metrics and weights of the lowest validation loss of a fit.

    ``start`` is where the fit starts on the iteration axis, so the iteration reported is ``start`` plus the
    iterations trained. It also stops the round when a loss is no longer finite (checked at each evaluation,
    where the metrics are on the host anyway, so training steps pay nothing for it).
    """

    def __init__(self, monitor: str = "val_loss", start: int = 0) -> None:
        self.monitor, self.start = monitor, start
        self.iteration: int | None = None
        self.metrics: dict[str, float] = {}
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        for key in (self.monitor, "train_loss"):
            if key in trainer.callback_metrics and not math.isfinite(float(trainer.callback_metrics[key])):
                raise DivergedError(
                    f"{key} is {float(trainer.callback_metrics[key])} at iteration {self.start + trainer.global_step}"
                )
        value = float(trainer.callback_metrics[self.monitor])
        if self.state is None or value < self.metrics.get(self.monitor, math.inf):
            self.iteration = self.start + trainer.global_step
            self.metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
            self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "metrics": self.metrics, "state": self.state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.iteration, self.metrics, self.state = state_dict["iteration"], state_dict["metrics"], state_dict["state"]


class RandomState(pl.Callback):
    """Carries torch's global random state through checkpoints (dropout and friends draw from it)."""

    def state_dict(self) -> dict[str, Any]:
        state = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["cpu"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


def fingerprint(tensors: dict[str, torch.Tensor] | None) -> str | None:
    """A short hash of named tensors (their names, shapes, dtypes and values)."""
    if tensors is None:
        return None
    digest = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name].detach().cpu()
        digest.update(f"{name}:{tuple(value.shape)}:{value.dtype}".encode())
        digest.update(value.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


class RankReport(pl.Callback):
    """Appends a JSON line per fit to ``<folder>/rank_<global rank>.jsonl``: what this rank trained with.

    For checking DDP (``hardware.rank_report=true``): fingerprints of the mask, the rewind point and the final
    weights (equal on every rank), the iterations trained and the training batches per epoch, and a fingerprint
    of every sample this rank drew in the first epoch of the fit (disjoint between ranks, together the whole
    training split).
    """

    def __init__(self, folder: Path, ticket: LotteryTicket) -> None:
        self.folder, self.ticket = Path(folder), ticket
        self.samples: list[str] = []

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.current_epoch == 0:
            rows = batch[0].detach().cpu().flatten(1).contiguous()
            self.samples += [hashlib.sha256(row.numpy().tobytes()).hexdigest()[:12] for row in rows]

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        line = {
            "round": self.ticket.round_index,
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "mask": fingerprint(dict(self.ticket.mask)),
            "rewind": fingerprint(self.ticket.rewind_state),
            "weights": fingerprint(pl_module.state_dict()),
            "iterations": trainer.global_step,
            "batches_per_epoch": int(trainer.num_training_batches),
            "samples": self.samples,
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f"rank_{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")
