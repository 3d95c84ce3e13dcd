"""Stop points as a property: a run stopped at any iteration, by SIGTERM or by SIGKILL, and continued with the
command its stop gives (``resume=true``) ends with the uninterrupted run's ``rounds.csv``, masks, early-stop weights
and step logs, bit for bit.

One small run is stopped at every iteration of a window (3 to 6) that holds an epoch's last batch (3), a batch
before an evaluation and a checkpoint (4; a SIGKILL at 5 resumes from that checkpoint) and both at once (6): 3
batches an epoch, an evaluation every 2 iterations (at 4 mid-epoch), a checkpoint every 4, a validation split of 200
images evaluated in batches of 64. Each stop is a fork of this
process (Lightning imported once) that sends itself the signal while it trains the window's iteration; the
uninterrupted reference and the resumed runs run in this process, through ``train.py``'s entry point.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import time
from pathlib import Path

import pytest
import torch

from lth.state.artifacts import read_rounds
from tests.conftest import run_folders, run_main

RUN = [
    "dataset=synthetic",
    "train.steps=12it",
    "train.batch_size=334",  # 1000 training images: 3 batches an epoch
    "train.eval_every=2it",
    "train.eval_batch_size=64",  # 200 validation images: 4 evaluation batches
    "train.checkpoint_every=4it",
    "prune.rounds=1",
    "train.share_dense=false",
    "logger=csv",
    "hardware.threads=1",
    "paths.output_dir=out",
]
WINDOW = range(3, 7)  # iterations of round 0 at which the signal arrives
STOP_LINE = r"stopped by SIGTERM in round 0 at iteration {k}; continue with: (python train\.py .* resume=true)"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run of RUN, uninterrupted."""
    cwd = tmp_path_factory.mktemp("reference")
    result = run_main(*RUN, cwd=cwd)
    assert result.returncode == 0, result.stderr
    (run_dir,) = run_folders(cwd / "out" / "runs")
    return run_dir


def stopped_at(iteration: int, signum: int, cwd: Path) -> tuple[int, str]:
    """Run RUN in a fork of this process that sends itself ``signum`` while it trains ``iteration`` of round 0;
    its exit status (``-signum`` when the signal ended it) and what it wrote to stderr."""
    from lth.run.signals import SafeStop

    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:

            def signal_at(self: SafeStop, trainer: object, *args: object) -> None:
                if self.round_index == 0 and self.start + trainer.global_step + 1 == iteration:
                    os.kill(os.getpid(), signum)

            SafeStop.on_train_batch_start = signal_at  # SafeStop is in every round's fit
            result = run_main(*RUN, cwd=cwd)
            (cwd / "stopped.err").write_text(result.stderr)
            code = result.returncode
        finally:
            os._exit(code)
    deadline = time.monotonic() + 120
    while (waited := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the run to stop at iteration {iteration} did not end within 120 s")
        time.sleep(0.02)
    status = waited[1]
    err = cwd / "stopped.err"
    return os.waitstatus_to_exitcode(status), err.read_text() if err.is_file() else ""


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """``rounds.csv`` (but train_seconds), every round's mask and early-stop weights, and the step logs."""

    def rows(folder: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "train_seconds"} for r in read_rounds(folder / "rounds.csv")]

    assert rows(run_dir) == rows(reference)
    for name in ("round_00/mask.pt", "round_01/mask.pt", "round_00/early_stop.pt", "round_01/early_stop.pt"):
        a, b = torch.load(run_dir / name), torch.load(reference / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    for name in ("round_00", "round_01"):
        log = Path("logs", name, "metrics.csv")
        assert (run_dir / log).read_text() == (reference / log).read_text(), log


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
@pytest.mark.parametrize("iteration", WINDOW, ids=[f"iteration{k}" for k in WINDOW])
def test_a_run_stopped_at_any_iteration_resumes_to_the_uninterrupted_run(
    reference: Path, tmp_path: Path, iteration: int, signum: int
) -> None:
    code, err = stopped_at(iteration, signum, tmp_path)
    if signum == signal.SIGTERM:
        assert code == 143, err
        (line,) = err.strip().splitlines()
        match = re.fullmatch(STOP_LINE.format(k=iteration), line)
        assert match, line
        command = shlex.split(match.group(1))[2:]
    else:
        assert code == -signal.SIGKILL, err
        command = [*RUN, "resume=true"]
    resumed = run_main(*command, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    (run_dir,) = run_folders(tmp_path / "out" / "runs")
    assert_same_run(run_dir, reference)
