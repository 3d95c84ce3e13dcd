"""Faults and bad input: resume after a kill, determinism, divergence, corrupt files, a full disk, a typo."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lth.core.errors import ConfigError
from lth.run.loop import RunError
from lth.state.artifacts import read_rounds, write_rounds
from tests.conftest import FAST, REPO, run_folders, run_main, subprocess_env, train, typed

SLOW_ROUNDS = ["train.steps=120it", "train.eval_every=10it", "train.checkpoint_every=20it", "prune.rounds=3"]


def masks(run_dir: Path) -> list[dict[str, torch.Tensor]]:
    return [torch.load(p) for p in sorted(run_dir.glob("round_*/mask.pt"))]


def comparable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]


@pytest.mark.slow
def test_a_run_killed_mid_round_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    """A real SIGKILL of ``python train.py``; the reference, the refusal and the resumed run in this process."""
    args = [*FAST, *SLOW_ROUNDS, "paths.output_dir=out"]
    (tmp_path / "ref").mkdir()
    reference = run_main(*args, "train.share_dense=false", cwd=tmp_path / "ref")
    assert reference.returncode == 0, reference.stderr
    (ref_dir,) = run_folders(tmp_path / "ref" / "out" / "runs")

    (tmp_path / "killed").mkdir()
    process = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args, "train.share_dense=false"],
        cwd=tmp_path / "killed",
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        found = list((tmp_path / "killed" / "out" / "runs").glob("*/round_02/last.ckpt"))
        if found:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    (run_dir,) = [p.parent.parent for p in (tmp_path / "killed" / "out" / "runs").glob("*/round_02/mask.pt")]
    assert not (run_dir / "summary.json").exists()
    assert len(read_rounds(run_dir / "rounds.csv")) == 2  # rounds 0 and 1 finished; round 2 was interrupted

    again = run_main(*args, "train.share_dense=false", cwd=tmp_path / "killed")
    assert again.returncode == 2 and "resume=true" in again.stderr
    resumed = run_main(*args, "train.share_dense=false", "resume=true", cwd=tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr
    assert comparable(read_rounds(run_dir / "rounds.csv")) == comparable(read_rounds(ref_dir / "rounds.csv"))
    for a, b in zip(masks(run_dir), masks(ref_dir), strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_an_interrupted_first_round_resumes_from_its_checkpoint(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("prune.rounds=0", "train.share_dense=false")
    first = train(cfg, run_dir=tmp_path / "run")["rounds"]
    (tmp_path / "run" / "summary.json").unlink()  # as if killed after the round's last checkpoint
    (tmp_path / "run" / "rounds.csv").unlink()
    resumed = train(make_cfg("prune.rounds=0", "train.share_dense=false", "resume=true"), run_dir=tmp_path / "run")
    assert comparable(resumed["rounds"]) == comparable(first)


def test_the_same_seed_gives_the_same_run_and_another_seed_another(make_cfg, tmp_path: Path) -> None:
    a = train(make_cfg("train.share_dense=false"), run_dir=tmp_path / "a")
    b = train(make_cfg("train.share_dense=false"), run_dir=tmp_path / "b")
    c = train(make_cfg("train.share_dense=false", "seed=1"), run_dir=tmp_path / "c")
    assert comparable(a["rounds"]) == comparable(b["rounds"])
    for x, y in zip(masks(tmp_path / "a"), masks(tmp_path / "b"), strict=True):
        assert all(torch.equal(x[k], y[k]) for k in x)
    assert comparable(a["rounds"]) != comparable(c["rounds"])
    assert not torch.equal(
        masks(tmp_path / "a")[1]["model.layers.0.weight"], masks(tmp_path / "c")[1]["model.layers.0.weight"]
    )


def test_sweep_jobs_share_one_dense_round(make_cfg, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    first = train(make_cfg("prune.rate=0.1"), run_dir=out / "a")
    second = train(make_cfg("prune.rate=0.3"), run_dir=out / "b")
    assert first["rounds"][0] == second["rounds"][0]
    ra, rb = torch.load(out / "a" / "rewind.pt"), torch.load(out / "b" / "rewind.pt")
    assert all(torch.equal(ra[k], rb[k]) for k in ra)
    assert len(list((out / "dense").iterdir())) == 2  # the store and its lock
    assert not (out / "b" / "logs" / "round_00").exists()  # round 0 of b was not trained again
    unshared = train(make_cfg("prune.rate=0.3", "train.share_dense=false"), run_dir=tmp_path / "c")
    assert comparable(unshared["rounds"]) == comparable(second["rounds"])


def test_a_diverging_round_stops_with_one_line_and_keeps_earlier_rounds(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("optim=sgd", "optim.optimizer.lr=1e6", "prune.rounds=1")
    with pytest.raises(RunError, match=r"^round 0: (val|train)_loss is (nan|inf)") as error:
        train(cfg, run_dir=tmp_path / "run")
    assert "\n" not in str(error.value)


def test_train_py_reports_divergence_in_one_line_and_keeps_the_run(tmp_path: Path) -> None:
    result = run_main(*FAST, "optim=sgd", "optim.optimizer.lr=1e6", "paths.output_dir=out", cwd=tmp_path)
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: round 0: ") and "Traceback" not in result.stderr
    assert list((tmp_path / "out" / "runs").glob("*/round_00/mask.pt"))  # what was written stays


@pytest.mark.parametrize(
    ("damage", "rewind", "round_2"),
    [
        ("cut short", "init", "started"),
        ("another model's", "10it", "started"),
        ("cut short", "init", "not started"),
        ("cut short", "init", "checkpointed"),
    ],
    ids=["cut-short", "another-model-rewind-10it", "round-2-not-started", "round-2-checkpointed"],
)
def test_a_bad_checkpoint_of_a_finished_round_keeps_every_finished_round(
    make_cfg, tmp_path: Path, capsys: pytest.CaptureFixture, damage: str, rewind: str, round_2: str
) -> None:
    """Rounds 0-1 finished, round 2 started (its mask written, no checkpoint yet) and round 1's last.ckpt lost: under
    a weight rewind round 2 restarts from rewind.pt and its mask (not started yet: round 1 trains again from its
    own; checkpointed: round 2 continues from its checkpoint), and the run ends as the uninterrupted one."""
    cfg = ("prune.rounds=2", f"prune.rewind={rewind}", "train.share_dense=false")
    full = train(make_cfg(*cfg), run_dir=tmp_path / "run")
    (tmp_path / "run" / "summary.json").unlink()
    write_rounds(tmp_path / "run" / "rounds.csv", full["rounds"][:2])
    ckpt, later = tmp_path / "run" / "round_01" / "last.ckpt", tmp_path / "run" / "round_02" / "last.ckpt"
    if damage == "cut short":
        ckpt.write_bytes(later.read_bytes()[:1000])
    else:
        train(make_cfg("prune.rounds=0", "model.hidden=[50]"), run_dir=tmp_path / "other")
        ckpt.write_bytes((tmp_path / "other" / "round_00" / "last.ckpt").read_bytes())
    if round_2 != "checkpointed":
        later.unlink()
    if round_2 == "not started":
        (tmp_path / "run" / "round_02" / "mask.pt").unlink()
    capsys.readouterr()
    resumed = train(make_cfg(*cfg, "resume=true"), run_dir=tmp_path / "run")
    assert comparable(resumed["rounds"]) == comparable(full["rounds"])
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("resume:")]
    if round_2 == "checkpointed":
        assert line == f"resume: round 2 continues from its checkpoint at iteration 30 ({later})"
        return
    again, kept = ("2", "rounds 0-1 are kept") if round_2 == "started" else ("1", "round 0 is kept")
    assert re.fullmatch(
        rf"resume: \S+round_01/last\.ckpt: (unreadable checkpoint|does not fit this model).*; round {again} restarts "
        rf"from the rewind point \(rewind\.pt\) under its mask \(\S+round_0{again}/mask\.pt\); {kept}",
        line,
    ), line


def test_an_interrupted_round_whose_checkpoint_is_another_models_restarts_from_its_start(
    make_cfg, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Round 1 interrupted, its last.ckpt replaced by another model's: one line, and round 1 trains from the end
    of round 0 to the uninterrupted run's numbers (the failed load leaves nothing of the other model behind)."""
    cfg = ("prune.rounds=1", "train.share_dense=false")
    full = train(make_cfg(*cfg), run_dir=tmp_path / "run")
    train(make_cfg("prune.rounds=0", "train.share_dense=false"), run_dir=tmp_path / "round0")
    train(make_cfg("prune.rounds=0", "model.hidden=[50]"), run_dir=tmp_path / "other")
    (tmp_path / "run" / "summary.json").unlink()
    write_rounds(tmp_path / "run" / "rounds.csv", full["rounds"][:1])  # round 1 interrupted, round 0's end kept
    for run, name in (("round0", "round_00"), ("other", "round_01")):
        source = tmp_path / run / "round_00" / "last.ckpt"
        (tmp_path / "run" / name / "last.ckpt").write_bytes(source.read_bytes())
    capsys.readouterr()
    resumed = train(make_cfg(*cfg, "resume=true"), run_dir=tmp_path / "run")
    assert comparable(resumed["rounds"]) == comparable(full["rounds"])
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("resume:")]
    assert re.fullmatch(
        r"resume: \S+round_01/last\.ckpt: does not fit this model: .*; round 1 restarts from its start \(the end of "
        r"round 0\)",
        line,
    ), line


def test_a_bad_checkpoint_that_alone_holds_the_trained_weights_is_one_line_saying_what_keeps_the_rounds(
    make_cfg, tmp_path: Path
) -> None:
    cfg = ("prune.rounds=2", "prune.rewind=lr", "train.share_dense=false")
    train(make_cfg(*cfg), run_dir=tmp_path / "run")
    (tmp_path / "run" / "summary.json").unlink()
    rows = read_rounds(tmp_path / "run" / "rounds.csv")
    write_rounds(tmp_path / "run" / "rounds.csv", rows[:2])  # round 2 unfinished: it needs round 1's end
    (tmp_path / "run" / "round_02" / "last.ckpt").unlink()
    (tmp_path / "run" / "round_01" / "last.ckpt").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(
        ConfigError, match=r"round_01/last\.ckpt: unreadable checkpoint .*put back .* to keep rounds 0-1"
    ):
        train(make_cfg(*cfg, "resume=true"), run_dir=tmp_path / "run")
    assert len(read_rounds(tmp_path / "run" / "rounds.csv")) == 2  # nothing lost


def test_a_full_disk_leaves_the_previous_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "rounds.csv"
    write_rounds(path, [{"round": 0, "weights_remaining": 1.0}])
    before = path.read_text()

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space"):
        write_rounds(path, [{"round": 0, "weights_remaining": 1.0}, {"round": 1, "weights_remaining": 0.8}])
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["rounds.csv"]  # no temporary file left behind


def test_resume_with_nothing_to_resume_or_another_config(make_cfg, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^resume: nothing to resume in"):
        train(make_cfg("resume=true"), run_dir=tmp_path / "empty")
    assert not (tmp_path / "empty").exists()
    train(make_cfg("prune.rounds=1", "train.share_dense=false"), run_dir=tmp_path / "run")
    (tmp_path / "run" / "summary.json").unlink()
    with pytest.raises(
        ConfigError, match=r"^resume: .*config.yaml was made by another config \(they differ at prune.rate\)"
    ):
        train(make_cfg("prune.rounds=1", "prune.rate=0.5", "resume=true"), run_dir=tmp_path / "run")


def test_a_checkpoint_of_another_model_is_refused_naming_the_file(make_cfg, tmp_path: Path) -> None:
    from lth.run.build import build_model, build_ticket
    from lth.state.store import restore

    train(make_cfg("prune.rounds=0", "train.share_dense=false"), run_dir=tmp_path / "run")
    other = make_cfg("model.hidden=[50]")
    module = torch.nn.Module()
    module.model = build_model(typed(other))
    with pytest.raises(ConfigError, match=r"round_00/last\.ckpt: does not fit this model: ") as error:
        restore(module, [build_ticket(typed(other))], tmp_path / "run" / "round_00" / "last.ckpt")
    assert "\n" not in str(error.value)
