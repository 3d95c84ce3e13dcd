"""A run's identity covers what changes its numbers and nothing else, and round 0's covers what its files hold.

Two commands that differ in something that changes the trained weights (which tensors are prunable, the number
of processes, the precision, the CPU threads) never share a run folder, a round 0 or a resume; two that differ
only in how a run is carried out (where data would be downloaded from) do.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lth.config.identity import identity, run_id
from lth.core.errors import ConfigError
from lth.state.artifacts import read_rounds
from tests.conftest import FAST, run_folders, run_main


def test_runs_that_prune_different_layers_do_not_share_round_0(tmp_path: Path) -> None:
    sweep = ["-m", "prune.exclude=[],[model.out]", "hydra.sweep.dir=sweep"]
    result = run_main(*sweep, *FAST, "prune.rounds=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = run_folders(tmp_path / "sweep")
    assert len(runs) == 2 and all(len(read_rounds(r / "rounds.csv")) == 2 for r in runs)
    assert len([p for p in (tmp_path / "sweep" / "dense").iterdir() if not p.name.startswith(".")]) == 2
    excluded = next(r for r in runs if OmegaConf.load(r / "config.yaml").prune.exclude)
    assert "model.out.weight" not in torch.load(excluded / "round_00" / "mask.pt")


def test_precision_gets_its_own_run_folder_through_train_py(tmp_path: Path) -> None:
    base = [*FAST, "prune.rounds=0", "paths.output_dir=out"]
    first = run_main(*base, cwd=tmp_path)
    second = run_main(*base, "hardware.precision=bf16-mixed", cwd=tmp_path)
    assert first.returncode == 0 and second.returncode == 0, second.stderr[-2000:]
    assert "already finished" not in second.stdout
    runs = run_folders(tmp_path / "out" / "runs")
    assert len(runs) == 2
    bf16 = next(r for r in runs if OmegaConf.load(r / "config.yaml").hardware.precision == "bf16-mixed")
    assert read_rounds(bf16 / "rounds.csv")[0] != read_rounds(next(r for r in runs if r != bf16) / "rounds.csv")[0]


def test_the_identity_covers_processes_and_precision_and_not_how_data_is_fetched(make_cfg) -> None:
    default = run_id(make_cfg())
    assert run_id(make_cfg("hardware=cpu", "hardware.threads=1", "hardware.rank_report=true")) == default
    assert run_id(make_cfg("hardware=ddp_cpu")) != default  # two processes: twice the effective batch
    assert identity(make_cfg("hardware=ddp_cpu"))["hardware"] == {"world_size": 2, "precision": "32-true"}
    assert run_id(make_cfg("hardware=ddp_cpu", "hardware.devices=4")) != run_id(make_cfg("hardware=ddp_cpu"))
    assert run_id(make_cfg("hardware.precision=bf16-mixed")) != default
    assert run_id(make_cfg("hardware.precision=bf16")) == run_id(make_cfg("hardware.precision=bf16-mixed"))
    assert run_id(make_cfg("hardware.precision=32")) == default  # Lightning's alias of 32-true
    mnist = run_id(make_cfg("dataset=mnist"))
    assert run_id(make_cfg("dataset=mnist", "dataset.source.download=false")) == mnist


@pytest.mark.slow
def test_a_run_is_not_continued_nor_round_0_shared_on_another_thread_count(make_cfg, tmp_path: Path) -> None:
    from tests.conftest import train

    train(make_cfg("hardware.threads=1", "prune.rounds=1"), run_dir=tmp_path / "runs" / "a")
    machine = json.loads((tmp_path / "runs" / "a" / "machine.json").read_text())
    assert machine == {"accelerator": "cpu", "threads": 1}
    (tmp_path / "runs" / "a" / "summary.json").unlink()  # as if interrupted after round 1
    with pytest.raises(ConfigError, match=r"^hardware\.threads: .*threads=1.*hardware\.threads=1"):
        train(make_cfg("hardware.threads=2", "prune.rounds=1", "resume=true"), run_dir=tmp_path / "runs" / "a")
    train(make_cfg("hardware.threads=1", "prune.rounds=1", "resume=true"), run_dir=tmp_path / "runs" / "a")
    # another thread count trains round 0 again instead of taking the one trained with 1 thread
    train(make_cfg("hardware.threads=2", "prune.rounds=1", "prune.rate=0.3"), run_dir=tmp_path / "runs" / "b")
    stores = [p for p in (tmp_path / "runs" / "dense").iterdir() if not p.name.startswith(".")]
    assert len(stores) == 2
    a, b = (tmp_path / "runs" / x / "round_00" / "mask.pt" for x in "ab")
    assert not a.samefile(b)


def test_fine_tuning_under_a_cosine_schedule_is_refused_in_one_line(tmp_path: Path) -> None:
    result = run_main(*FAST, "prune.rewind=none", "optim.schedule.name=cosine", "paths.output_dir=out", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: prune.rewind: none fine-tunes") and "optim.schedule.name" in result.stderr
    assert not (tmp_path / "out" / "runs").exists() or not any((tmp_path / "out" / "runs").iterdir())


def test_summary_records_where_the_numbers_come_from(make_cfg, tmp_path: Path) -> None:
    from tests.conftest import train

    train(make_cfg("prune.rounds=0", "hardware.threads=1"), run_dir=tmp_path / "run")
    provenance = json.loads((tmp_path / "run" / "summary.json").read_text())["provenance"]
    assert provenance["machine"] == {"accelerator": "cpu", "threads": 1}
    assert {"torch", "pytorch-lightning", "python"} <= set(provenance["versions"])
    assert provenance["processor"] and len(provenance["commit"] or "x" * 40) >= 40
