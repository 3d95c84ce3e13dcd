"""``train.py`` end to end, as a user runs it: rounds.csv, the run folder, sweeps, and bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from lth.config.identity import run_id
from lth.core.errors import ConfigError
from lth.state.artifacts import read_rounds
from tests.conftest import FAST, run_folders, run_main, train, typed


def test_train_py_runs_three_rounds_and_writes_every_round(tmp_path: Path) -> None:
    result = run_main(*FAST, "prune.rounds=3", "prune.rate=0.2", "paths.output_dir=out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = run_folders(tmp_path / "out" / "runs")
    rows = read_rounds(run_dir / "rounds.csv")
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    assert [r["weights_remaining"] for r in rows] == pytest.approx([1.0, 0.8, 0.64, 0.512], abs=1e-4)
    with open(run_dir / "rounds.csv") as f:
        assert next(csv.reader(f)) == [
            "round",
            "weights_remaining",
            "early_stop_iteration",
            "val_loss",
            "val_acc",
            "test_acc",
            "final_test_acc",
            "train_seconds",
            "train_iterations",
            "train_flops",
            "train_flops_dense",
        ]
    # IMP: each row cost its round and every round before it
    assert [r["train_iterations"] for r in rows] == [30, 60, 90, 120]
    for before, row in zip(rows[:-1], rows[1:], strict=True):  # pruned rounds cost less than dense ones
        assert before["train_flops"] < row["train_flops"] < row["train_flops_dense"]
    for r in rows:
        assert r["early_stop_iteration"] in (10, 20, 30)
        assert 0.0 <= r["test_acc"] <= 1.0 and r["val_loss"] > 0
    for k in range(4):
        mask = torch.load(run_dir / f"round_{k:02d}" / "mask.pt")
        kept = sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())
        assert kept == pytest.approx(rows[k]["weights_remaining"])
        assert (run_dir / f"round_{k:02d}" / "early_stop.pt").is_file()
    assert (run_dir / "rewind.pt").is_file() and (run_dir / "config.yaml").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds"][-1]["test_acc"] == rows[-1]["test_acc"]
    assert "weights remaining" in result.stdout and "51.2%" in result.stdout


def test_the_rewind_point_is_the_initial_network(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("prune.rounds=1")
    summary = train(cfg, run_dir=tmp_path / "run")
    from lth.run.build import build_model

    initial = build_model(typed(cfg)).state_dict()
    rewind = torch.load(Path(summary["run_dir"]) / "rewind.pt")
    assert all(torch.equal(rewind[f"model.{k}"], v) for k, v in initial.items())
    # round 1 trained from the rewound, masked initial weights: its early-stop weights differ from round 0's
    w0 = torch.load(tmp_path / "run" / "round_00" / "early_stop.pt")["model.layers.0.weight"]
    w1 = torch.load(tmp_path / "run" / "round_01" / "early_stop.pt")["model.layers.0.weight"]
    mask1 = torch.load(tmp_path / "run" / "round_01" / "mask.pt")["model.layers.0.weight"]
    assert torch.count_nonzero(w1[~mask1]) == 0 and torch.count_nonzero(w0[~mask1]) > 0


def test_test_accuracy_is_reported_at_the_lowest_validation_loss(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("prune.rounds=0", "train.steps=80it", "logger=csv")
    row = train(cfg, run_dir=tmp_path / "run")["rounds"][0]
    logged = [r for r in csv.DictReader(open(tmp_path / "run" / "logs" / "round_00" / "metrics.csv")) if r["val_loss"]]
    assert len(logged) == 8
    best = min(logged, key=lambda r: float(r["val_loss"]))
    assert row["early_stop_iteration"] == int(best["step"])  # logged on the iteration axis
    assert row["val_loss"] == pytest.approx(float(best["val_loss"]))
    # the reported test accuracy is that of the early-stop weights, evaluated afresh here
    from lth.run.build import build_data, build_model

    data = build_data(typed(cfg))
    data.setup()
    model = build_model(typed(cfg))
    state = torch.load(tmp_path / "run" / "round_00" / "early_stop.pt")
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    x, y = data.splits["test"]
    with torch.no_grad():
        assert row["test_acc"] == pytest.approx((model(x).argmax(1) == y).float().mean().item(), abs=1e-6)


def test_layer_rates_and_one_shot_through_the_config(make_cfg, tmp_path: Path) -> None:
    rows = train(make_cfg("prune.scope=layer", "+prune.layer_rates={model.out: 0.1}"), run_dir=tmp_path / "a")["rounds"]
    mask = torch.load(tmp_path / "a" / "round_02" / "mask.pt")
    assert mask["model.out.weight"].sum() == round(round(1000 * 0.9) * 0.9)
    assert mask["model.layers.0.weight"].sum() == round(235200 * 0.64)
    assert rows[-1]["round"] == 2
    one_shot = train(make_cfg("prune=oneshot", "prune.rounds=1"), run_dir=tmp_path / "b")["rounds"]
    assert [r["weights_remaining"] for r in one_shot] == pytest.approx([1.0, 0.1], abs=1e-6)


def test_the_same_command_finds_the_same_folder(make_cfg) -> None:
    assert run_id(make_cfg()) == run_id(make_cfg("logger=csv", "train.eval_batch_size=7", "hardware=cpu"))
    assert run_id(make_cfg()) != run_id(make_cfg("seed=1"))
    assert run_id(make_cfg()) != run_id(make_cfg("prune.rate=0.3"))


def test_default_identity_is_pinned(make_cfg) -> None:
    """Adding a key whose default is null must never rename existing results."""
    assert run_id(make_cfg(fast=False)) == "lenet300_mnist-" + PINNED_DEFAULT_HASH


PINNED_DEFAULT_HASH = "898909da50"  # was 1656fec1fc until dataset.source.download left the identity (issue 12)


def test_multirun_sweep_gives_one_folder_per_job(tmp_path: Path) -> None:
    result = run_main(
        "-m",
        *FAST,
        "prune.rounds=1",
        "prune.rate=0.1,0.3",
        "paths.output_dir=out",
        "hydra.sweep.dir=out/sweep",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    jobs = run_folders(tmp_path / "out" / "sweep")
    assert len(jobs) == 2
    remaining = sorted(read_rounds(j / "rounds.csv")[1]["weights_remaining"] for j in jobs)
    assert remaining == pytest.approx([0.7, 0.9], abs=1e-4)


BAD = [
    ("prune.rate=1.5", "prune.rate"),
    ("prune.rate=0", "prune.rate"),
    ("prune.rounds=-1", "prune.rounds"),
    ("prune.target_sparsity=1.0", "prune.target_sparsity"),
    ("prune.scope=diagonal", "prune.scope"),
    ("train.steps=500", "train.steps"),
    ("train.eval_every=5x", "train.eval_every"),
    ("train.eval_every=100it", "train.eval_every"),
    ("prune.rewind=later", "prune.rewind"),
    ("prune.rewind=40it", "prune.rewind"),
    ("+prune.layer_rates={nope: 0.1}", "prune.layer_rates"),
    ("prune.include=[nope]", "prune.include"),
    ("optim.optimizer.lr=-1", "optim.optimizer.lr"),
    ("optim.schedule.name=wavy", "optim.schedule.name"),
    ("train.batch_size=0", "train.batch_size"),
    ("dataset=mnist", "paths.data_dir"),
    ("seed=-1", "seed"),
    ("data_seed=abc", "data_seed"),
    ("dataset.val_size=0", "dataset.val_size"),
    ("train.eval_batch_size=0", "train.eval_batch_size"),
    ("optim.schedule.milestones=[abc]", "optim.schedule.milestones"),
    ("optim.schedule.warmup=5", "optim.schedule.warmup"),
    ("prune.control=nope", "prune.control"),
    ("train.checkpoint_every=15it", "train.checkpoint_every"),
    ("resume=true", "resume"),
    ("model=vgg19", "model"),
    ("prune.extra=[nope]", "prune.extra"),
    ("dataset.loader=disk", "dataset.loader"),
    ("prune.target_sparsity=0.9,+prune.layer_rates={model.out: 0.1}", "prune.target_sparsity"),
    ("prune.rounds=1.5", "prune.rounds"),
]


@pytest.mark.parametrize(("override", "key"), BAD)
def test_bad_config_is_one_error_naming_the_key(make_cfg, tmp_path: Path, override: str, key: str) -> None:
    extra = ["dataset.source.download=false", f"paths.data_dir={tmp_path / 'empty'}"] if key == "paths.data_dir" else []
    with pytest.raises(ConfigError) as error:
        train(make_cfg(*override.split(","), *extra), run_dir=tmp_path / "run")
    assert error.value.key == key and "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("prune.rate=2", "error: prune.rate: got 2; allowed: a number in (0, 1)"),
        ("paths.data_dir=nowhere", "error: paths.data_dir: MNIST not found in nowhere/MNIST/raw"),
    ],
)
def test_train_py_bad_input_exits_nonzero_with_one_line_and_no_folder(tmp_path: Path, override: str, expected: str):
    args = ["dataset=mnist", "dataset.source.download=false"] if "data_dir" in override else []
    result = run_main(*FAST, *args, override, "paths.output_dir=out", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(expected)
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not list((tmp_path / "out" / "runs").glob("*")) if (tmp_path / "out" / "runs").exists() else True


def test_unknown_config_group_option_lists_the_options_without_traceback(tmp_path: Path) -> None:
    result = run_main("model=nope", cwd=tmp_path)
    assert result.returncode != 0
    assert "lenet300" in result.stderr and "Traceback" not in result.stderr
