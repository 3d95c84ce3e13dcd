"""No dead ends: a run killed or failing at each point of a round has a way forward that works and says what it did.

Each case fails a run at one point (a real SIGKILL through ``python train.py`` for one; the precise points are
simulated in-process, as a kill or a full disk at that write would leave the folder), then checks the way forward:
the same command again refuses in one line that says what ``resume=true`` will do, and ``resume=true`` does it
(one line), ends with the ``rounds.csv`` (every column but ``train_seconds``) and masks of an uninterrupted run,
and leaves no temporary file. A round resumed from its checkpoint keeps the step log of its interrupted part and
counts its seconds.
"""

from __future__ import annotations

import csv
import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import lth.run.rounds
import lth.state.artifacts
from lth.config.identity import register_resolvers
from lth.core.errors import ConfigError
from lth.lightning.tracking import DivergedError, EarlyStopPoint, EvaluationCadence
from lth.run.loop import RunError
from lth.state.artifacts import read_rounds
from lth.state.checkpoints import RoundCheckpoint
from tests.conftest import FAST, REPO, run_main, subprocess_env, train

CASE = [*FAST, "prune.rounds=1", "train.checkpoint_every=10it", "logger=csv"]  # 30 it a round, checkpoints at 10, 20


class Killed(BaseException):
    """Stands for a SIGKILL at a chosen point (raised past every ``except Exception``)."""


def config(out: Path, *overrides: str) -> DictConfig:
    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=[*CASE, f"paths.output_dir={out / 'outputs'}", *overrides])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    train(config(run_dir.parent), run_dir=run_dir)
    return run_dir


def comparable(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in read_rounds(run_dir / "rounds.csv")]


def step_log(run_dir: Path, round_index: int) -> list[dict]:
    with open(run_dir / "logs" / f"round_{round_index:02d}" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.name.startswith(".") and p.name.endswith(".tmp")]


def assert_like(run_dir: Path, reference: Path) -> None:
    """The same rounds and masks as the uninterrupted run, and no temporary file left."""
    assert comparable(run_dir) == comparable(reference)
    for name in ("round_00/mask.pt", "round_01/mask.pt"):
        a, b = torch.load(run_dir / name), torch.load(reference / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert temporaries(run_dir) == []


def way_forward(run_dir: Path, capsys: pytest.CaptureFixture, plan: str) -> list[str]:
    """The same command again (refused, saying ``plan``), then with resume=true; the lines it said."""
    with pytest.raises(ConfigError, match=rf"holds an unfinished run; pass resume=true to {plan}, or delete") as no:
        train(config(run_dir.parent), run_dir=run_dir)
    assert "\n" not in str(no.value)
    capsys.readouterr()
    train(config(run_dir.parent, "resume=true"), run_dir=run_dir)
    out = capsys.readouterr().out.splitlines()
    return [line for line in out if line.startswith(("resume:", "round 0 kept"))]


# -- the faults: each patches the run to fail at one point --------------------------------------------------------


def in_round_0(path: str | Path) -> bool:
    return Path(path).parent.name == "round_00"


def killed_writing_the_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    write = lth.state.artifacts._atomic_write

    def killed(path: Path, data: Callable, binary: bool) -> None:
        if path.name == "mask.pt" and in_round_0(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            (path.parent / f".{path.name}.k1ll3d.tmp").write_bytes(b"PK\x03\x04 cut")  # what a SIGKILL leaves
            raise Killed
        write(path, data, binary)

    monkeypatch.setattr(lth.state.artifacts, "_atomic_write", killed)


def full_disk_writing_the_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    write = lth.state.artifacts._atomic_write

    def full(path: Path, data: Callable, binary: bool) -> None:
        if path.name == "mask.pt" and in_round_0(path):

            def half(f) -> None:
                f.write(b"PK\x03\x04 half")
                raise OSError(errno.ENOSPC, "No space left on device")

            data = half
        write(path, data, binary)

    monkeypatch.setattr(lth.state.artifacts, "_atomic_write", full)


def failing_checkpoint(number: int, error: BaseException) -> Callable[[pytest.MonkeyPatch], None]:
    """The ``number``-th checkpoint write of round 0 stops half-way with ``error`` (a SIGKILL leaves its temporary
    file: it is put back, as the clean-up that removed it does not run on a SIGKILL)."""

    def install(monkeypatch: pytest.MonkeyPatch) -> None:
        save, calls = pl.Trainer.save_checkpoint, []

        def failing(self, filepath, *args, **kwargs) -> None:
            if in_round_0(filepath):
                calls.append(filepath)
                if len(calls) == number:
                    Path(filepath).write_bytes(b"PK\x03\x04 half a checkpoint")
                    try:
                        raise error
                    finally:
                        if isinstance(error, Killed):
                            monkeypatch.setattr(Path, "unlink", lambda *a, **k: None)  # the clean-up never runs
            save(self, filepath, *args, **kwargs)

        monkeypatch.setattr(pl.Trainer, "save_checkpoint", failing)

    return install


def diverging(monkeypatch: pytest.MonkeyPatch) -> None:
    def nan(self, trainer, pl_module) -> None:
        raise DivergedError(f"val_loss is nan at iteration {self.start + trainer.global_step}")

    monkeypatch.setattr(EarlyStopPoint, "on_validation_end", nan)


def bad_run_only_value(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args, **kwargs) -> None:
        raise ConfigError("hardware.precision", "'bogus' is not a precision")  # as a check made too late would

    monkeypatch.setattr(lth.run.rounds, "build_trainer", refused)


RESTART, CONTINUE = "restart round 0 from its start", "continue round 0 from its checkpoint"
NO_SPACE = OSError(errno.ENOSPC, "No space left on device")
FAULTS = {
    # fault: (patch, what the failure raises, what the refusal says resume=true does, where round 0 resumes)
    "killed writing round_00/mask.pt": (killed_writing_the_mask, Killed, RESTART, None),
    "full disk writing round_00/mask.pt": (full_disk_writing_the_mask, OSError, RESTART, None),
    "bad run-only value after mask.pt": (bad_run_only_value, ConfigError, RESTART, None),
    "NaN in round 0": (diverging, RunError, RESTART, None),
    "killed writing the first checkpoint": (failing_checkpoint(1, Killed()), Killed, RESTART, None),
    "full disk writing the first checkpoint": (failing_checkpoint(1, NO_SPACE), OSError, RESTART, None),
    "killed writing the second checkpoint": (failing_checkpoint(2, Killed()), Killed, CONTINUE, 10),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_run_failing_in_round_0_resumes_to_the_uninterrupted_run(
    fault: str, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    install, raised, plan, iteration = FAULTS[fault]
    run_dir = tmp_path / "run"
    install(monkeypatch)
    with pytest.raises(raised) as failure:
        train(config(tmp_path), run_dir=run_dir)
    monkeypatch.undo()
    if raised is RunError:
        assert str(failure.value).endswith("; resume=true restarts round 0 from its start")
    assert (run_dir / "config.yaml").is_file() and not (run_dir / "rounds.csv").exists()

    lines = way_forward(run_dir, capsys, plan)
    if iteration is None:
        assert lines == [f"resume: no checkpoint of round 0 in {run_dir}; round 0 restarts from its start"]
    else:
        checkpoint = run_dir / "round_00" / "last.ckpt"
        assert lines == [f"resume: round 0 continues from its checkpoint at iteration {iteration} ({checkpoint})"]
    assert_like(run_dir, reference)


def test_a_round_killed_after_a_checkpoint_keeps_its_step_log_and_seconds(
    reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    save = RoundCheckpoint.on_validation_end

    def slow_then_killed(self, trainer, pl_module) -> None:
        if self.path.parent.name == "round_00" and trainer.global_step == 10:
            time.sleep(0.5)  # a first part that takes a while: its seconds must be counted
        save(self, trainer, pl_module)
        if self.path.parent.name == "round_00" and trainer.global_step == 20:
            raise Killed

    monkeypatch.setattr(RoundCheckpoint, "on_validation_end", slow_then_killed)
    with pytest.raises(Killed):
        train(config(tmp_path), run_dir=run_dir)
    monkeypatch.undo()
    before = torch.load(run_dir / "round_00" / "last.ckpt", weights_only=False)["callbacks"]["RoundClock"]["seconds"]
    assert before >= 0.5

    lines = way_forward(run_dir, capsys, "continue round 0 from its checkpoint")
    assert lines == [f"resume: round 0 continues from its checkpoint at iteration 20 ({run_dir}/round_00/last.ckpt)"]
    assert_like(run_dir, reference)
    rows = step_log(run_dir, 0)
    steps = [int(r["step"]) for r in rows]
    assert min(steps) < 20 <= max(steps)  # rows of both parts
    assert rows == step_log(reference, 0)  # each step once, as in the uninterrupted round
    assert read_rounds(run_dir / "rounds.csv")[0]["train_seconds"] >= before


@pytest.mark.parametrize("round_1_started", [False, True], ids=["before-round-1-mask", "round-1-started"])
def test_a_truncated_round_0_in_the_dense_store_is_named_and_trained_again(
    reference: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    round_1_started: bool,
) -> None:
    """Round 1 not started yet (its mask not written): round 0 is trained again and replaces the store's; started:
    round 1 needs nothing of round 0's end (prune.rewind=init), it restarts from rewind.pt under its mask."""
    train(config(tmp_path, "prune.rounds=0"), run_dir=tmp_path / "a")  # trains round 0 and keeps it for b
    run_dir = tmp_path / "b"

    def killed(*args, **kwargs) -> None:  # b takes round 0 from the store; killed as round 1 starts
        raise Killed

    monkeypatch.setattr(EvaluationCadence, "on_train_start", killed)
    with pytest.raises(Killed):
        train(config(tmp_path), run_dir=run_dir)
    monkeypatch.undo()
    assert not (run_dir / "logs" / "round_00").exists() and len(read_rounds(run_dir / "rounds.csv")) == 1
    if not round_1_started:  # as if killed before round 1 wrote its mask
        (run_dir / "round_01" / "mask.pt").unlink()
    (store,) = [p.parent for p in tmp_path.rglob("dense/*/row.json")]
    kept = store / "round_00" / "last.ckpt"
    assert os.path.samefile(kept, run_dir / "round_00" / "last.ckpt")  # b's round 0 is a hard link of the store's
    kept.write_bytes(kept.read_bytes()[:1000])  # cut short, in place: b's link with it

    lines = way_forward(run_dir, capsys, r"restart round 1 from its start \(the end of round 0\)")
    assert lines[0].startswith(f"resume: {kept}: unreadable checkpoint (")
    if round_1_started:
        mask = run_dir / "round_01" / "mask.pt"
        assert len(lines) == 1 and lines[0].endswith(
            f"; round 1 restarts from the rewind point (rewind.pt) under its mask ({mask}); round 0 is kept"
        )
        assert_like(run_dir, reference)
        return
    assert len(lines) == 2 and lines[0].endswith("; round 0 restarts from its start")
    assert lines[1].startswith(f"round 0 kept in {store} cannot be used ({kept}: unreadable checkpoint (")
    assert lines[1].endswith("); it is trained again here and replaces it")
    assert_like(run_dir, reference)
    assert torch.load(kept, weights_only=False)["global_step"] == 30  # the store holds round 0 again


@pytest.mark.slow
def test_a_sigkill_in_round_0_before_its_first_checkpoint(tmp_path: Path) -> None:
    """A real SIGKILL of ``python train.py``; the same command and ``resume=true`` after it in this process."""
    args = [*FAST, "prune.rounds=0", "train.steps=1000it", "train.eval_every=500it", "paths.output_dir=out"]
    process = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=tmp_path,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if list((tmp_path / "out" / "runs").glob("*/round_00/mask.pt")):
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    (run_dir,) = [p.parent.parent for p in (tmp_path / "out" / "runs").glob("*/round_00/mask.pt")]
    assert not (run_dir / "round_00" / "last.ckpt").exists() and not (run_dir / "rounds.csv").exists()

    again = run_main(*args, cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1] == (
        f"error: resume: {run_dir} holds an unfinished run; pass resume=true to restart round 0 from its start, "
        "or delete the folder"
    )
    resumed = run_main(*args, "resume=true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resume: no checkpoint of round 0 in {run_dir}; round 0 restarts from its start" in resumed.stdout
    assert len(read_rounds(run_dir / "rounds.csv")) == 1 and temporaries(run_dir) == []


def test_a_full_disk_is_one_line_through_train_py_and_resume_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = [*FAST, "paths.output_dir=out", "train.share_dense=false"]
    write = lth.state.artifacts.write_bytes

    def full(path: Path, data: bytes) -> None:
        if path.name == "mask.pt" and path.parent.name == "round_01":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        write(path, data)

    monkeypatch.setattr(lth.state.artifacts, "write_bytes", full)
    stopped = run_main(*args, cwd=tmp_path)
    monkeypatch.undo()
    assert stopped.returncode == 4, stopped.stderr[-2000:]
    (line,) = stopped.stderr.strip().splitlines()
    assert line.startswith("error: disk full writing ") and "round_01/mask.pt" in line and "resume=true" in line
    (run_dir,) = [p.parent for p in (tmp_path / "out" / "runs").glob("*/rounds.csv")]
    assert len(read_rounds(run_dir / "rounds.csv")) == 1 and not list(run_dir.rglob("*.tmp"))
    resumed = run_main(*args, "resume=true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert len(read_rounds(run_dir / "rounds.csv")) == 3
