"""``logger=mlflow``: one MLflow run per job, its store under the run folder (see :class:`MLflowRun`)."""

from __future__ import annotations

import importlib.util
import logging
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities import rank_zero_only

from lth.config.identity import identity, run_id
from lth.config.run import RunConfig
from lth.core.errors import ConfigError
from lth.run.loggers.kinds import (
    NoRun,
    RunPerJob,
    RunWideSteps,
    round_metrics,
    stored_id,
)
from lth.state.artifacts import write_text
from lth.state.labels import flatten, run_label, show

log = logging.getLogger("lth")

MLFLOW_ID = "mlflow_run_id"  # the file under logs/ holding the id of the run's MLflow run
MLFLOW_STORE = "mlflow.db"  # the run's MLflow store under logs/ (sqlite), unless logger.mlflow.tracking_uri is set
MLFLOW_ARTIFACTS = "mlartifacts"  # the artifact folder of that store, under logs/


class RoundsMLFlowLogger(RunWideSteps, MLFlowLogger):
    """Lightning's MLflow logger, kept for all rounds of a run (see :class:`RunWideSteps`). The run's params are
    its config, logged by :class:`MLflowRun` (MLflow refuses a param whose value changes), not what a fit passes;
    the run ends with the job (:meth:`MLflowRun.finish`), not with each round's fit."""

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def finalize(self, status: str = "success") -> None:
        pass


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
            name=run_label(cfg.plain, cfg.job.swept),
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
