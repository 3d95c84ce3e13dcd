"""The loggers of a run: Lightning loggers for each round's step metrics, and the per-round results.

``logger=`` in the config holds zero or more Lightning logger specs by name (``csv``, ...). A run makes one
:class:`RunLoggers`; each round asks it for that round's Lightning loggers, and after each round it is
given the round's row of ``rounds.csv`` and its sparsity report.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig
from pytorch_lightning.loggers import Logger


class RunLoggers:
    """Builds each round's Lightning loggers from ``cfg.logger`` and records per-round results."""

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        self.specs = {name: spec for name, spec in (cfg.get("logger") or {}).items() if spec}
        self.run_dir = run_dir

    def for_round(self, round_index: int) -> list[Logger]:
        """Fresh loggers for one round's ``trainer.fit``: files under ``logs/round_<k>``."""
        return [
            hydra.utils.instantiate(
                spec, save_dir=str(self.run_dir / "logs"), name="", version=f"round_{round_index:02d}"
            )
            for spec in self.specs.values()
        ]

    def log_round(self, row: dict, sparsity: dict) -> None:
        """Record one finished round (its ``rounds.csv`` row and its mask's sparsity report)."""

    def finish(self) -> None:
        """Close whatever the loggers hold open (called once, at the end of the run or on failure)."""
