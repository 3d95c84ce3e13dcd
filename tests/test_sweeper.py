"""A sweep's jobs composed as few times as they need (``hydra/sweeper=checked``, lth/tools/sweeper.py): the
command-line check composes job 0 and takes the others' plain values into copies of its config; Hydra's sweeper
does not compose a checked job again; the basic and stacked launchers compose a job from the one before it when
they differ in plain values. Every job's config and Hydra's record of it stay what Hydra composes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from omegaconf import OmegaConf

from lth.config import command_line
from lth.config.command_line import ComposedInTurn
from tests.conftest import FAST, REPO, run_main


def spy_compositions(monkeypatch) -> list[list[str]]:  # noqa: ANN001
    """The overrides of every job Hydra's own config loader composes from now on."""
    composed: list[list[str]] = []
    load = ConfigLoaderImpl.load_sweep_config
    monkeypatch.setattr(
        ConfigLoaderImpl, "load_sweep_config", lambda self, m, o: composed.append(list(o)) or load(self, m, o)
    )
    return composed


def test_a_checked_sweep_of_values_is_composed_once_after_the_check(tmp_path: Path, monkeypatch) -> None:
    """4 jobs of plain values (a quoted value among the others): Hydra's loader composes job 0 once (not each job
    to validate it, then each to launch it); jobs of a swept group are each composed to launch them."""
    composed = spy_compositions(monkeypatch)
    swept = ["seed=0,1", "prune.rate=0.2,0.5", "paths.output_dir='out put'"]
    result = run_main("-m", *FAST, "prune.rounds=1", "train.steps=10it", *swept, "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(composed) == 1 and len(list((tmp_path / "sweep").glob("*/rounds.csv"))) == 4
    composed.clear()
    groups = ["prune.rounds=1", "train.steps=10it", "model=lenet300,lenet5", "hydra.sweep.dir=groups"]
    result = run_main("-m", *FAST, *groups, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(composed) == 2


@pytest.mark.parametrize("launcher", ["basic", "stacked"])
def test_each_job_of_a_sweep_composed_in_turn_records_what_hydra_composes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, launcher: str
) -> None:
    """The same sweep composed in turn and by Hydra's loader for every job, under the basic launcher and the
    stacked one: each job's config, overrides and Hydra record (.hydra/) are the same files."""
    swept = ["-m", f"hydra/launcher={launcher}", *FAST, "prune.rounds=1", "train.steps=10it", "seed=0,1"]
    swept.append("data_seed=null,3")
    composed = spy_compositions(monkeypatch)
    assert run_main(*swept, "hydra.sweep.dir=sweepA", cwd=tmp_path).returncode == 0
    assert len(composed) == 1  # job 0; the others from the job before them
    monkeypatch.setattr(ComposedInTurn, "_from_last", lambda self, overrides: None)
    composed.clear()
    assert run_main(*swept, "hydra.sweep.dir=sweepB", cwd=tmp_path).returncode == 0
    assert len(composed) == 4
    jobs = sorted((tmp_path / "sweepA").glob("*/.hydra"))
    assert len(jobs) == 4
    for record in jobs:
        twin = tmp_path / "sweepB" / record.parent.name / ".hydra"
        for name in ("config.yaml", "overrides.yaml"):
            assert (record / name).read_text() == (twin / name).read_text(), name
        assert (record / "hydra.yaml").read_text() == (twin / "hydra.yaml").read_text().replace("sweepB", "sweepA")


def test_a_sweep_of_values_is_composed_once_and_each_job_checked_as_hydra_composes_it(monkeypatch) -> None:
    """Jobs that differ in plain values take job 0's composed config with their values (a null, a quoted string and
    a number among them): the config Hydra composes for each. A swept group is composed job by job."""
    composed, checked = [], []
    compose_job, check = command_line.compose_job, command_line.check_job
    monkeypatch.setattr(command_line, "compose_job", lambda o, n="config": composed.append(o) or compose_job(o, n))

    def checking(overrides, multirun, cfg, *args, **kwargs) -> None:  # noqa: ANN001
        checked.append((overrides, cfg))
        check(overrides, multirun, cfg, *args, **kwargs)

    monkeypatch.setattr(command_line, "check_job", checking)
    swept = ["seed=0,1", "data_seed=null,3", "prune.rate=0.2,0.5", "paths.output_dir='o u t',out"]
    command_line.check_command_line(["-m", *FAST, *swept])
    assert len(composed) == 1 and len(checked) == 16
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3", job_name="train"):
        for overrides, cfg in checked:
            full = compose("config", overrides=overrides, return_hydra_config=True)
            assert OmegaConf.to_container(cfg, resolve=False) | {"hydra": None} == OmegaConf.to_container(
                full, resolve=False
            ) | {"hydra": None}
            for node in ("launcher", "sweep", "run"):  # what the checks read of Hydra's node (sweep.dir: unresolved)
                assert OmegaConf.to_container(cfg.hydra[node]) == OmegaConf.to_container(full.hydra[node])
    composed.clear()
    command_line.check_command_line(["-m", *FAST, "model=lenet300,lenet5", "seed=0,1"])
    assert len(composed) == 4


def test_a_sweep_the_command_line_did_not_check_is_still_composed_before_any_job_trains(tmp_path: Path) -> None:
    """``--config-dir``: the command line leaves the jobs to Hydra, whose sweeper composes each before the first
    trains; a missing option in the last job means no job trains."""
    conf = ["--config-dir", str(REPO / "conf")]
    result = run_main("-m", *conf, *FAST, "model=lenet300,lenet301", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert result.returncode == 1 and "lenet301" in result.stderr
    assert not list((tmp_path / "sweep").glob("*/config.yaml"))
