"""Scaling out: DDP ranks that agree on every mask and split the data, sweeps that share round 0 under any launcher."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lth.core.errors import ConfigError
from lth.lightning.tracking import fingerprint
from lth.run.build import build_data
from lth.state.artifacts import read_rounds
from tests.conftest import REPO, run_folders, run_main, run_train, train, typed

SMALL = ["dataset=synthetic", "train.steps=20it", "train.eval_every=10it", "prune.rounds=1", "logger=none"]


def rank_reports(run_dir: Path) -> dict[int, list[dict]]:
    return {
        int(path.stem.split("_")[1]): [json.loads(line) for line in path.read_text().splitlines()]
        for path in sorted((run_dir / "ranks").glob("rank_*.jsonl"))
    }


@pytest.mark.slow
def test_two_ddp_ranks_hold_one_mask_train_on_their_own_shards_and_write_once(tmp_path: Path) -> None:
    result = run_train(
        *SMALL,
        "hardware=ddp_cpu",
        "hardware.rank_report=true",
        "train.steps=2ep",  # an epoch is one pass over a rank's shard: 500 samples / batch 60 = 9 iterations
        "train.eval_every=9it",
        "logger=csv",
        "paths.output_dir=out",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (run_dir,) = run_folders(tmp_path / "out" / "runs")
    # round 0 is kept for the runs under paths.output_dir (single runs and sweeps alike): one store and its lock
    assert len(list((tmp_path / "out" / "dense").iterdir())) == 1 + 1
    rows = read_rounds(run_dir / "rounds.csv")
    assert [r["round"] for r in rows] == [0, 1] and [r["weights_remaining"] for r in rows] == [1.0, 0.8]
    assert all(r["early_stop_iteration"] in (9, 18) for r in rows)

    reports = rank_reports(run_dir)
    assert sorted(reports) == [0, 1]
    for k, (r0, r1) in enumerate(zip(reports[0], reports[1], strict=True)):
        assert r0["round"] == r1["round"] == k and r0["world_size"] == 2
        saved = fingerprint(torch.load(run_dir / f"round_{k:02d}" / "mask.pt"))
        assert r0["mask"] == r1["mask"] == saved  # both ranks trained with the mask that was written
        assert r0["rewind"] == r1["rewind"] and r0["weights"] == r1["weights"]
        assert r0["iterations"] == r1["iterations"] == 18 and r0["batches_per_epoch"] == 9
        assert not set(r0["samples"]) & set(r1["samples"])  # their own shards...
        assert len(set(r0["samples"]) | set(r1["samples"])) == 1000  # ...covering the training split
    assert reports[0][0]["rewind"] == fingerprint(torch.load(run_dir / "rewind.pt"))

    log = (run_dir / "train.log").read_text()
    assert log.count("round 0/1 |") == 1 and log.count("round 1/1 |") == 1
    assert result.stdout.count("results:") == 1
    with open(run_dir / "logs" / "round_00" / "metrics.csv") as f:
        assert sum(1 for r in csv.DictReader(f) if r["val_loss"]) == 2  # evaluations at 9 and 18, logged once


def test_an_epoch_under_ddp_is_a_pass_over_one_ranks_shard(make_cfg) -> None:
    for loader, expected in (("memory", [17, 9, 6]), ("torchvision", [17, 9, 6])):
        data = build_data(typed(make_cfg(f"dataset.loader={loader}")))
        assert [data.batches_per_epoch(world) for world in (1, 2, 3)] == expected  # 1000 training images, batch 60


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["hardware.strategy=ddp_spawn"], "hardware.strategy"),
        (["hardware.strategy=fsdp"], "hardware.strategy"),
        ([], "hardware"),  # in-process: no script for Lightning to run again for rank 1
    ],
    ids=["ddp_spawn", "fsdp", "in-process"],
)
def test_multi_process_setups_that_cannot_work_are_refused(make_cfg, tmp_path: Path, overrides, key) -> None:
    with pytest.raises(ConfigError) as error:
        train(make_cfg("hardware=ddp_cpu", *overrides), run_dir=tmp_path / "run")
    assert error.value.key == key and "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()


def test_ddp_in_a_multirun_of_the_basic_launcher_is_refused_in_one_line(tmp_path: Path) -> None:
    result = run_main("-m", *SMALL, "hardware=ddp_cpu", "prune.rate=0.1,0.2", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: hardware: 2 DDP processes per job cannot run under the BasicLauncher")
    assert run_folders(tmp_path / "sweep") == []


def jobs_that_trained_round_0(jobs: list[Path]) -> list[Path]:
    """The jobs with step metrics of round 0 (logger=csv): the others took round 0 from the shared store."""
    return [job for job in jobs if (job / "logs" / "round_00").is_dir()]


@pytest.mark.parametrize("launcher", ["basic", pytest.param("joblib", marks=pytest.mark.slow)])
def test_a_sweep_trains_round_0_once_per_seed_and_tabulates_all_jobs(tmp_path: Path, launcher: str) -> None:
    """The basic launcher runs the jobs in this process (``run_main``); joblib's worker processes are the point of
    its case, run as typed (``python train.py`` in a subprocess)."""
    options, run = [], run_main
    if launcher == "joblib":
        pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
        options, run = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], run_train
    # seeds outermost: under joblib the two jobs of one seed run side by side and race for its round 0
    sweep_args = ["seed=0,1", "prune.rate=0.1,0.2", "hydra.sweep.dir=sweep"]
    result = run("-m", *SMALL, *options, "logger=csv", *sweep_args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    sweep = tmp_path / "sweep"
    jobs = run_folders(sweep)
    assert len(jobs) == 4
    assert len([p for p in (sweep / "dense").iterdir() if p.is_dir()]) == 2  # one round 0 per seed...
    assert len(jobs_that_trained_round_0(jobs)) == 2  # ...trained by one job of each seed, taken by the other
    round0: dict[int, list[dict]] = {}
    for job in jobs:
        round0.setdefault(OmegaConf.load(job / "config.yaml").seed, []).append(read_rounds(job / "rounds.csv")[0])
    assert sorted(round0) == [0, 1] and all(a == b for a, b in round0.values())

    with open(sweep / "rounds.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0])[:3] == ["job", "seed", "prune.rate"] and len(table) == 8
    assert sorted({(r["seed"], r["prune.rate"]) for r in table}) == [
        ("0", "0.1"),
        ("0", "0.2"),
        ("1", "0.1"),
        ("1", "0.2"),
    ]
    assert "| prune.rate=0.1 (n=2) | prune.rate=0.2 (n=2) |" in (sweep / "report.md").read_text()


@pytest.mark.slow
def test_a_submitit_sweep_of_ddp_jobs_one_task_per_device(tmp_path: Path) -> None:
    """The SLURM path, run locally: submitit starts both ranks of each job (Lightning relaunches nothing), the two
    jobs run at once and share round 0 (rank 0 of each holds the store's lock and tells its rank 1)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    launcher = ["hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2"]
    ddp = ["hardware=ddp_cpu", "hardware.rank_report=true"]
    sweep_args = ["prune.rate=0.1,0.2", "hydra.sweep.dir=sweep", "logger=csv"]
    result = run_train("-m", *SMALL, *launcher, *ddp, *sweep_args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    jobs = run_folders(tmp_path / "sweep")
    assert len(jobs) == 2 and len(jobs_that_trained_round_0(jobs)) == 1
    assert read_rounds(jobs[0] / "rounds.csv")[0] == read_rounds(jobs[1] / "rounds.csv")[0]
    for job in jobs:
        reports = rank_reports(job)
        saved = [fingerprint(torch.load(job / f"round_{k:02d}" / "mask.pt")) for k in (0, 1)]
        trained = [r["round"] for r in reports[0]]  # round 1 only, in the job that took round 0
        assert [r["mask"] for r in reports[0]] == [r["mask"] for r in reports[1]] == saved[trained[0] :]
        assert not set(reports[0][-1]["samples"]) & set(reports[1][-1]["samples"])
    with open(tmp_path / "sweep" / "rounds.csv") as f:
        assert len(list(csv.DictReader(f))) == 4


def test_the_slurm_launcher_starts_one_task_per_device_on_each_node() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    overrides = ["hydra/launcher=slurm", "hardware=ddp", "hardware.devices=4", "hardware.num_nodes=2"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        launcher = compose("config", overrides=overrides, return_hydra_config=True).hydra.launcher
    assert launcher._target_ == "hydra_plugins.lth_submitit.SlurmLauncher"  # GPUs derived at launch (test_slurm.py)
    assert (launcher.tasks_per_node, launcher.nodes) == (4, 2)
