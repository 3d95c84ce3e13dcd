"""The round's checkpoint in the run folder, and the clock whose seconds it carries.

``round_XX/last.ckpt`` is written after the evaluation at every multiple of ``train.checkpoint_every`` on the
iteration axis, when a stop signal arrives, and when the round ends. It holds everything a resumed round needs
(weights, optimiser, schedule, data position, random state, every callback's state, the seconds trained so far).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lth.state.artifacts import file_mode


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
        # a stop signal (lth.run.signals.SafeStop): Lightning stopped after a whole batch and its evaluation
        if isinstance(exception, SIGTERMException):
            if _finished_epoch(trainer):
                _start_next_epoch(trainer)
            self._save(trainer)


def _finished_epoch(trainer: pl.Trainer) -> bool:
    """Whether the fit stopped at the end of an epoch, after Lightning marked the epoch complete."""
    progress = trainer.fit_loop.epoch_progress.current
    return progress.completed == progress.ready > 0


def _start_next_epoch(trainer: pl.Trainer) -> None:
    """Reset the counters of the epoch that ended, as Lightning does when it starts the next one.

    Lightning stops a fit on a signal after the epoch's last batch only once the epoch is complete, but still
    counting its batches; a fit of ``max_steps`` resumed from there takes those for the next epoch's and ends
    that one after a single batch (the data order then skips the rest of it).
    """
    loop = trainer.fit_loop.epoch_loop
    loop.batch_progress.reset_on_run()
    loop.scheduler_progress.reset_on_run()
    loop.automatic_optimization.optim_progress.reset_on_run()
    loop.val_loop.batch_progress.total.reset()
