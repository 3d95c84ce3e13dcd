"""Rewind targets and controls, each through the real config and tested for its defining property."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from lth.lightning.callback import LotteryTicket
from lth.state.artifacts import read_rounds
from tests.conftest import train, typed
from tests.test_callback import Tiny, fit


def masks(run_dir: Path, k: int) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / f"round_{k:02d}" / "mask.pt")


@pytest.fixture(scope="module")
def controls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A ticket and its three controls, 2 rounds each, in one output folder (as one sweep would make them)."""
    from hydra import compose, initialize_config_dir

    from lth.config.identity import register_resolvers
    from tests.conftest import FAST, REPO, run_folders

    register_resolvers()
    out = tmp_path_factory.mktemp("controls")
    dirs = {}
    for control in ("reinit", "random_prune", "shuffle"):  # the ticket is trained on demand by the first control
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=[*FAST, f"prune.control={control}", f"paths.output_dir={out}"])
        dirs[control] = Path(train(cfg)["run_dir"])
    (ticket,) = [p for p in run_folders(out / "runs") if p not in dirs.values()]
    dirs["ticket"] = ticket
    return dirs


def test_the_ticket_was_trained_once_and_shared(controls: dict[str, Path]) -> None:
    assert len({p.parent for p in controls.values()}) == 1
    assert (controls["ticket"] / "summary.json").is_file()


def test_reinit_keeps_the_mask_but_draws_new_weights(controls: dict[str, Path]) -> None:
    ticket, reinit = controls["ticket"], controls["reinit"]
    for k in (1, 2):
        assert all(torch.equal(masks(reinit, k)[n], m) for n, m in masks(ticket, k).items())
    w_ticket = torch.load(ticket / "rewind.pt")["model.layers.0.weight"]
    w_reinit = torch.load(reinit / "rewind.pt")["model.layers.0.weight"]
    assert not torch.equal(w_ticket, w_reinit)
    # the same (Glorot-normal) distribution; floats, since pytest 9's approx cannot iterate a 0-d tensor
    assert float(w_reinit.std()) == pytest.approx(float(w_ticket.std()), rel=0.02)
    # round 0 of the control is the ticket's dense network: it has no mask to test
    (dense_control, *_), (dense_ticket, *_) = read_rounds(reinit / "rounds.csv"), read_rounds(ticket / "rounds.csv")
    assert {**dense_control, "train_seconds": 0} == {**dense_ticket, "train_seconds": 0}


@pytest.mark.parametrize("control", ["random_prune", "shuffle"])
def test_random_masks_match_the_tickets_per_layer_counts_exactly(controls: dict[str, Path], control: str) -> None:
    for k in (1, 2):
        ticket, other = masks(controls["ticket"], k), masks(controls[control], k)
        for name, m in ticket.items():
            assert int(other[name].sum()) == int(m.sum()), (control, k, name)
        assert not torch.equal(other["model.layers.0.weight"], ticket["model.layers.0.weight"])
    # both start from the ticket's initial weights: round 0 (dense) is identical to the ticket's
    assert torch.equal(
        torch.load(controls[control] / "rewind.pt")["model.layers.0.weight"],
        torch.load(controls["ticket"] / "rewind.pt")["model.layers.0.weight"],
    )


def test_random_prune_is_nested_and_shuffle_is_not(controls: dict[str, Path]) -> None:
    r1, r2 = masks(controls["random_prune"], 1), masks(controls["random_prune"], 2)
    assert all(not (r2[n] & ~r1[n]).any() for n in r1)
    s1, s2 = masks(controls["shuffle"], 1), masks(controls["shuffle"], 2)
    assert any((s2[n] & ~s1[n]).any() for n in s1)


def test_rewind_to_an_iteration_restores_the_weights_saved_there_bit_for_bit(make_cfg, tmp_path: Path) -> None:
    train(make_cfg("prune.rewind=20it", "prune.rounds=1"), run_dir=tmp_path / "rewound")
    # the same init and data order trained for exactly 20 iterations ends where the rewind point was saved
    train(make_cfg("train.steps=20it", "train.eval_every=20it", "prune.rounds=0"), run_dir=tmp_path / "short")
    rewind = torch.load(tmp_path / "rewound" / "rewind.pt")
    at_20 = torch.load(tmp_path / "short" / "round_00" / "early_stop.pt")
    assert rewind.keys() == at_20.keys() and all(torch.equal(rewind[k], at_20[k]) for k in rewind)


def first_lr(run_dir: Path, k: int) -> float:
    rows = list(csv.DictReader(open(run_dir / "logs" / f"round_{k:02d}" / "metrics.csv")))
    column = next(c for c in rows[0] if c.startswith("lr-"))
    return float(next(r[column] for r in rows if r[column]))


@pytest.mark.parametrize(("rewind", "round1_lr"), [("lr", 1e-2), ("none", 1e-3), ("init", 1e-2), ("20it", 1e-3)])
def test_learning_rate_rewinding_replays_a_decaying_schedule(make_cfg, tmp_path: Path, rewind: str, round1_lr):
    schedule = ["optim.optimizer.lr=0.01", "optim.schedule.name=step", "optim.schedule.milestones=[15it]"]
    cfg = make_cfg(*schedule, f"prune.rewind={rewind}", "prune.rounds=1", "logger=csv", "train.steps=30it")
    train(cfg, run_dir=tmp_path / rewind)
    assert first_lr(tmp_path / rewind, 0) == pytest.approx(1e-2)
    assert first_lr(tmp_path / rewind, 1) == pytest.approx(round1_lr)


@pytest.mark.parametrize("rewind", ["lr", "none"])
def test_lr_and_none_keep_the_trained_weights(rewind: str) -> None:
    model, ticket = Tiny(), LotteryTicket(rate=0.5, rewind=rewind)
    fit(model, ticket, 6)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    ticket.advance(model)
    for name, m in ticket.mask.items():
        assert torch.equal(model.state_dict()[name], trained[name] * m)
    assert torch.equal(model.state_dict()["net.1.running_mean"], trained["net.1.running_mean"])


def test_a_control_needs_a_rewind_to_weights(make_cfg, tmp_path: Path) -> None:
    from lth.core.errors import ConfigError

    with pytest.raises(ConfigError, match="^prune.control: reinit needs a rewind"):
        train(make_cfg("prune.control=reinit", "prune.rewind=lr"), run_dir=tmp_path / "x")
    with pytest.raises(ConfigError, match="^prune.control: unknown control 'nope'; allowed: null, reinit"):
        train(make_cfg("prune.control=nope"), run_dir=tmp_path / "x")


def test_a_rewind_to_iteration_0_is_the_initialisation(make_cfg, tmp_path: Path) -> None:
    from lth.run.build import build_model

    cfg = make_cfg("prune.rewind=0it", "prune.rounds=1")
    train(cfg, run_dir=tmp_path / "run")
    rewind, initial = torch.load(tmp_path / "run" / "rewind.pt"), build_model(typed(cfg)).state_dict()
    assert all(torch.equal(rewind[f"model.{k}"], v) for k, v in initial.items())
