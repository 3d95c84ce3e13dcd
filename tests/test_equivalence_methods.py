"""Every ``prune.method`` with every control, one-shot to 90% sparsity: the same run whether round 0 is shared or
each ticket trained first (``tests/equivalence.py`` says how), each control's mask its ticket's changed as the
control says, and every method killed mid-round resumes to the same run. The grid (56 jobs through ``python
train.py -m``) is slow: the quick lane checks the methods in test_methods.py and this equivalence on magnitude
pruning (test_equivalence_rewinds).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lth.state.artifacts import read_rounds
from tests.equivalence import CONTROLS, EVAL_EVERY, QUIET, TOTAL, Killed, assert_same_run, by_case, masks, sweep

pytestmark = pytest.mark.slow  # every test here (the quick lane: see above)
METHODS = ["magnitude", "lamp", "early_bird", "snip", "grasp", "synflow", "magnitude_init", "random"]
ONE_SHOT = ["prune.rounds=1", "prune.target_sparsity=0.9"]
ONE_SHOT += ["prune.early_bird.window=2", "prune.early_bird.epsilon=0.005"]  # drawn at iteration 16 of 20
METHOD_CASES = [(m, c) for m in METHODS for c in CONTROLS]


@pytest.fixture(scope="module")
def method_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[tuple[str, str], Path]]:
    root = tmp_path_factory.mktemp("methods")
    sweep(
        root / "shared",
        *ONE_SHOT,
        f"prune.method={','.join(METHODS)}",
        f"prune.control={','.join(CONTROLS)}",
        setup=QUIET,
    )
    alone = ["train.share_dense=false", f"prune.control={','.join(CONTROLS[::-1])}"]
    sweep(root / "alone", *ONE_SHOT, *alone, f"prune.method={','.join(METHODS[::-1])}", setup=QUIET)
    found = {"shared": by_case(root / "shared", "method"), "alone": by_case(root / "alone", "method")}
    assert set(found["shared"]) == set(found["alone"]) == set(METHOD_CASES)
    return found


@pytest.mark.parametrize(("method", "control"), METHOD_CASES)
def test_every_method_with_every_control_gives_the_same_run_whichever_trains_first(method_runs, method, control):
    assert_same_method_run(method_runs, method, control)


def assert_same_method_run(found: dict[str, dict[tuple[str, str], Path]], method: str, control: str) -> None:
    assert_same_run(found["shared"][(method, control)], found["alone"][(method, control)])
    if control != "null":  # the control trains on its ticket's masks, changed as the control says
        ticket = masks(found["shared"][(method, "null")])[1]
        mask = masks(found["shared"][(method, control)])[1]
        same = all(torch.equal(ticket[k], mask[k]) for k in ticket)
        assert same == (control == "reinit")
        assert [int(m.sum()) for m in ticket.values()] == [int(m.sum()) for m in mask.values()]


def test_the_early_bird_round_0_stops_where_it_draws_the_ticket(method_runs) -> None:
    run = method_runs["shared"][("early_bird", "null")]
    drawn = json.loads((run / "round_00" / "early_bird.json").read_text())["drawn_iteration"]
    assert 0 < drawn < TOTAL and read_rounds(run / "rounds.csv")[0]["train_iterations"] == drawn


@pytest.mark.parametrize("method", METHODS)
def test_every_method_killed_mid_round_resumes_to_the_same_run(
    method_runs, make_cfg, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, method: str
) -> None:
    assert_same_run(
        kill_mid_round_and_resume(make_cfg, monkeypatch, tmp_path, method), method_runs["alone"][(method, "null")]
    )


def kill_mid_round_and_resume(make_cfg, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, method: str) -> Path:
    """Run ``method`` one-shot, killed mid-round 0 and again mid-round 1, resumed to the end; its run folder."""
    from lth.state.checkpoints import RoundCheckpoint
    from tests.conftest import train

    overrides = [*QUIET, *ONE_SHOT, f"prune.method={method}", f"train.checkpoint_every={EVAL_EVERY}it"]
    run_dir = tmp_path / "runs" / "run"
    save = RoundCheckpoint.on_validation_end
    killed = []

    def killed_mid_round(self, trainer, pl_module) -> None:  # once in round 0 (after 8 it), once in round 1
        save(self, trainer, pl_module)
        folder = self.path.parent.name
        if folder not in killed and trainer.global_step == 2 * EVAL_EVERY:
            killed.append(folder)
            raise Killed

    monkeypatch.setattr(RoundCheckpoint, "on_validation_end", killed_mid_round)
    with pytest.raises(Killed):
        train(make_cfg(*overrides, fast=False), run_dir=run_dir)
    with pytest.raises(Killed):
        train(make_cfg(*overrides, "resume=true", fast=False), run_dir=run_dir)
    train(make_cfg(*overrides, "resume=true", fast=False), run_dir=run_dir)
    assert killed == ["round_00", "round_01"]
    return run_dir
