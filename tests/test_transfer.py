"""Pre-trained and transferred tickets: ``model.weights`` is the rewind point, ``prune.mask_from`` carries a mask to
another dataset (MNIST -> Fashion-MNIST, here as generated files in their formats), a transfer sweep against
random_prune masks of the same sparsity with one ``-m`` command, and the identity holds the mask's content."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from lth.config.identity import run_id
from lth.core.errors import ConfigError
from lth.run.build import build_model
from lth.state.artifacts import read_rounds
from tests.conftest import run_folders, run_main, train, typed
from tests.test_data import make_idx_dataset

IDX = ["dataset.val_size=40", "dataset.source.download=false", "train.steps=12it", "train.eval_every=4it"]


@pytest.fixture
def idx_root(tmp_path: Path) -> Path:
    """MNIST and Fashion-MNIST in their file formats (random images), under one data folder."""
    for name in ("MNIST", "FashionMNIST"):
        make_idx_dataset(tmp_path / "data", name, n_train=160, n_test=40)
    return tmp_path / "data"


def test_pretrained_weights_are_the_rewind_point_and_reinit_draws_from_the_models_initialiser(make_cfg, tmp_path):
    donor = build_model(typed(make_cfg("seed=7")))
    torch.save(donor.state_dict(), tmp_path / "pretrained.pt")
    cfg = make_cfg(f"model.weights={tmp_path / 'pretrained.pt'}", "prune.rounds=1")
    ticket = Path(train(cfg, run_dir=tmp_path / "ticket")["run_dir"])
    rewind = torch.load(ticket / "rewind.pt")
    for name, value in donor.state_dict().items():
        assert torch.equal(rewind[f"model.{name}"], value), name  # rounds rewind to the pre-trained weights
    with open_dict(cfg):
        cfg.prune.control = "reinit"
    control = Path(train(cfg, run_dir=tmp_path / "reinit")["run_dir"])
    fresh = build_model(typed(cfg), init_stream="reinit").state_dict()
    drawn = torch.load(control / "rewind.pt")
    for name, value in fresh.items():
        assert torch.equal(drawn[f"model.{name}"], value), name
    assert not torch.equal(drawn["model.layers.0.weight"], rewind["model.layers.0.weight"])


def test_pretrained_weights_with_another_head_keep_its_initialisation(make_cfg, tmp_path):
    torch.save(build_model(typed(make_cfg("seed=7", "dataset.num_classes=7"))).state_dict(), tmp_path / "seven.pt")
    cfg = make_cfg(f"model.weights={tmp_path / 'seven.pt'}")
    model, fresh, donor = (
        build_model(typed(cfg)),
        build_model(typed(make_cfg())).state_dict(),
        torch.load(tmp_path / "seven.pt"),
    )
    assert torch.equal(model.state_dict()["out.weight"], fresh["out.weight"])  # the new head: 10 classes, not 7
    assert torch.equal(model.state_dict()["layers.0.weight"], donor["layers.0.weight"])
    torch.save({**donor, "layers.0.weight": donor["layers.0.weight"][:5]}, tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match=r"model.weights: .*layers.0.weight is missing or of another shape"):
        build_model(typed(make_cfg(f"model.weights={tmp_path / 'bad.pt'}")))


def test_a_ticket_found_on_mnist_trains_on_fashion_mnist(make_cfg, idx_root, tmp_path):
    source = make_cfg("dataset=mnist", f"paths.data_dir={idx_root}", *IDX)
    found = Path(train(source, run_dir=tmp_path / "mnist")["run_dir"])
    target = make_cfg(
        "dataset=fashion_mnist", f"paths.data_dir={idx_root}", *IDX, f"prune.mask_from={found}@2", "prune.rounds=1"
    )
    moved = Path(train(target, run_dir=tmp_path / "fashion")["run_dir"])
    ticket, start = torch.load(found / "round_02" / "mask.pt"), torch.load(moved / "round_00" / "mask.pt")
    assert ticket.keys() == start.keys() and all(torch.equal(ticket[n], start[n]) for n in ticket)
    rows = read_rounds(moved / "rounds.csv")
    assert rows[0]["weights_remaining"] == pytest.approx(0.64, abs=1e-3)  # round 0 trains the transferred ticket
    assert rows[1]["weights_remaining"] == pytest.approx(0.64 * 0.8, abs=1e-3)  # and later rounds prune on from it
    # the identity holds the mask's content: a copy of the source run elsewhere names the same experiment
    shutil.copytree(found, tmp_path / "copy")
    copied = make_cfg(
        "dataset=fashion_mnist",
        f"paths.data_dir={idx_root}",
        *IDX,
        f"prune.mask_from={tmp_path / 'copy'}@2",
        "prune.rounds=1",
    )
    other_round = make_cfg(
        "dataset=fashion_mnist", f"paths.data_dir={idx_root}", *IDX, f"prune.mask_from={found}@1", "prune.rounds=1"
    )
    assert run_id(copied) == run_id(target) != run_id(other_round)


def test_tensors_that_do_not_fit_are_named_and_refused_or_start_dense(make_cfg, tmp_path):
    found = Path(train(make_cfg("prune.rounds=1"), run_dir=tmp_path / "ten")["run_dir"])
    seven = ("dataset.num_classes=7", f"prune.mask_from={found}", "prune.rounds=0")
    with pytest.raises(ConfigError, match=r"model.out.weight \(7, 100\) \(mask \(10, 100\)\).*mask_unmatched=dense"):
        train(make_cfg(*seven), run_dir=tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    moved = Path(train(make_cfg(*seven, "prune.mask_unmatched=dense"), run_dir=tmp_path / "head_dense")["run_dir"])
    start, ticket = torch.load(moved / "round_00" / "mask.pt"), torch.load(found / "round_01" / "mask.pt")
    assert bool(start["model.out.weight"].all())  # the new output layer starts dense
    assert torch.equal(start["model.layers.0.weight"], ticket["model.layers.0.weight"])


@pytest.mark.slow
def test_a_transfer_sweep_against_random_masks_of_the_same_sparsity_is_one_command(idx_root, tmp_path):
    out = tmp_path / "out"
    common = ["logger=none", f"paths.data_dir={idx_root}", *IDX, f"paths.output_dir={out}"]
    made = run_main("dataset=mnist", "prune.rounds=2", *common, cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-2000:]
    (found,) = run_folders(out / "runs")
    sweep = run_main(
        "-m", "dataset=fashion_mnist", "prune.rounds=0", f"prune.mask_from={found}@1,{found}@2",
        "prune.control=null,random_prune", *common, f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path,
    )  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    jobs = run_folders(tmp_path / "sweep")
    assert len(jobs) == 4
    starts = {}
    for job in jobs:
        cfg_text = (job / "config.yaml").read_text()
        control = "random_prune" if "control: random_prune" in cfg_text else "ticket"
        at = 1 if f"{found}@1" in cfg_text else 2
        starts[(at, control)] = torch.load(job / "round_00" / "mask.pt")
    for at in (1, 2):
        ticket, random = starts[(at, "ticket")], starts[(at, "random_prune")]
        source = torch.load(found / f"round_{at:02d}" / "mask.pt")
        for name in ticket:
            assert torch.equal(ticket[name], source[name])
            assert int(random[name].sum()) == int(ticket[name].sum())  # same sparsity, layer by layer
        assert not torch.equal(random["model.layers.0.weight"], ticket["model.layers.0.weight"])
    assert (tmp_path / "sweep" / "rounds.csv").is_file()


def test_a_transferred_masks_rows_count_the_rounds_that_found_it(tmp_path):
    out = tmp_path / "out"
    common = ["dataset=synthetic", "train.steps=20it", "train.eval_every=10it", "logger=none"]
    common.append(f"paths.output_dir={out}")
    made = run_main(*common, "prune.rounds=2", cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-2000:]
    (found,) = run_folders(out / "runs")
    source = read_rounds(found / "rounds.csv")
    moved = run_main(*common, "prune.rounds=1", f"prune.mask_from={found}@2", "prune.rate=0.5", cwd=tmp_path)
    assert moved.returncode == 0, moved.stderr[-2000:]
    (run,) = [folder for folder in run_folders(out / "runs") if folder != found]
    rows = read_rounds(run / "rounds.csv")
    # round 2's mask was pruned from round 1's weights: rounds 0 and 1 of the source (40 iterations) found it
    assert [row["train_iterations"] for row in rows] == [40 + 20, 40 + 20 + 20]
    on_this_mask = source[2]["train_flops"] - source[1]["train_flops"]  # the source's round 2: 20 iterations on it
    assert rows[0]["train_flops"] == source[1]["train_flops"] + on_this_mask
    assert rows[0]["train_flops_dense"] == source[1]["train_flops_dense"] + source[0]["train_flops_dense"]
