"""The loggers of a run: Lightning loggers for each round's step metrics, and the per-round results.

``logger=`` in the config holds zero or more logger specs by name: ``csv``, ``tensorboard``, ``wandb``
(``logger=many`` for all three, ``logger=[csv,wandb]`` for any mix, ``logger=none`` for none). A run makes
one :class:`RunLoggers`; each round asks it for that round's Lightning loggers, and after each round it is
given the round's row of ``rounds.csv`` and its sparsity report.

CSV and TensorBoard write one folder per round, ``logs/round_<k>`` (TensorBoard also ``logs/rounds``, the
per-round results against ``round``). W&B is one run for the whole job, see :class:`WandbRun`; its id is kept in
``logs/wandb_id``, so a later process on the run folder (``resume=true``) continues the same W&B run. A round
resumed from its checkpoint continues its ``metrics.csv``; a round that restarts from its start writes it afresh.

Every step metric is logged on the README's iteration axis (:class:`IterationAxis`): at step i, what belongs to
iteration i (iterations since the initialisation the round's weights come from), so a round rewound to k logs from
k + 1, and an evaluation after iteration 100 is logged at 100, where ``rounds.csv`` puts it. The test accuracy of
a round's last weights is logged as ``final_test_acc`` and that of its early-stop weights as ``test_acc`` (the
names of ``rounds.csv``), both at the round's last iteration.
"""

from __future__ import annotations

import csv
import logging
import netrc
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import hydra
import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_only

from lth.config.run import Job, RunConfig, thawed
from lth.state.artifacts import ROUND_COLUMNS, write_text
from lth.state.labels import run_label

log = logging.getLogger("lth")

ROUNDS = "rounds"  # the namespace of per-round results, named after rounds.csv
SPARSITY_COLUMNS = ("round", "layer", "total", "remaining", "weights_remaining")
WANDB_ID = "wandb_id"  # the file under logs/ holding the id of the run's W&B run


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


def round_metrics(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ``rounds.csv`` row as ``rounds/<column>`` metrics."""
    return {f"{ROUNDS}/{column}": row[column] for column in ROUND_COLUMNS if row.get(column) is not None}


class RoundsWandbLogger(WandbLogger):
    """Lightning's W&B logger, kept for all rounds of a run.

    Each round's ``trainer.fit`` restarts Lightning's step at 0; this logger shifts it so ``trainer/global_step``
    never goes back over the run: by the iterations of the earlier rounds, or, when the round says where it lies
    (``offset``, ``axis``), to ``offset`` + its point on the iteration axis, which a later process continuing the
    run computes alike. Every row also gets ``round`` and, given an ``axis``, ``iteration`` (the point on the axis,
    the step of the CSV and TensorBoard logs).
    """

    def __init__(self, save_dir: str, experiment: Any = None) -> None:
        super().__init__(save_dir=save_dir, experiment=experiment)
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
            super().log_metrics(metrics)
            return
        self.last_step = max(self.last_step, step)
        super().log_metrics(metrics, step=self.offset + step)


def has_wandb_key() -> bool:
    """Whether W&B credentials are configured: ``WANDB_API_KEY``, an identity token file, or a ``.netrc`` entry
    for the W&B host (what ``wandb login`` writes). Reads no network."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode(mode: str | None) -> str | None:
    """The mode to start W&B in: ``None`` when ``WANDB_MODE`` is set (wandb reads it), else ``mode``, else
    ``online`` if :func:`has_wandb_key` and ``offline`` if not."""
    if os.environ.get("WANDB_MODE"):
        return None
    if mode:
        return mode
    return "online" if has_wandb_key() else "offline"


def default_group(job: Job) -> str | None:
    """The W&B group of a job launched by Hydra: its sweep folder's name under ``-m``, else its experiment."""
    if job.multirun and job.sweep_dir:
        return Path(job.sweep_dir).name
    return job.experiment


class WandbRun:
    """One W&B run for one job: every round's step metrics, and the per-round results.

    Layout: Lightning's step metrics (``train_loss``, ``val_loss``, ``final_test_acc``, ``test_acc``, ...) against
    ``trainer/global_step``, which never goes back over the run: round k's iteration i of the axis is step
    k * ``train.steps`` + i (see :class:`RoundsWandbLogger`), and every row holds ``round`` and ``iteration``;
    per-round results as ``rounds/<column of rounds.csv>`` against
    ``rounds/weights_remaining`` (itself against ``rounds/round``), so a panel can plot accuracy against weights
    remaining; the tables ``rounds_table`` (rows of ``rounds.csv``) and ``sparsity_table`` (each layer in each
    round), logged whole after every round. The run's config is the resolved config. The run starts when this
    object is made (on rank 0 only) and ends with :meth:`finish`; ``options`` go to ``wandb.init`` as they are
    (``notes``, ``settings``, ...).

    ``id_file`` (``<run>/logs/wandb_id``) keeps the W&B run's id: a later process on the same run folder (a resumed
    run) reads it and continues that W&B run (``resume="allow"``) instead of starting one holding only the later
    rounds. An ``id`` in ``options`` wins over the file.
    """

    def __init__(
        self,
        save_dir: str,
        name: str,
        config: dict,
        project: str = "lth",
        entity: str | None = None,
        group: str | None = None,
        job_type: str | None = None,
        tags: list[str] | None = None,
        mode: str | None = None,
        init_timeout: float = 60,
        id_file: Path | None = None,
        **options: Any,
    ) -> None:
        run = None
        if rank_zero_only.rank == 0:
            Path(save_dir).mkdir(parents=True, exist_ok=True)
            known = stored_wandb_id(id_file)
            if options.get("id") or known:
                options["id"] = options.get("id") or known
                options.setdefault("resume", "allow")
            run = self._start(
                mode=wandb_mode(mode),
                init_timeout=init_timeout,
                dir=save_dir,
                name=name,
                config=config,
                project=project,
                entity=entity,
                group=group,
                job_type=job_type,
                tags=tags or None,
                **options,
            )
            if id_file is not None and getattr(run, "id", None) and run.id != known:
                write_text(id_file, f"{run.id}\n")
            run.define_metric("trainer/global_step")
            run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
            run.define_metric(f"{ROUNDS}/round")
            run.define_metric(f"{ROUNDS}/weights_remaining", step_metric=f"{ROUNDS}/round")
            for column in ROUND_COLUMNS:
                if column not in ("round", "weights_remaining"):
                    run.define_metric(f"{ROUNDS}/{column}", step_metric=f"{ROUNDS}/weights_remaining")
        self.run = run
        self.logger = RoundsWandbLogger(save_dir=save_dir, experiment=run)
        self.rounds: list[list] = []
        self.layers: list[list] = []

    @staticmethod
    def _start(mode: str | None, init_timeout: float, **options: Any) -> Any:
        import wandb

        def start(mode: str | None) -> Any:
            # finish_previous: a job of a sweep never continues the run of the job before it
            settings = wandb.Settings(init_timeout=init_timeout)
            return wandb.init(mode=mode, reinit="finish_previous", settings=settings, **options)

        try:
            return start(mode)
        except wandb.Error as error:
            if mode == "offline":
                raise
            log.warning("W&B could not start online (%s); logging offline, `wandb sync` uploads it later", error)
            return start("offline")

    def for_round(
        self, round_index: int, offset: int | None = None, axis: IterationAxis | None = None
    ) -> RoundsWandbLogger:
        """The run's Lightning logger for round ``round_index`` (see :meth:`RoundsWandbLogger.start_round`)."""
        self.logger.start_round(round_index, offset, axis)
        return self.logger

    @rank_zero_only
    def log_round(self, row: Mapping[str, Any], sparsity: Mapping[str, Any]) -> None:
        """Log one round's results and the tables of all rounds so far."""
        import wandb

        self.rounds.append([row.get(column) for column in ROUND_COLUMNS])
        for layer, counts in sparsity["layers"].items():
            self.layers.append([row["round"], layer, counts["total"], counts["remaining"], counts["weights_remaining"]])
        self.run.log(
            {
                **round_metrics(row),
                "rounds_table": wandb.Table(columns=list(ROUND_COLUMNS), data=self.rounds),
                "sparsity_table": wandb.Table(columns=list(SPARSITY_COLUMNS), data=self.layers),
            }
        )

    @rank_zero_only
    def finish(self, exit_code: int = 0) -> None:
        """End the W&B run (a non-zero ``exit_code`` marks it failed)."""
        self.run.finish(exit_code=exit_code)


def stored_wandb_id(path: Path | None) -> str | None:
    """The W&B run id kept in ``path`` (``<run>/logs/wandb_id``), or ``None`` when there is none."""
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


class RunLoggers:
    """Builds each round's Lightning loggers from ``cfg.logger`` and records per-round results."""

    def __init__(self, cfg: RunConfig, run_dir: Path) -> None:
        self.specs = {name: thawed(spec) for name, spec in cfg.logger.items() if spec}
        self.run_dir = run_dir
        self.log_dir = run_dir / "logs"
        self.wandb: WandbRun | None = None
        if "wandb" in self.specs:
            options = self.specs.pop("wandb")
            options["group"] = options.get("group") or default_group(cfg.job)
            config = thawed(cfg.plain)
            self.wandb = WandbRun(
                save_dir=str(self.log_dir),
                name=run_label(cfg.plain),  # what sets the run apart from the default config; its folder is the hash
                config=config,
                id_file=self.log_dir / WANDB_ID,
                **options,
            )
        self.rounds_tensorboard: Logger | None = None
        if "tensorboard" in self.specs:
            self.rounds_tensorboard = self._per_round(self.specs["tensorboard"], ROUNDS)

    def _per_round(self, spec: dict, version: str) -> Logger:
        return hydra.utils.instantiate(spec, save_dir=str(self.log_dir), name="", version=version)

    def for_round(
        self, round_index: int, resumed_at: int | None = None, start: int = 0, total: int | None = None
    ) -> tuple[list[Logger], IterationAxis]:
        """The loggers for one round's ``trainer.fit``, which starts at iteration ``start`` of the axis and ends at
        ``total``: fresh CSV/TensorBoard loggers writing to ``logs/round_<k>``, and the run's one W&B logger, all
        logging on the axis; and the :class:`IterationAxis` callback the round's Trainer needs for it.
        ``resumed_at``: the round resumes from its checkpoint after that many iterations of its fit, so its CSV
        step log continues the interrupted part's (:func:`continue_step_log`)."""
        axis = IterationAxis(start)
        loggers = [axis.attach(self._per_round(spec, f"round_{round_index:02d}")) for spec in self.specs.values()]
        if resumed_at is not None and rank_zero_only.rank == 0:
            for logger in loggers:
                if isinstance(logger, CSVLogger):
                    continue_step_log(logger, start + resumed_at + 1)
        if self.wandb is not None:
            offset = None if total is None else round_index * total
            loggers.append(self.wandb.for_round(round_index, offset, axis))
        return loggers, axis

    def log_round(self, row: dict, sparsity: dict) -> None:
        """Record one finished round (its ``rounds.csv`` row and its mask's sparsity report)."""
        if self.rounds_tensorboard is not None:
            self.rounds_tensorboard.log_metrics(round_metrics(row), step=row["round"])
        if self.wandb is not None:
            self.wandb.log_round(row, sparsity)

    def finish(self, exit_code: int = 0) -> None:
        """Close whatever the loggers hold open (called once, at the end of the run or on failure, then with a
        non-zero ``exit_code``)."""
        if self.rounds_tensorboard is not None:
            self.rounds_tensorboard.finalize("success" if exit_code == 0 else "failed")
        if self.wandb is not None:
            self.wandb.finish(exit_code)
