"""Structured tickets through ``train.py``: whole channels (tied through skip connections) and n:m groups, exact
counts, removed channels exactly zero everywhere, and controls that keep the structure."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lth.core.granularity import parse_granularity
from lth.core.masks import prunable_parameters
from lth.core.structured import alive_channels, channel_groups
from lth.models import CifarResNet, LeNet300100
from lth.state.artifacts import read_rounds
from tests.conftest import run_folders, run_main, train

CIFAR_SHAPED = [
    "dataset.channels=3",
    "dataset.image_size=32",
    "dataset.mean=[0.5,0.5,0.5]",
    "dataset.std=[0.25,0.25,0.25]",
    "dataset.source.train_size=200",
    "dataset.source.test_size=100",
    "dataset.val_size=50",
    "train.steps=4it",
    "train.eval_every=2it",
]
RESNET20_CHANNELS = 16 + 32 + 64 + 3 * (16 + 32 + 64)  # three residual streams, and the first conv of 9 blocks


def groups_of(model: nn.Module, shape: tuple[int, ...]) -> list:
    """The channel groups of ``model`` with the run's tensor names (``model.`` prefix)."""
    holder = nn.Module()
    holder.model = model
    holder.forward = model.forward
    return channel_groups(holder, prunable_parameters(holder), torch.zeros(1, *shape))


def stem_outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    seen = []
    hook = model.stem.register_forward_hook(lambda m, a, out: seen.append(out))
    with torch.no_grad():
        model.eval()(x)
    hook.remove()
    return seen[0]


@pytest.mark.slow
def test_channel_tickets_of_resnet20_remove_exact_channel_counts_tied_through_the_skips(make_cfg, tmp_path) -> None:
    cfg = make_cfg("model=resnet20", "prune.granularity=channel", "prune.rate=0.5", "prune.scope=layer", *CIFAR_SHAPED)
    run = Path(train(cfg, run_dir=tmp_path / "run")["run_dir"])
    groups = groups_of(CifarResNet(3, 32, 10), (3, 32, 32))
    assert sum(g.channels for g in groups) == RESNET20_CHANNELS and len(groups) == 12
    residual = next(g for g in groups if g.channels == 16 and len(g.outputs) == 4)  # stem + 3 blocks' conv2
    assert {s.name for s in residual.outputs} == {"model.stem.0.weight"} | {
        f"model.stages.0.{b}.conv2.weight" for b in range(3)
    }
    alive_before = RESNET20_CHANNELS
    for round_index in (1, 2):
        mask = torch.load(run / f"round_{round_index:02d}" / "mask.pt")
        alive = [alive_channels(g, mask) for g in groups]
        assert sum(int(a.sum()) for a in alive) == alive_before // 2  # every group halves (all widths even)
        alive_before //= 2
        assert all(a.any() for a in alive)
        trained = torch.load(run / f"round_{round_index:02d}" / "early_stop.pt")
        for group, keep in zip(groups, alive, strict=True):
            for s in group.outputs + group.inputs + group.coupled:
                dead = s.index[~keep[s.channel]]
                assert (trained[s.name].index_select(s.dim, dead) == 0).all(), s.name
            for s in group.outputs + group.inputs:
                assert not mask[s.name].index_select(s.dim, s.index[~keep[s.channel]]).any()
        # a removed channel of the residual stream is exactly zero in the trained network's activations
        model = CifarResNet(3, 32, 10)
        model.load_state_dict({k.removeprefix("model."): v for k, v in trained.items()})
        dead = ~alive[groups.index(residual)]
        assert dead.any() and (stem_outputs(model, torch.randn(4, 3, 32, 32))[:, dead] == 0).all()
    rows = read_rounds(run / "rounds.csv")
    assert rows[2]["weights_remaining"] < rows[1]["weights_remaining"] < 1


def test_2_4_tickets_keep_exactly_2_of_every_4_consecutive_inputs(tmp_path: Path) -> None:
    result = run_main(
        "dataset=synthetic", "train.steps=20it", "train.eval_every=10it", "prune.rounds=2", "logger=none",
        "model=lenet300", "prune.granularity=2:4", "paths.output_dir=out", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = run_folders(tmp_path / "out" / "runs")
    assert [r["weights_remaining"] for r in read_rounds(run / "rounds.csv")] == [1.0, 0.75, 0.5]
    trained = torch.load(run / "round_02" / "early_stop.pt")
    for round_index, keep in ((1, 3), (2, 2)):  # round r of R keeps 4 - round(2 r / R)
        mask = torch.load(run / f"round_{round_index:02d}" / "mask.pt")
        for name, m in mask.items():
            assert (m.reshape(m.shape[0], -1, 4).sum(-1) == keep).all(), name
    for name, m in mask.items():
        w = trained[name].reshape(m.shape[0], -1, 4)
        assert ((w != 0).sum(-1) <= 2).all()
    rewound = torch.load(run / "rewind.pt")
    first = mask["model.layers.0.weight"].reshape(300, -1, 4)
    magnitudes = torch.load(run / "round_01" / "early_stop.pt")["model.layers.0.weight"].abs().reshape(300, -1, 4)
    kept_min = magnitudes.masked_fill(~first, float("inf")).amin(-1)
    dropped_max = magnitudes.masked_fill(first, -1.0).amax(-1)
    assert (kept_min >= dropped_max).all()  # the largest two of every four survive round 2 (from round 1's weights)
    assert rewound.keys() >= mask.keys()


@pytest.mark.parametrize("granularity", ["channel", "2:4"])
@pytest.mark.parametrize("control", ["shuffle", "random_prune"])
def test_controls_draw_channels_or_m_groups_and_keep_the_tickets_counts(
    make_cfg, tmp_path: Path, granularity: str, control: str
) -> None:
    overrides = ["model=lenet300", f"prune.granularity={granularity}", "prune.rate=0.5", "train.steps=10it"]
    cfg = make_cfg(*overrides, f"prune.control={control}")
    run = Path(train(cfg, run_dir=tmp_path / "runs" / "control")["run_dir"])
    ticket = next(r for r in run_folders(tmp_path / "runs") if r != run)
    parsed = parse_granularity(granularity)
    groups = groups_of(LeNet300100(1, 28, 10), (1, 28, 28))
    for round_index in (1, 2):
        drawn = torch.load(run / f"round_{round_index:02d}" / "mask.pt")
        found = torch.load(ticket / f"round_{round_index:02d}" / "mask.pt")
        assert any(not torch.equal(drawn[n], found[n]) for n in found)
        if parsed.kind == "n:m":
            for n in found:
                per_group = [m.reshape(m.shape[0], -1, 4).sum(-1) for m in (drawn[n], found[n])]
                assert torch.equal(*per_group)
        else:
            assert sum(int(alive_channels(g, found).sum()) for g in groups) == 400 // 2**round_index  # global
            for g in groups:
                a, b = alive_channels(g, drawn), alive_channels(g, found)
                assert a.sum() == b.sum() and a.any()
                for s in g.outputs + g.inputs:  # whole channels: a drawn mask is a channel mask too
                    assert not drawn[s.name].index_select(s.dim, s.index[~a[s.channel]]).any()
        if control == "random_prune" and round_index == 2:  # removes survivors of the previous control mask
            before = torch.load(run / "round_01" / "mask.pt")
            assert all(not (drawn[n] & ~before[n]).any() for n in drawn)


def test_the_granularity_key_at_its_default_leaves_run_ids_unchanged(make_cfg) -> None:
    from lth.config.identity import identity, run_id

    default = make_cfg()
    assert "granularity" not in identity(default)["prune"] and "channel_criterion" not in identity(default)["prune"]
    assert run_id(make_cfg("prune.channel_criterion=l2")) == run_id(default)  # only channel ranks channels
    assert run_id(make_cfg("prune.granularity=channel")) != run_id(default)
    assert run_id(make_cfg("prune.granularity=channel", "prune.channel_criterion=l2")) != run_id(
        make_cfg("prune.granularity=channel")
    )


def test_a_channel_run_from_a_weight_mask_keeps_its_pruned_weights_pruned(make_cfg, tmp_path: Path) -> None:
    """Round 1 removes channels of a round 0 taken from a weight mask: what that mask pruned stays pruned."""
    weight = Path(train(make_cfg("prune.rounds=1"), run_dir=tmp_path / "weight")["run_dir"])
    cfg = make_cfg("prune.granularity=channel", f"prune.mask_from={weight / 'round_01' / 'mask.pt'}")
    cfg.prune.rounds = 1
    run = Path(train(cfg, run_dir=tmp_path / "run")["run_dir"])
    start, pruned = torch.load(run / "round_00" / "mask.pt"), torch.load(run / "round_01" / "mask.pt")
    assert not all(bool(m.all()) for m in start.values())  # round 0 holds the weight mask
    assert all(bool((pruned[n] <= start[n]).all()) for n in start)
    assert sum(int(m.sum()) for m in pruned.values()) < sum(int(m.sum()) for m in start.values())
