"""What a logger is to a run: the iteration axis its step metrics go on, and the two sorts of logger (a folder
per round; one run per job), each a :class:`LoggerKind` (see :mod:`lth.run.loggers`)."""

from __future__ import annotations

import csv
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger, Logger
from pytorch_lightning.loggers.logger import DummyLogger
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_only

from lth.config.identity import identity
from lth.config.run import RunConfig
from lth.state.artifacts import ROUND_COLUMNS
from lth.state.labels import flatten, show

log = logging.getLogger("lth")

ROUNDS = "rounds"  # the namespace of per-round results, named after rounds.csv
BY_WEIGHTS_REMAINING = "by_weights_remaining"  # TensorBoard: per-round results, their step the weights remaining
SPARSITY_COLUMNS = ("round", "layer", "total", "remaining", "weights_remaining")


class IterationAxis(pl.Callback):
    """Puts the step metrics of a round's fit, which starts at iteration ``start`` of the axis, on that axis.

    Lightning logs what it logs during a fit at the index of the batch from 0 (the loss and the learning rate of
    that batch, an evaluation after it), restarting at 0 in every fit; here it is logged at ``start`` + that index
    + 1: the iteration that batch trains. What is logged in a test (after the fit) is at ``start`` + the iterations
    trained, the round's last iteration. A logger takes the axis with :meth:`attach`; the Trainer needs this
    callback too, to say which of the two it is.
    """

    def __init__(self, start: int = 0) -> None:
        self.start = start
        self.trainer: pl.Trainer | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.trainer = trainer

    def iteration(self, step: int | None) -> int | None:
        """The axis point of what Lightning logs at ``step`` (``None`` stays ``None``)."""
        trainer = self.trainer
        if trainer is not None and trainer.state.fn == TrainerFn.TESTING:
            return self.start + trainer.global_step
        return None if step is None else self.start + step + 1

    def attach(self, logger: Logger) -> Logger:
        """``logger``, its ``log_metrics`` taking Lightning's steps to the axis (the logger keeps its class)."""
        log_metrics = logger.log_metrics

        def on_axis(metrics: Mapping[str, float], step: int | None = None) -> None:
            log_metrics(metrics, step=self.iteration(step))

        logger.log_metrics = on_axis  # type: ignore[method-assign]
        return logger


def round_metrics(row: Mapping[str, Any], prefix: str = ROUNDS) -> dict[str, Any]:
    """A ``rounds.csv`` row as ``rounds/<column>`` metrics (``<prefix>/<column>``)."""
    return {f"{prefix}/{column}": row[column] for column in ROUND_COLUMNS if row.get(column) is not None}


def identity_params(cfg: RunConfig) -> dict[str, Any]:
    """The run's identity as hyper-parameters: its flattened keys (``prune.rate``), each value a number, a bool or
    a string (a list or mapping as a command line writes it: ``[a,b]``)."""
    return {
        key: value if isinstance(value, bool | int | float | str) else show(value)
        for key, value in flatten(identity(cfg.plain)).items()
    }


class RunWideSteps:
    """Makes a Lightning logger one kept for all rounds of a job (the logger of a :class:`RunPerJob`); put it before
    the Lightning class: ``class RoundsWandbLogger(RunWideSteps, WandbLogger)``.

    Each round's ``trainer.fit`` restarts Lightning's step at 0; this logger shifts it so the step never goes back
    over the run: by the iterations of the earlier rounds, or, when the round says where it lies (``offset``,
    ``axis``), to ``offset`` + its point on the iteration axis, which a later process continuing the run computes
    alike. Every row also gets ``round`` and, given an ``axis``, ``iteration`` (the point on the axis, the step of
    the CSV and TensorBoard logs).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.round_index = 0
        self.offset = 0
        self.last_step = 0
        self.axis: IterationAxis | None = None

    def start_round(self, round_index: int, offset: int | None = None, axis: IterationAxis | None = None) -> None:
        """Start round ``round_index``: its steps at ``offset`` + its axis points when given, else continuing after
        the previous round's last logged step."""
        self.offset = self.offset + self.last_step if offset is None else offset
        self.last_step = 0
        self.round_index = round_index
        self.axis = axis

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log ``metrics`` at the run-wide step (``step`` counts from 0 in every round)."""
        metrics = {**metrics, "round": self.round_index}
        if self.axis is not None:
            step = self.axis.iteration(step)
            if step is not None:
                metrics["iteration"] = step
        if step is None:
            super().log_metrics(metrics)  # type: ignore[misc]
            return
        self.last_step = max(self.last_step, step)
        super().log_metrics(metrics, step=self.offset + step)  # type: ignore[misc]


class NoRun(RunWideSteps, DummyLogger):
    """The logger of a :class:`RunPerJob` on ranks other than 0, where no run is started: it logs nothing."""


class LoggerKind(ABC):
    """What a logger named in ``cfg.logger`` is to a run: one entry of :data:`LOGGERS`.

    Made once per job, on every rank, from its spec (``cfg.logger.<name>``) by :meth:`build`; asked for each
    round's Lightning logger (:meth:`for_round`); told of each finished round, on rank 0 (:meth:`log_round`); and
    finished once, at the end of the job or on failure (:meth:`finish`).
    """

    one_run_per_job = False  # one run for the whole job, else one folder per round (whose loggers come first)

    @classmethod
    @abstractmethod
    def build(cls, spec: dict, cfg: RunConfig, log_dir: Path) -> LoggerKind:
        """The logger of spec ``spec`` for the run of config ``cfg``, its files under ``log_dir``."""

    @abstractmethod
    def for_round(self, round_index: int, axis: IterationAxis, offset: int | None, resumed_at: int | None) -> Logger:
        """The Lightning logger of round ``round_index``, logging on ``axis``; ``offset``: where the round's steps
        start in a run kept for the job (``round_index * train.steps``); ``resumed_at``: the round resumes from its
        checkpoint after that many iterations of its fit (``None``: it starts from its start)."""

    def log_round(self, row: Mapping[str, Any], sparsity: Mapping[str, Any]) -> None:  # noqa: B027 - a hook
        """Record one finished round: its ``rounds.csv`` row and its mask's sparsity report (nothing by default)."""

    def finish(self, exit_code: int = 0) -> None:  # noqa: B027 - a hook
        """Close what the logger holds open (a non-zero ``exit_code``: the run failed or was stopped; nothing by
        default)."""


class FolderPerRound(LoggerKind):
    """A Lightning logger made afresh for each round from the spec (``_target_`` and its arguments) and given
    ``save_dir=<run>/logs``, ``name=""`` and ``version=round_<k>``: one folder per round, ``logs/round_<k>``, its
    steps on the iteration axis. A name that :data:`LOGGERS` does not hold is one of these.

    Each logger is given the run's identity as its hyper-parameters (:func:`identity_params`; Lightning's CSV and
    TensorBoard loggers write them to ``hparams.yaml`` in their folder).

    Traits: ``continues_step_log``, a round resumed from its checkpoint continues the step log its interrupted part
    wrote (:func:`continue_step_log`); ``rounds_version``, a folder under ``logs/`` where one more logger of the spec
    holds the per-round results (``rounds/<column of rounds.csv>``) against ``round``.
    """

    continues_step_log = False
    rounds_version: str | None = None

    def __init__(self, spec: dict, log_dir: Path, params: Mapping[str, Any]) -> None:
        self.spec = spec
        self.log_dir = log_dir
        self.params = dict(params)
        self.rounds = self._made(self.rounds_version) if self.rounds_version else None
        if self.rounds is not None:
            self.rounds.log_hyperparams(self.params)

    @classmethod
    def build(cls, spec: dict, cfg: RunConfig, log_dir: Path) -> FolderPerRound:
        return cls(spec, log_dir, identity_params(cfg))

    def _made(self, version: str) -> Logger:
        return hydra.utils.instantiate(self.spec, save_dir=str(self.log_dir), name="", version=version)

    def for_round(self, round_index: int, axis: IterationAxis, offset: int | None, resumed_at: int | None) -> Logger:
        logger = axis.attach(self._made(f"round_{round_index:02d}"))
        if resumed_at is not None and self.continues_step_log and rank_zero_only.rank == 0:
            continue_step_log(logger, axis.start + resumed_at + 1)
        logger.log_hyperparams(self.params)  # after the step log is continued: it starts the logger's files
        return logger

    def log_round(self, row: Mapping[str, Any], sparsity: Mapping[str, Any]) -> None:
        if self.rounds is not None:
            self.rounds.log_metrics(round_metrics(row), step=row["round"])

    def finish(self, exit_code: int = 0) -> None:
        if self.rounds is not None:
            self.rounds.finalize("success" if exit_code == 0 else "failed")


class CSVRounds(FolderPerRound):
    """``logger=csv``: ``logs/round_<k>/metrics.csv``; a round resumed from its checkpoint continues its file."""

    continues_step_log = True


class TensorBoardRounds(FolderPerRound):
    """``logger=tensorboard``: event files in ``logs/round_<k>``, and in ``logs/rounds`` the per-round results:
    ``rounds/<column of rounds.csv>`` against ``round``, and ``by_weights_remaining/<column>`` against the weights
    remaining (TensorBoard's step, a whole number: in hundredths of a percent, 10000 the dense network).

    ``logs/rounds`` is also an HParams session (TensorBoard's HPARAMS tab): the run's identity keys
    (``prune.rate``, ...) are its hyper-parameters and its scalars (``rounds/<column>``, the last round logged) its
    metrics, so the runs of a sweep (``tensorboard --logdir <sweep folder>``) can be filtered and compared by
    any key."""

    rounds_version = ROUNDS

    def __init__(self, spec: dict, log_dir: Path, params: Mapping[str, Any]) -> None:
        super().__init__(spec, log_dir, params)
        if self.rounds is not None and rank_zero_only.rank == 0:
            write_hparams(self.rounds, self.params)

    def log_round(self, row: Mapping[str, Any], sparsity: Mapping[str, Any]) -> None:
        super().log_round(row, sparsity)
        if self.rounds is not None:
            step = round(10000 * row["weights_remaining"])
            self.rounds.log_metrics(round_metrics(row, BY_WEIGHTS_REMAINING), step=step)


def write_hparams(logger: Logger, params: Mapping[str, Any]) -> None:
    """Make ``logger``'s folder (a TensorBoard logger's) an HParams session with hyper-parameters ``params``; its
    scalars are the session's metrics. No experiment summary is written (Lightning's ``log_hyperparams`` writes one,
    and logs its metrics' values): TensorBoard would take one run's as the whole sweep's and hide the keys other
    runs have; without one it gathers every session's keys and scalars."""
    from torch.utils.tensorboard.summary import hparams

    writer = logger.experiment._get_file_writer()  # type: ignore[attr-defined]  # a TensorBoard SummaryWriter
    _, start, end = hparams(dict(params), {})
    writer.add_summary(start)
    writer.add_summary(end)


class RunPerJob(LoggerKind):
    """One run for the whole job, started when this is made and ended by :meth:`finish`; its Lightning logger
    :attr:`logger`, a :class:`RunWideSteps`, serves every round (on ranks other than 0, one that logs nothing). Its
    id is kept in a file under ``logs/``, so a later process on the run folder continues the same run."""

    one_run_per_job = True
    logger: RunWideSteps

    def for_round(self, round_index: int, axis: IterationAxis, offset: int | None, resumed_at: int | None) -> Logger:
        self.logger.start_round(round_index, offset, axis)
        return self.logger  # type: ignore[return-value]  # a RunWideSteps Lightning logger


def stored_id(path: Path | None) -> str | None:
    """The run id kept in ``path`` (``<run>/logs/wandb_id``, ``<run>/logs/mlflow_run_id``), or ``None`` when there
    is none."""
    if path is None:
        return None
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def read_step_log(path: Path, before: int) -> list[dict[str, str]]:
    """The rows of a ``metrics.csv`` step log logged before step ``before``, as written (empty cells left out); a
    missing file gives none, and a row cut short (a write interrupted by a kill or a full disk) is skipped."""
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if None in row or None in row.values():  # too many or too few cells
                continue
            try:
                step = int(row["step"])
            except (KeyError, ValueError):
                continue
            if step < before:
                rows.append({k: v for k, v in row.items() if v != ""})
    return rows


def continue_step_log(logger: CSVLogger, before: int) -> None:
    """Make ``logger``, the CSV logger of a round resumed from its checkpoint, continue that round's ``metrics.csv``
    instead of starting it afresh (what Lightning's CSV logger does); ``before``: the first step (on the iteration
    axis) that the resumed part logs, one past the checkpoint's iteration.

    The rows of the interrupted part up to the checkpoint are written back at once; the rows it logged after the
    checkpoint are dropped, as the resumed part logs those steps again. So the file holds each step of the round
    once, as an uninterrupted round's does.
    """
    kept = read_step_log(Path(logger.log_dir) / "metrics.csv", before)
    writer = logger.experiment  # Lightning removes the old file here
    if kept:
        writer.metrics = kept  # type: ignore[assignment]  # cells as they were written
        writer.save()
