"""Runs the config says are the same experiment give the same numbers, bit for bit, whatever the path.

Every rewind mode (``init``, a Step in ``it``, a Step in ``ep``, ``lr``, ``none``) is crossed with every control
(none, ``reinit``, ``random_prune``, ``shuffle``; controls need a rewind to weights), with a step schedule so the
learning rate is visible. Through ``python train.py -m``, the same jobs run twice:

- ``shared``: round 0 taken from the shared dense store, each ticket trained before its controls;
- ``alone``: ``train.share_dense=false``, the controls first, each triggering its ticket's training.

Their ``rounds.csv`` (every column but ``train_seconds``) and masks must be equal; the learning rate of every
logged step must be the closed form of its rewind mode, written out here; and a run killed mid-round and at a
round boundary, then resumed, must end where the uninterrupted run did. The structured granularities (``channel``,
``2:4``) get the same two checks, rewound to an early iteration, with every control.

This module holds what the ``test_equivalence_*.py`` files share (each file's module fixture runs once, on one
xdist worker): the shrunk setup, the closed forms, the sweep through ``train.py`` and the kill-and-resume.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lth.state.artifacts import read_rounds
from tests.conftest import run_folders, run_main

TOTAL, EVAL_EVERY, EPOCH, BASE_LR, MILESTONE, GAMMA = 20, 4, 10, 0.05, 12, 0.1
SETUP = [
    "dataset=synthetic",
    "train.batch_size=100",  # 1000 training images: an epoch is 10 iterations
    f"train.steps={TOTAL}it",
    f"train.eval_every={EVAL_EVERY}it",
    "prune.rounds=2",
    "optim=sgd",
    f"optim.optimizer.lr={BASE_LR}",
    "optim.schedule.name=step",
    f"optim.schedule.milestones=[{MILESTONE}it]",
    f"optim.schedule.gamma={GAMMA}",
    "logger=csv",
    "hardware=cpu",
    "hardware.threads=1",
    "hardware.rank_report=true",  # each fit's first-epoch samples, for the data order after a rewind
]
# the same runs without what only the rewind grid reads (its step logs, each fit's samples): both keys are run-only
QUIET = [*(a for a in SETUP if a not in ("logger=csv", "hardware.rank_report=true")), "logger=none"]
TO_WEIGHTS = ["init", "6it", "1ep"]  # rewinds to weights, which controls can use; 6 is not a multiple of 4
CONTROLS = ["null", "reinit", "random_prune", "shuffle"]
CASES = [(r, c) for r in TO_WEIGHTS for c in CONTROLS] + [("lr", "null"), ("none", "null")]


def start_of(rewind: str, round_index: int) -> int:
    """Where a round starts on the iteration axis: a rewind to k starts pruned rounds at k, the rest at 0."""
    if round_index == 0:
        return 0
    return {"init": 0, "6it": 6, "1ep": EPOCH, "lr": 0, "none": 0}[rewind]


def schedule_position(rewind: str, round_index: int, batch: int) -> int:
    """The iteration of round 0's schedule at which batch ``batch`` (from 0) of a round is trained."""
    if round_index > 0 and rewind == "none":
        return TOTAL + batch  # fine-tuning stays at the end of the schedule
    return start_of(rewind, round_index) + batch


def closed_form_lr(position: int) -> float:
    return BASE_LR * (GAMMA if position >= MILESTONE else 1.0)


def sweep(out: Path, *args: str, setup: list[str] = SETUP) -> None:
    """``python train.py -m`` of ``setup`` and ``args`` into the sweep folder ``out`` (in this process)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    result = run_main("-m", *setup, f"hydra.sweep.dir={out}", *args, cwd=out.parent)
    assert result.returncode == 0, result.stderr[-3000:]


def by_case(folder: Path, key: str = "rewind") -> dict[tuple[str, str], Path]:
    """The runs under ``folder`` by (``prune.<key>``, ``prune.control`` or ``"null"``)."""
    runs = {}
    for run in run_folders(folder):
        prune = OmegaConf.load(run / "config.yaml").prune
        runs[(str(prune[key]), str(prune.control) if prune.control else "null")] = run
    return runs


def comparable(run: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "train_seconds"} for row in read_rounds(run / "rounds.csv")]


def masks(run: Path) -> list[dict[str, torch.Tensor]]:
    return [torch.load(p) for p in sorted(run.glob("round_*/mask.pt"))]


def assert_same_run(a: Path, b: Path) -> None:
    assert comparable(a) == comparable(b)
    for x, y in zip(masks(a), masks(b), strict=True):
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def logged_steps(run: Path, round_index: int, column: str) -> list[tuple[int, float]]:
    with open(run / "logs" / f"round_{round_index:02d}" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    name = next(c for c in rows[0] if c.startswith(column))
    return [(int(r["step"]), float(r[name])) for r in rows if r[name]]


class Killed(BaseException):
    """Stands for a SIGKILL at a chosen point (raised past every ``except Exception``)."""


def killed_mid_round(monkeypatch: pytest.MonkeyPatch, round_folder: Path, run: Callable[[], object]) -> None:
    """``run()``, killed just after a checkpoint inside ``round_folder`` before the round's end (the hook put back)."""
    from lth.state.checkpoints import RoundCheckpoint

    save = RoundCheckpoint.on_validation_end

    def killed(self, trainer, pl_module) -> None:
        save(self, trainer, pl_module)
        if self.path.parent == round_folder and trainer.global_step < trainer.max_steps:
            raise Killed

    monkeypatch.setattr(RoundCheckpoint, "on_validation_end", killed)
    with pytest.raises(Killed):
        run()
    monkeypatch.setattr(RoundCheckpoint, "on_validation_end", save)


def kill_and_resume(make_cfg, monkeypatch: pytest.MonkeyPatch, overrides: list[str], run_dir: Path) -> None:
    """Run ``overrides`` into ``run_dir``, killed after round 0 and again mid-round 1, resumed to the end."""
    import lth.run.loop
    from tests.conftest import train

    write_rounds = lth.run.loop.write_rounds

    def killed_after_round_0(path, rows) -> None:
        write_rounds(path, rows)
        if len(rows) == 1 and path.parent == run_dir:
            raise Killed

    monkeypatch.setattr(lth.run.loop, "write_rounds", killed_after_round_0)
    with pytest.raises(Killed):
        train(make_cfg(*overrides, fast=False), run_dir=run_dir)
    assert len(read_rounds(run_dir / "rounds.csv")) == 1
    monkeypatch.setattr(lth.run.loop, "write_rounds", write_rounds)

    resumed = make_cfg(*overrides, "resume=true", fast=False)
    killed_mid_round(monkeypatch, run_dir / "round_01", lambda: train(resumed, run_dir=run_dir))
    assert len(read_rounds(run_dir / "rounds.csv")) == 1 and (run_dir / "round_01" / "last.ckpt").is_file()

    train(make_cfg(*overrides, "resume=true", fast=False), run_dir=run_dir)
