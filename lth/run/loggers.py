"""The loggers of a run: Lightning loggers for each round's step metrics, and the per-round results.

``logger=`` in the config holds zero or more logger specs by name: ``csv``, ``tensorboard``, ``wandb``
(``logger=many`` for all three, ``logger=[csv,wandb]`` for any mix, ``logger=none`` for none). A run makes
one :class:`RunLoggers`; each round asks it for that round's Lightning loggers, and after each round it is
given the round's row of ``rounds.csv`` and its sparsity report.

CSV and TensorBoard write one folder per round, ``logs/round_<k>`` (TensorBoard also ``logs/rounds``, the
per-round results against ``round``). W&B is one run for the whole job, see :class:`WandbRun`. A round resumed
from its checkpoint continues its ``metrics.csv``; a round that restarts from its start writes it afresh.
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
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from lth.run.artifacts import ROUND_COLUMNS

log = logging.getLogger("lth")

ROUNDS = "rounds"  # the namespace of per-round results, named after rounds.csv
SPARSITY_COLUMNS = ("round", "layer", "total", "remaining", "weights_remaining")


def round_metrics(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ``rounds.csv`` row as ``rounds/<column>`` metrics."""
    return {f"{ROUNDS}/{column}": row[column] for column in ROUND_COLUMNS if row.get(column) is not None}


class RoundsWandbLogger(WandbLogger):
    """Lightning's W&B logger, kept for all rounds of a run.

    Each round's ``trainer.fit`` restarts Lightning's step at 0; this logger shifts it by the iterations of the
    earlier rounds, so ``trainer/global_step`` counts iterations over the whole run and never goes back, and
    adds ``round`` to every row.
    """

    def __init__(self, save_dir: str, experiment: Any = None) -> None:
        super().__init__(save_dir=save_dir, experiment=experiment)
        self.round_index = 0
        self.offset = 0
        self.last_step = 0

    def start_round(self, round_index: int) -> None:
        """Continue the step count after the previous round's last logged step."""
        self.offset += self.last_step
        self.last_step = 0
        self.round_index = round_index

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log ``metrics`` at the run-wide step (``step`` counts from 0 in every round)."""
        metrics = {**metrics, "round": self.round_index}
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


def default_group() -> str | None:
    """The W&B group of a job launched by Hydra: its sweep folder's name under ``-m``, else its experiment."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        return Path(hc.sweep.dir).name
    return hc.runtime.choices.get("experiment")


class WandbRun:
    """One W&B run for one job: every round's step metrics, and the per-round results.

    Layout: Lightning's step metrics (``train_loss``, ``val_loss``, ...) against ``trainer/global_step``,
    iterations over the whole run; per-round results as ``rounds/<column of rounds.csv>`` against
    ``rounds/weights_remaining`` (itself against ``rounds/round``), so a panel can plot accuracy against weights
    remaining; the tables ``rounds_table`` (rows of ``rounds.csv``) and ``sparsity_table`` (each layer in each
    round), logged whole after every round. The run's config is the resolved config. The run starts when this
    object is made (on rank 0 only) and ends with :meth:`finish`; ``options`` go to ``wandb.init`` as they are
    (``notes``, ``settings``, ...).
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
        **options: Any,
    ) -> None:
        run = None
        if rank_zero_only.rank == 0:
            Path(save_dir).mkdir(parents=True, exist_ok=True)
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

    def for_round(self, round_index: int) -> RoundsWandbLogger:
        """The run's Lightning logger, its steps continuing after the previous round's."""
        self.logger.start_round(round_index)
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
    """Make ``logger``, the CSV logger of a round resumed from its checkpoint at step ``before`` of its fit, continue
    that round's ``metrics.csv`` instead of starting it afresh (what Lightning's CSV logger does).

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

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        self.specs = {name: spec for name, spec in (cfg.get("logger") or {}).items() if spec}
        self.run_dir = run_dir
        self.log_dir = run_dir / "logs"
        self.wandb: WandbRun | None = None
        if "wandb" in self.specs:
            options = OmegaConf.to_container(self.specs.pop("wandb"), resolve=True)
            options["group"] = options.get("group") or default_group()
            config = OmegaConf.to_container(cfg, resolve=True)
            self.wandb = WandbRun(save_dir=str(self.log_dir), name=run_dir.name, config=config, **options)
        self.rounds_tensorboard: Logger | None = None
        if "tensorboard" in self.specs:
            self.rounds_tensorboard = self._per_round(self.specs["tensorboard"], ROUNDS)

    def _per_round(self, spec: DictConfig, version: str) -> Logger:
        return hydra.utils.instantiate(spec, save_dir=str(self.log_dir), name="", version=version)

    def for_round(self, round_index: int, resumed_at: int | None = None) -> list[Logger]:
        """The loggers for one round's ``trainer.fit``: fresh CSV/TensorBoard loggers writing to
        ``logs/round_<k>``, and the run's one W&B logger. ``resumed_at``: the round resumes from its checkpoint
        at that step of its fit, so its CSV step log continues the interrupted part's (:func:`continue_step_log`)."""
        loggers = [self._per_round(spec, f"round_{round_index:02d}") for spec in self.specs.values()]
        if resumed_at is not None and rank_zero_only.rank == 0:
            for logger in loggers:
                if isinstance(logger, CSVLogger):
                    continue_step_log(logger, resumed_at)
        if self.wandb is not None:
            loggers.append(self.wandb.for_round(round_index))
        return loggers

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
