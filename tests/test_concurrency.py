"""Signals and concurrent processes: SIGTERM/SIGINT stop a real ``python train.py`` at a safe point with one line and
``resume=true`` finishes the same run; one process per run folder (a second is refused, a control run waits for its
ticket); a sweep run again reuses the finished jobs, and its files follow the umask; a requeued SLURM job and a sweep
continued with ``resume=true`` resume what started and start the rest."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lth.core.errors import ConfigError
from lth.state.artifacts import read_rounds
from tests.conftest import FAST, REPO, run_folders, run_main, subprocess_env, train, typed

# 3 rounds of 150 iterations, a checkpoint every 20: long enough to be stopped mid-round, short enough to rerun
RUN = [*FAST, "train.steps=150it", "train.checkpoint_every=20it", "hardware.threads=1"]
STOP_LINE = r"stopped by {name} in round 1 at iteration (\d+); continue with: (python train\.py .* resume=true)"


def comparable(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "train_seconds"} for row in read_rounds(run_dir / "rounds.csv")]


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """Same rounds (all columns but train_seconds) and the same masks as the uninterrupted ``reference``."""
    assert comparable(run_dir) == comparable(reference)
    for name in ("round_00", "round_01", "round_02"):
        a, b = torch.load(run_dir / name / "mask.pt"), torch.load(reference / name / "mask.pt")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run of RUN, uninterrupted (in this process, one torch thread as in the subprocesses)."""
    from hydra import compose, initialize_config_dir

    from lth.config.identity import register_resolvers

    register_resolvers()
    out = tmp_path_factory.mktemp("reference")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*RUN, f"paths.output_dir={out}"])
    threads = torch.get_num_threads()
    try:
        return Path(train(cfg)["run_dir"])
    finally:
        torch.set_num_threads(threads)


def start(*args: str, cwd: Path, name: str) -> subprocess.Popen:
    """``python train.py *args`` from ``cwd``, its output in ``cwd/<name>.out`` and ``cwd/<name>.err``."""
    with open(cwd / f"{name}.out", "w") as out, open(cwd / f"{name}.err", "w") as err:
        return subprocess.Popen(
            [sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=subprocess_env(), stdout=out, stderr=err
        )


def wait_for(condition: Callable[[], object], what: str, timeout: float = 120) -> object:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def owner_pid(runs: Path) -> int | None:
    """The pid in the owner file of a run folder's lock under ``runs`` (the process that holds it)."""
    import json

    for path in runs.glob("*/.lock.owner"):
        try:
            return int(json.loads(path.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None
    return None


def rerun(line: str, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Run the command that a stop's line gives (here in-process, from ``cwd``: what ``python train.py`` runs)."""
    from hydra import compose, initialize_config_dir

    command = shlex.split(line)
    assert command[:2] == ["python", "train.py"]
    monkeypatch.chdir(cwd)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=command[2:])
    threads = torch.get_num_threads()
    try:
        return train(cfg)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_sigterm_stops_mid_round_in_one_line_and_a_second_process_is_refused(
    reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    args = [*RUN, "paths.output_dir=out"]
    first, second = start(*args, cwd=tmp_path, name="first"), start(*args, cwd=tmp_path, name="second")
    holder = wait_for(lambda: owner_pid(tmp_path / "out" / "runs"), "a process to hold the run folder")
    winner, loser = (first, second) if holder == first.pid else (second, first)
    assert holder == winner.pid
    winner.send_signal(signal.SIGSTOP)  # it holds the folder while the other one comes (however slowly)
    try:
        assert loser.wait(timeout=120) == 75
    finally:
        winner.send_signal(signal.SIGCONT)
    loser_name = "first" if loser is first else "second"
    (line,) = (tmp_path / f"{loser_name}.err").read_text().strip().splitlines()
    assert re.fullmatch(rf"error: \S+/out/runs/\S+ is in use by pid {winner.pid} on \S+ \(since [^)]+\); .*", line)

    run_dir = Path(wait_for(lambda: list((tmp_path / "out" / "runs").glob("*/round_01/last.ckpt")), "round 1")[0])
    winner.send_signal(signal.SIGTERM)
    assert winner.wait(timeout=120) == 143
    winner_name = "first" if winner is first else "second"
    (line,) = (tmp_path / f"{winner_name}.err").read_text().strip().splitlines()
    match = re.fullmatch(STOP_LINE.format(name="SIGTERM"), line)
    assert match, line
    run_dir = run_dir.parent.parent
    assert len(read_rounds(run_dir / "rounds.csv")) == 1 and (run_dir / "round_01" / "last.ckpt").is_file()
    assert not (run_dir / "summary.json").exists()

    capsys.readouterr()
    assert rerun(match.group(2), tmp_path, monkeypatch)["run_dir"] == str(run_dir.relative_to(tmp_path))
    assert f"round 1 continues from its checkpoint at iteration {match.group(1)}" in capsys.readouterr().out
    assert_same_run(run_dir, reference)


@pytest.mark.slow
def test_sigint_stops_a_ticket_that_a_control_run_waits_for(reference: Path, tmp_path: Path) -> None:
    """Ctrl+C stops the ticket (130, one line); the control run started meanwhile waited for it, then continues
    the ticket from its checkpoint (as resume=true does) and trains the control."""
    args = [*RUN, "paths.output_dir=out"]
    ticket = start(*args, cwd=tmp_path, name="ticket")
    wait_for(lambda: owner_pid(tmp_path / "out" / "runs") == ticket.pid, "the ticket to hold its folder")
    ticket.send_signal(signal.SIGSTOP)
    try:
        control = start(*args, "prune.control=reinit", cwd=tmp_path, name="control")
        wait_for(lambda: "waiting for the ticket" in (tmp_path / "control.out").read_text(), "the control to wait")
    finally:
        ticket.send_signal(signal.SIGCONT)
    waiting = [line for line in (tmp_path / "control.out").read_text().splitlines() if "waiting for" in line]
    assert len(waiting) == 1 and f"in use by pid {ticket.pid} on " in waiting[0]

    wait_for(lambda: list((tmp_path / "out" / "runs").glob("*/round_01/last.ckpt")), "round 1 of the ticket")
    ticket.send_signal(signal.SIGINT)
    assert ticket.wait(timeout=120) == 130
    (line,) = (tmp_path / "ticket.err").read_text().strip().splitlines()
    assert re.fullmatch(STOP_LINE.format(name="SIGINT"), line), line

    assert control.wait(timeout=240) == 0, (tmp_path / "control.err").read_text()[-2000:]
    assert "round 1 continues from its checkpoint" in (tmp_path / "control.out").read_text()
    runs = run_folders(tmp_path / "out" / "runs")
    (ticket_dir,) = [r for r in runs if OmegaConf.load(r / "config.yaml").prune.control is None]
    assert len(runs) == 2 and all((r / "summary.json").is_file() for r in runs)
    assert_same_run(ticket_dir, reference)


def test_a_sweep_run_again_trains_nothing_and_reports_the_same_and_files_follow_the_umask(tmp_path: Path) -> None:
    command = ["-m", *FAST, "prune.rate=0.1,0.2", "paths.output_dir=out", "logger=csv", "train.checkpoint_every=10it"]
    umask = os.umask(0o022)  # the runs (in this process) create files under it
    try:
        first = run_main(*command, cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        time.sleep(1.1)  # a sweep folder is named by the second it starts
        second = run_main(*command, cwd=tmp_path)
        assert second.returncode == 0, second.stderr
    finally:
        os.umask(umask)
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"last.ckpt", "mask.pt", "rounds.csv", "summary.json", "row.json", "report.md"}
    assert any(p.suffix == ".lock" for p in files) and any(p.parent.name == ".hydra" for p in files)
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in files}
    assert {path: mode for path, mode in modes.items() if mode != oct(0o644)} == {}
    assert all(p.stat().st_mode & 0o777 == 0o755 for p in (tmp_path / "out").rglob("*") if p.is_dir())

    old, new = sorted((tmp_path / "out" / "multirun").iterdir())
    assert len(run_folders(old)) == len(run_folders(new)) == 2
    assert "round 0/2 |" in first.stdout and "round 0/2 |" not in second.stdout  # nothing trained
    assert second.stdout.count("already finished in ") == 2
    for job in run_folders(new):
        assert os.path.samefile(job / "rounds.csv", old / job.name / "rounds.csv")
        assert os.path.samefile(job / "logs" / "round_01" / "metrics.csv", old / job.name / "logs/round_01/metrics.csv")
    for name in ("rounds.csv", "report.md"):
        assert (new / name).read_text() == (old / name).read_text()
    assert not (old / "dense").exists() and len(list((tmp_path / "out" / "dense").glob("*/row.json"))) == 1


def test_a_requeued_slurm_job_resumes_by_itself(make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_cfg("prune.rounds=0", "train.share_dense=false")
    full = train(cfg, run_dir=tmp_path / "run")["rounds"]
    (tmp_path / "run" / "summary.json").unlink()  # as if stopped at the end of the round, before its row
    (tmp_path / "run" / "rounds.csv").unlink()
    with pytest.raises(ConfigError, match="resume=true"):
        train(cfg, run_dir=tmp_path / "run")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    resumed = train(cfg, run_dir=tmp_path / "run")["rounds"]
    assert [r["test_acc"] for r in resumed] == [r["test_acc"] for r in full]


def test_resume_over_a_sweep_starts_the_jobs_not_started(
    make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``hydra.sweep.dir=<sweep> resume=true``: a job of the sweep whose folder is empty starts from the beginning."""
    from dataclasses import replace

    from lth.config.run import Job
    from lth.run.loop import train as run

    cfg = make_cfg("prune.rounds=0", "resume=true")
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(cfg, run_dir=tmp_path / "single")
    job = replace(typed(cfg), job=Job(multirun=True))  # a job of a sweep (hydra.sweep.dir=<sweep> resume=true)
    assert len(run(job, run_dir=tmp_path / "job")["rounds"]) == 1


def test_a_holder_that_has_not_yet_written_its_owner_file_is_still_named(tmp_path: Path) -> None:
    """The lock is taken a moment before the owner file is written: the refused process waits that moment out."""
    import json
    import threading

    from lth.state.locks import holder, owner_file

    lock = tmp_path / ".lock"
    owner = {"pid": 4242, "host": "node7", "since": "2026-01-31 12:00:00"}
    late = threading.Timer(0.3, lambda: owner_file(lock).write_text(json.dumps(owner)))
    late.start()
    try:
        assert holder(lock) == "pid 4242 on node7 (since 2026-01-31 12:00:00)"
    finally:
        late.join()
    owner_file(lock).unlink()
    assert holder(lock, patience=0.1) == "another process"
