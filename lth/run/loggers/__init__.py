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
  ``round`` and against the weights remaining, and the run's identity keys as HParams, TensorBoard). Each is given
  the identity keys as its hyper-parameters (``hparams.yaml``).
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

import math
from pathlib import Path

from pytorch_lightning.loggers import Logger

from lth.config.run import RunConfig, thawed
from lth.run.loggers.kinds import (  # noqa: F401 - the names the loop and tests use, re-exported
    ROUNDS,
    SPARSITY_COLUMNS,
    CSVRounds,
    FolderPerRound,
    IterationAxis,
    LoggerKind,
    NoRun,
    RunPerJob,
    RunWideSteps,
    TensorBoardRounds,
    continue_step_log,
    read_step_log,
    round_metrics,
    stored_id,
)
from lth.run.loggers.mlflow_run import MLFLOW_ARTIFACTS, MLFLOW_ID, MLFLOW_STORE, MLflowRun, check_mlflow, param_key  # noqa: F401
from lth.run.loggers.wandb_run import WANDB_ID, RoundsWandbLogger, WandbRun, default_group, has_wandb_key, wandb_mode  # noqa: F401

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


def logging_interval(eval_every: int, start: int, steps: int) -> int:
    """Every how many iterations a fit of ``steps`` iterations from ``start`` on the axis logs its training loss
    (both engines): at most 50, and a divisor of every evaluation (multiples of ``eval_every``) and of the end, so
    the loss before each evaluation is logged."""
    return math.gcd(50, eval_every, start, start + steps)
