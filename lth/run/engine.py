"""The run's engine (``train.engine``): :func:`train` sends a run to the Lightning loop (:mod:`lth.run.loop`, a
Trainer per round) or trains it as a stack of one (:mod:`lth.run.stack`; ``hydra/launcher=stacked`` stacks a
sweep's jobs). The engine is part of the run's identity, so the two never share a run folder.
"""

from __future__ import annotations

from pathlib import Path

from lth.config.run import RunConfig
from lth.run import loop
from lth.run.rounds import RunError
from lth.run.stack import train_stack

__all__ = ["RunError", "train"]


def train(cfg: RunConfig, run_dir: str | Path | None = None) -> dict:
    """Train the run ``cfg`` with its engine; return its summary (:func:`lth.run.loop.train`'s)."""
    if cfg.train.engine == "stacked":
        return train_stack([cfg], [Path(run_dir) if run_dir is not None else loop.default_run_dir(cfg)], size=1)[0]
    return loop.train(cfg, run_dir)
