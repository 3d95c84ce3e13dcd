"""Callbacks that watch a round: when it is evaluated, its early-stop point, divergence, the random state, its
checkpoints, and (for checking DDP) what each rank trained with.

Every round lives on one iteration axis: iterations since the initialisation its weights come from. Round 0
runs from 0 to ``train.steps``; a round rewound to iteration k runs from k to ``train.steps``. Rounds are
evaluated at the same points of that axis (multiples of ``train.eval_every``, and the last iteration), and
iterations are reported on it, so rounds with and without a rewind compare point for point.

Early stopping is as in the paper: the early-stop point of a round is its evaluation with the lowest
validation loss. The weights there are kept in memory, so the test set is evaluated once, at that point.
Every callback here keeps what it needs after a restart in ``state_dict()``, so a round killed mid-way
resumes from its last checkpoint exactly where it was (and counts the seconds of both parts).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lth.artifacts import file_mode

if TYPE_CHECKING:
    from lth.callback import LotteryTicket


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

    def due(self, iteration: int) -> bool:
        """Whether the axis point ``iteration`` is evaluated."""
        return iteration > self.start and (iteration % self.every == 0 or iteration == self.end)

    def _arm(self, trainer: pl.Trainer) -> None:
        trainer.val_check_batch = 1 if self.due(self.start + trainer.global_step) else NEVER

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
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


class RoundClock(pl.Callback):
    """The seconds a round has trained, over every process that trained it.

    Started when made (just before ``trainer.fit``); the seconds so far are kept in the round's checkpoints, so
    a round resumed from one counts the interrupted part too.
    """

    def __init__(self) -> None:
        self.before = 0.0  # seconds of the parts trained before the checkpoint this fit resumed from
        self.started = time.perf_counter()

    def seconds(self) -> float:
        """Seconds trained so far, the interrupted parts included."""
        return self.before + time.perf_counter() - self.started

    def state_dict(self) -> dict[str, float]:
        return {"seconds": self.seconds()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.before = float(state_dict.get("seconds", 0.0))


class RoundCheckpoint(pl.Callback):
    """Writes ``path`` after the evaluation at every multiple of ``every`` on the axis and when the round ends.

    ``start`` is where the fit starts on the iteration axis. Written atomically (a temporary file, then a
    rename), so a kill leaves the previous checkpoint whole; the loggers are flushed first, so the step log on disk
    reaches the checkpoint.
    """

    def __init__(self, path: Path, every: int | None = None, start: int = 0) -> None:
        self.path, self.every, self.start = Path(path), every, start

    def _save(self, trainer: pl.Trainer) -> None:
        for logger in trainer.loggers:  # the step log on disk holds every row up to the checkpoint
            logger.save()
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            trainer.save_checkpoint(tmp)
            if trainer.is_global_zero:
                with open(tmp, "rb") as f:  # on disk before it replaces the previous one
                    os.fsync(f.fileno())
                os.chmod(tmp, file_mode())  # Lightning's atomic save (fsspec) writes a 0o600 temporary file
                os.replace(tmp, self.path)
        except BaseException:  # a full disk, an interrupt: no half-written file is left (a SIGKILL may leave one)
            if trainer.is_global_zero:
                tmp.unlink(missing_ok=True)
            raise

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after the evaluation, so a resumed round neither repeats nor skips one (every is a multiple of eval_every)
        if self.every and not trainer.sanity_checking and (self.start + trainer.global_step) % self.every == 0:
            self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # a stop signal (lth.signals.SafeStop): Lightning stopped after a whole batch and its evaluation
        if isinstance(exception, SIGTERMException):
            self._save(trainer)


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
