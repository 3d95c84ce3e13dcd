"""``logger=wandb``: one W&B run per job (see :class:`WandbRun`)."""

from __future__ import annotations

import logging
import netrc
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from lth.config.run import Job, RunConfig, thawed
from lth.run.loggers.kinds import (
    ROUNDS,
    SPARSITY_COLUMNS,
    RunPerJob,
    RunWideSteps,
    round_metrics,
    stored_id,
)
from lth.state.artifacts import ROUND_COLUMNS, write_text
from lth.state.labels import run_label

log = logging.getLogger("lth")

WANDB_ID = "wandb_id"  # the file under logs/ holding the id of the run's W&B run


class RoundsWandbLogger(RunWideSteps, WandbLogger):
    """Lightning's W&B logger, kept for all rounds of a run (see :class:`RunWideSteps`): ``trainer/global_step``
    never goes back over the run."""

    def __init__(self, save_dir: str, experiment: Any = None) -> None:
        super().__init__(save_dir=save_dir, experiment=experiment)


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


class WandbRun(RunPerJob):
    """``logger=wandb``: one W&B run for one job: every round's step metrics, and the per-round results.

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
            known = stored_id(id_file)
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

    @classmethod
    def build(cls, spec: dict, cfg: RunConfig, log_dir: Path) -> WandbRun:
        options = dict(spec)
        options["group"] = options.get("group") or default_group(cfg.job)
        return cls(
            save_dir=str(log_dir),
            name=run_label(cfg.plain, cfg.job.swept),  # what its sweep varies and what sets it apart from the default
            config=thawed(cfg.plain),
            id_file=log_dir / WANDB_ID,
            **options,
        )

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
