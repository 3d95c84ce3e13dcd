"""Shared fixtures: compose the real Hydra config (shrunk for speed) and run ``train.py`` as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from lth.config.identity import register_resolvers
from lth.config.run import RunConfig

REPO = Path(__file__).resolve().parents[1]
FAST = ["dataset=synthetic", "train.steps=30it", "train.eval_every=10it", "prune.rounds=2", "logger=none"]


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``make_cfg(*overrides)``: the real config with FAST overrides, outputs under tmp_path."""
    register_resolvers()

    def make(*overrides: str, fast: bool = True) -> DictConfig:
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            return compose(
                "config", overrides=[*(FAST if fast else []), f"paths.output_dir={tmp_path / 'outputs'}", *overrides]
            )

    return make


def train(cfg: DictConfig, run_dir: Path | str | None = None) -> dict:
    """The run as ``train.py`` makes it, in this process: the composed config validated and typed once
    (:func:`lth.config.entry.load_run`), then :func:`lth.run.loop.train`."""
    from lth.config.entry import load_run
    from lth.run.loop import train as run

    return run(load_run(cfg), run_dir=run_dir)


def typed(cfg: DictConfig) -> RunConfig:
    """A composed config as the run has it, validated and typed, to build the run's objects from (the launch is not
    checked: a DDP config builds here as on each of its ranks)."""
    from lth.config.entry import plain_config
    from lth.config.validate import validate

    validate(cfg)
    return RunConfig.of(plain_config(cfg))


def run_folders(parent: Path) -> list[Path]:
    """The run folders under ``parent`` (those with a rounds.csv; not the shared dense store or lock files)."""
    return sorted(p.parent for p in parent.glob("*/rounds.csv"))


def run_train(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python train.py *args`` in a subprocess from ``cwd``, with 1 torch thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0", "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
