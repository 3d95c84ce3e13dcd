"""The loggers of a run: Lightning loggers for each round's step metrics, and the per-round results.

``logger=`` in the config holds zero or more logger specs by name: ``csv``, ``tensorboard``, ``wandb``, ``mlflow``
(``logger=many`` for the first three, ``logger=[csv,mlflow]`` for any mix, ``logger=none`` for none). A run makes
one :class:`RunLoggers`; each round asks it for that round's Lightning loggers, and after each round it is
given the round's row of ``rounds.csv`` and its sparsity report.

Each name is an entry of :data:`LOGGERS`, a :class:`LoggerKind` whose class says what sort of logger it is; no
code here asks for a logger by its name. Adding a logger is one class, one entry and ``conf/logger/<name>.yaml``
(and ``logger.<name>.*`` in ``OPEN_KEYS`` of :mod:`lth.config.validate` where ``+logger.<name>.<key>=`` may add keys):

- :class:`FolderPerRound` (CSV, TensorBoard, and any name not in :data:`LOGGERS`): a Lightning logger made afresh
  for each round from the spec, given ``save_dir=<run>/logs``, ``name=""`` and ``version=round_<k>``, so one folder
  per round, ``logs/round_<k>``. Its traits: ``continues_step_log`` (a round resumed from its checkpoint continues
  its step log, CSV) and ``rounds_version`` (a folder, ``logs/rounds``, holding the per-round results against
  ``round``, TensorBoard).
- :class:`RunPerJob` (W&B, MLflow): one run for the whole job, made when the job starts and ended when it ends;
  its Lightning logger (a :class:`RunWideSteps`) is kept for all rounds and steps never go back over the run. Its
  id is kept in a file under ``logs/`` (``logs/wandb_id``, ``logs/mlflow_run_id``), so a later process on the run
  folder (``resume=true``) continues the same run. The per-round results are logged against the weights remaining.

A round resumed from its checkpoint continues its ``metrics.csv``; a round that restarts from its start writes it
afresh.

Every step metric is logged on the README's iteration axis (:class:`IterationAxis`): at step i, what belongs to
iteration i (iterations since the initialisation the round's weights come from), so a round rewound to k logs from
k + 1, and an evaluation after iteration 100 is logged at 100, where ``rounds.csv`` puts it. The test accuracy of
a round's last weights is logged as ``final_test_acc`` and that of its early-stop weights as ``test_acc`` (the
names of ``rounds.csv``), both at the round's last iteration.
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import netrc
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import hydra
import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger, Logger, MLFlowLogger, WandbLogger
from pytorch_lightning.loggers.logger import DummyLogger
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_only

from lth.config.identity import identity, run_id
from lth.config.run import Job, RunConfig, thawed
from lth.core.errors import ConfigError
from lth.state.artifacts import ROUND_COLUMNS, write_text
from lth.state.labels import flatten, run_label, show

log = logging.getLogger("lth")

ROUNDS = "rounds"  # the namespace of per-round results, named after rounds.csv
SPARSITY_COLUMNS = ("round", "layer", "total", "remaining", "weights_remaining")
WANDB_ID = "wandb_id"  # the file under logs/ holding the id of the run's W&B run
MLFLOW_ID = "mlflow_run_id"  # the file under logs/ holding the id of the run's MLflow run
MLFLOW_STORE = "mlflow.db"  # the run's MLflow store under logs/ (sqlite), unless logger.mlflow.tracking_uri is set
MLFLOW_ARTIFACTS = "mlartifacts"  # the artifact folder of that store, under logs/


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


class RoundsWandbLogger(RunWideSteps, WandbLogger):
    """Lightning's W&B logger, kept for all rounds of a run (see :class:`RunWideSteps`): ``trainer/global_step``
    never goes back over the run."""

    def __init__(self, save_dir: str, experiment: Any = None) -> None:
        super().__init__(save_dir=save_dir, experiment=experiment)


class RoundsMLFlowLogger(RunWideSteps, MLFlowLogger):
    """Lightning's MLflow logger, kept for all rounds of a run (see :class:`RunWideSteps`). The run's params are
    its config, logged by :class:`MLflowRun` (MLflow refuses a param whose value changes), not what a fit passes;
    the run ends with the job (:meth:`MLflowRun.finish`), not with each round's fit."""

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def finalize(self, status: str = "success") -> None:
        pass


class NoRun(RunWideSteps, DummyLogger):
    """The logger of a :class:`RunPerJob` on ranks other than 0, where no run is started: it logs nothing."""


class LoggerKind:
    """What a logger named in ``cfg.logger`` is to a run: one entry of :data:`LOGGERS`.

    Made once per job, on every rank, from its spec (``cfg.logger.<name>``) by :meth:`build`; asked for each
    round's Lightning logger (:meth:`for_round`); told of each finished round, on rank 0 (:meth:`log_round`); and
    finished once, at the end of the job or on failure (:meth:`finish`).
    """

    one_run_per_job = False  # one run for the whole job, else one folder per round (whose loggers come first)

    @classmethod
    def build(cls, spec: dict, cfg: RunConfig, log_dir: Path) -> LoggerKind:
        """The logger of spec ``spec`` for the run of config ``cfg``, its files under ``log_dir``."""
        raise NotImplementedError

    def for_round(self, round_index: int, axis: IterationAxis, offset: int | None, resumed_at: int | None) -> Logger:
        """The Lightning logger of round ``round_index``, logging on ``axis``; ``offset``: where the round's steps
        start in a run kept for the job (``round_index * train.steps``); ``resumed_at``: the round resumes from its
        checkpoint after that many iterations of its fit (``None``: it starts from its start)."""
        raise NotImplementedError

    def log_round(self, row: Mapping[str, Any], sparsity: Mapping[str, Any]) -> None:
        """Record one finished round: its ``rounds.csv`` row and its mask's sparsity report."""

    def finish(self, exit_code: int = 0) -> None:
        """Close what the logger holds open (a non-zero ``exit_code``: the run failed or was stopped)."""


class FolderPerRound(LoggerKind):
    """A Lightning logger made afresh for each round from the spec (``_target_`` and its arguments) and given
    ``save_dir=<run>/logs``, ``name=""`` and ``version=round_<k>``: one folder per round, ``logs/round_<k>``, its
    steps on the iteration axis. A name that :data:`LOGGERS` does not hold is one of these.

    Traits: ``continues_step_log``, a round resumed from its checkpoint continues the step log its interrupted part
    wrote (:func:`continue_step_log`); ``rounds_version``, a folder under ``logs/`` where one more logger of the spec
    holds the per-round results (``rounds/<column of rounds.csv>``) against ``round``.
    """

    continues_step_log = False
    rounds_version: str | None = None

    def __init__(self, spec: dict, log_dir: Path) -> None:
        self.spec = spec
        self.log_dir = log_dir
        self.rounds = self._made(self.rounds_version) if self.rounds_version else None

    @classmethod
    def build(cls, spec: dict, cfg: RunConfig, log_dir: Path) -> FolderPerRound:
        return cls(spec, log_dir)

    def _made(self, version: str) -> Logger:
        return hydra.utils.instantiate(self.spec, save_dir=str(self.log_dir), name="", version=version)

    def for_round(self, round_index: int, axis: IterationAxis, offset: int | None, resumed_at: int | None) -> Logger:
        logger = axis.attach(self._made(f"round_{round_index:02d}"))
        if resumed_at is not None and self.continues_step_log and rank_zero_only.rank == 0:
            continue_step_log(logger, axis.start + resumed_at + 1)
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
    """``logger=tensorboard``: event files in ``logs/round_<k>``, and the per-round results against ``round`` in
    ``logs/rounds``."""

    rounds_version = ROUNDS


class RunPerJob(LoggerKind):
    """One run for the whole job, started when this is made and ended by :meth:`finish`; its Lightning logger
    :attr:`logger`, a :class:`RunWideSteps`, serves every round (on ranks other than 0, one that logs nothing). Its
    id is kept in a file under ``logs/``, so a later process on the run folder continues the same run."""

    one_run_per_job = True
    logger: RunWideSteps

    def for_round(self, round_index: int, axis: IterationAxis, offset: int | None, resumed_at: int | None) -> Logger:
        self.logger.start_round(round_index, offset, axis)
        return self.logger  # type: ignore[return-value]  # a RunWideSteps Lightning logger


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
            name=run_label(cfg.plain),  # what sets the run apart from the default config; its folder is the hash
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


class MLflowRun(RunPerJob):
    """``logger=mlflow``: one MLflow run for one job, through Lightning's MLFlowLogger (:class:`RoundsMLFlowLogger`).

    The store is ``tracking_uri``, by default ``sqlite:///<run>/logs/mlflow.db`` with its artifacts under
    ``<run>/logs/mlartifacts``: offline, one per run folder (MLflow 3 refuses its old file store, ``mlruns/``; the
    sqlite store needs SQLAlchemy and Alembic, which the ``mlflow`` extra installs). A ``tracking_uri`` given (a
    server, or one sqlite file for a sweep) is used as it is. The run is in experiment ``experiment_name``.

    Layout: Lightning's step metrics (``train_loss``, ``val_loss``, ``lr-...``, ``final_test_acc``, ``test_acc``)
    at step ``round * train.steps + iteration``, which never goes back over the run (W&B's ``trainer/global_step``),
    each row with ``round`` and ``iteration`` (the README's axis, the step of the CSV logs) at the same step; the
    per-round results as ``rounds/<column of rounds.csv>`` at step ``round``, ``rounds/weights_remaining`` among
    them, so a chart with ``rounds/weights_remaining`` as its x-axis shows them against the weights remaining. The
    params are the run's identity (the keys its folder's hash covers), flattened, values as on a command line; the
    run's name is its label (what sets it apart from the default config), as W&B's; its tags say its folder
    (``lth.run_id``, ``lth.run_dir``), then those of the spec. ``options`` go to the MLFlowLogger as they are.

    ``id_file`` (``<run>/logs/mlflow_run_id``) keeps the run's id: a later process on the same run folder (a resumed
    run) continues that run when the store holds it. A ``run_id`` in ``options`` wins over the file.
    """

    def __init__(
        self,
        log_dir: Path,
        name: str,
        params: Mapping[str, Any],
        experiment_name: str = "lth",
        tracking_uri: str | None = None,
        tags: Mapping[str, Any] | None = None,
        id_file: Path | None = None,
        **options: Any,
    ) -> None:
        self.run_id: str | None = None
        if rank_zero_only.rank != 0:  # a client would open the store on every rank
            self.logger = NoRun()
            return
        artifact_location = options.pop("artifact_location", None)
        if not tracking_uri:
            tracking_uri = f"sqlite:///{(log_dir / MLFLOW_STORE).resolve()}"
            artifact_location = artifact_location or (log_dir / MLFLOW_ARTIFACTS).resolve().as_uri()
        check_mlflow(tracking_uri)
        log_dir.mkdir(parents=True, exist_ok=True)
        from mlflow.entities import RunStatus
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri)  # makes the sqlite store when there is none
        known = options.pop("run_id", None) or stored_id(id_file)
        if known and not self._holds(known):
            log.warning("mlflow: run %s is not in %s; starting a new run", known, tracking_uri)
            known = None
        if not known:
            self._experiment(experiment_name, artifact_location)
        self.logger = RoundsMLFlowLogger(
            experiment_name=experiment_name,
            run_name=name,
            tracking_uri=tracking_uri,
            tags={str(k): str(v) for k, v in (tags or {}).items()},
            run_id=known,
            **options,
        )
        self.run_id = self.logger.run_id  # starts the run when it is new
        if known:
            self.client.update_run(self.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        elif id_file is not None:
            write_text(id_file, f"{self.run_id}\n")
        self._log_params(params)

    @classmethod
    def build(cls, spec: dict, cfg: RunConfig, log_dir: Path) -> MLflowRun:
        options = dict(spec)
        tags = {"lth.run_id": run_id(cfg.plain), "lth.run_dir": str(log_dir.parent.resolve())}
        tags.update(options.pop("tags", None) or {})
        return cls(
            log_dir=log_dir,
            name=run_label(cfg.plain),
            params=flatten(identity(cfg.plain)),
            tags=tags,
            id_file=log_dir / MLFLOW_ID,
            **options,
        )

    def _experiment(self, name: str, artifact_location: str | None) -> None:
        """Make experiment ``name`` unless the store holds it (where Lightning would say so, in a warning)."""
        from mlflow.exceptions import MlflowException

        if self.client.get_experiment_by_name(name) is None:
            try:
                self.client.create_experiment(name, artifact_location=artifact_location)
            except MlflowException:  # made meanwhile by another job on the same store
                if self.client.get_experiment_by_name(name) is None:
                    raise

    def _holds(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id).info.lifecycle_stage == "active"
        except MlflowException:
            return False

    def _log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        batch = [Param(param_key(key), show(value)[:MAX_PARAM_VAL_LENGTH]) for key, value in params.items()]
        for i in range(0, len(batch), 100):  # MLflow takes at most 100 params a call
            self.client.log_batch(self.run_id, params=batch[i : i + 100])

    @rank_zero_only
    def log_round(self, row: Mapping[str, Any], sparsity: Mapping[str, Any]) -> None:
        """Log one round's results at step ``round``."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(key, float(value), now, row["round"])
            for key, value in round_metrics(row).items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        ]
        self.client.log_batch(self.run_id, metrics=metrics)

    @rank_zero_only
    def finish(self, exit_code: int = 0) -> None:
        """End the MLflow run (a non-zero ``exit_code`` marks it failed)."""
        self.client.set_terminated(self.run_id, "FINISHED" if exit_code == 0 else "FAILED")


def check_mlflow(tracking_uri: str) -> None:
    """Refuse ``logger=mlflow`` in one line when MLflow, or for a sqlite store SQLAlchemy and Alembic, is missing."""
    needed = ("mlflow", *(("sqlalchemy", "alembic") if tracking_uri.startswith("sqlite:") else ()))
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError("logger", f"mlflow needs {', '.join(missing)}: pip install 'lth[mlflow]'")


def param_key(key: str) -> str:
    """``key`` as an MLflow param name: characters MLflow refuses (a layer pattern's ``*``, ``[``...) become ``_``."""
    return re.sub(r"[^\w\-. /]", "_", key)


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


LOGGERS: dict[str, type[LoggerKind]] = {
    "csv": CSVRounds,
    "tensorboard": TensorBoardRounds,
    "wandb": WandbRun,
    "mlflow": MLflowRun,
}


class RunLoggers:
    """Builds each round's Lightning loggers from ``cfg.logger`` and records per-round results: one
    :class:`LoggerKind` per name, found in :data:`LOGGERS` (:class:`FolderPerRound` for a name it does not hold)."""

    def __init__(self, cfg: RunConfig, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.log_dir = run_dir / "logs"
        specs = {name: thawed(spec) for name, spec in cfg.logger.items() if spec}
        kinds = [LOGGERS.get(name, FolderPerRound).build(spec, cfg, self.log_dir) for name, spec in specs.items()]
        # the per-round folders first (Lightning's trainer.log_dir is its first logger's), then the job's runs
        self.kinds = sorted(kinds, key=lambda kind: kind.one_run_per_job)

    def for_round(
        self, round_index: int, resumed_at: int | None = None, start: int = 0, total: int | None = None
    ) -> tuple[list[Logger], IterationAxis]:
        """The loggers for one round's ``trainer.fit``, which starts at iteration ``start`` of the axis and ends at
        ``total``: fresh loggers writing to ``logs/round_<k>`` and the job's runs' loggers, all logging on the
        axis; and the :class:`IterationAxis` callback the round's Trainer needs for it. ``resumed_at``: the round
        resumes from its checkpoint after that many iterations of its fit, so its CSV step log continues the
        interrupted part's (:func:`continue_step_log`)."""
        axis = IterationAxis(start)
        offset = None if total is None else round_index * total
        return [kind.for_round(round_index, axis, offset, resumed_at) for kind in self.kinds], axis

    def log_round(self, row: dict, sparsity: dict) -> None:
        """Record one finished round (its ``rounds.csv`` row and its mask's sparsity report)."""
        for kind in self.kinds:
            kind.log_round(row, sparsity)

    def finish(self, exit_code: int = 0) -> None:
        """Close whatever the loggers hold open (called once, at the end of the run or on failure, then with a
        non-zero ``exit_code``)."""
        for kind in self.kinds:
            kind.finish(exit_code)
