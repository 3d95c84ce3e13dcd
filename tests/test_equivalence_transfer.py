"""A transferred ticket (``prune.mask_from``) and its random masks: the same run shared, alone and resumed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.equivalence import assert_same_run, comparable, killed_mid_round, masks

pytestmark = pytest.mark.slow  # 9 runs: the quick lane has test_equivalence_rewinds and test_transfer


def test_a_transferred_ticket_and_its_random_masks_are_the_same_run_shared_alone_and_resumed(
    make_cfg, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """prune.mask_from: round 0 starts from another run's mask, so it never comes from (or goes to) the dense store
    of the runs without one; the same whether round 0 is shared, trained alone, or killed mid-round and resumed."""
    from tests.conftest import train

    source = Path(train(make_cfg("prune.rounds=1"), run_dir=tmp_path / "source")["run_dir"])
    moved = ["dataset.source.seed=5", f"prune.mask_from={source}", "prune.rounds=1", "train.checkpoint_every=10it"]
    done = {}
    for variant, extra in (("shared", []), ("alone", ["train.share_dense=false"])):
        for control in ("null", "random_prune"):
            cfg = make_cfg(*moved, *extra, f"prune.control={control}")
            done[(variant, control)] = Path(train(cfg, run_dir=tmp_path / variant / control)["run_dir"])
    run_dir = tmp_path / "killed" / "random_prune"
    control = make_cfg(*moved, "prune.control=random_prune")
    killed_mid_round(monkeypatch, run_dir / "round_00", lambda: train(control, run_dir=run_dir))
    train(make_cfg(*moved, "prune.control=random_prune", "resume=true"), run_dir=run_dir)
    for control in ("null", "random_prune"):
        assert_same_run(done[("shared", control)], done[("alone", control)])
    assert_same_run(run_dir, done[("shared", "random_prune")])
    ticket, random = masks(done[("shared", "null")]), masks(done[("shared", "random_prune")])
    assert comparable(done[("shared", "null")])[0] != comparable(done[("shared", "random_prune")])[0]
    assert all(int(ticket[0][k].sum()) == int(random[0][k].sum()) for k in ticket[0])
