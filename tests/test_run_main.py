"""``run_main`` (tests/conftest.py), the in-process ``python train.py`` most tests use: it answers as the subprocess
does (exit code, stdout, stderr), and leaves this process as it found it, so that Hydra runs again and again."""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import warnings
from pathlib import Path

import pytest
import torch

from tests.conftest import CAUGHT_SIGNALS, FAST, run_folders, run_main, run_train

CASES = {
    "trains": [*FAST, "prune.rounds=1", "paths.output_dir=out"],
    "a sweep": ["-m", *FAST, "prune.rounds=1", "prune.rate=0.1,0.3", "paths.output_dir=out", "hydra.sweep.dir=sweep"],
    "a bad value": [*FAST, "prune.rate=2", "paths.output_dir=out"],
    "an unknown option": ["model=nope"],
    "refused once built": [*FAST, "model=vgg19", "paths.output_dir=out"],
    "diverges": [*FAST, "optim=sgd", "optim.optimizer.lr=1e6", "paths.output_dir=out"],
}


def process_state() -> dict:
    """What a run of train.py may change in the process that runs it."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in ("lth", "hydra", "lightning.pytorch"))]
    return {
        "cwd": os.getcwd(),
        "argv": sys.argv[:],
        "environ": dict(os.environ),
        "signals": {name: signal.getsignal(getattr(signal, name)) for name in CAUGHT_SIGNALS},
        "loggers": [(x.name, x.level, x.propagate, x.disabled, list(x.handlers)) for x in loggers],
        "hydra": (GlobalHydra.instance().is_initialized(), HydraConfig.initialized()),
        "threads": torch.get_num_threads(),
        "warnings": (list(warnings.filters), warnings.showwarning),
        "stdout": (sys.stdout, sys.stderr),
    }


def comparable(text: str) -> list[str]:
    """Output lines without what differs between two runs: timestamps, seconds, this test's folders."""
    text = re.sub(r"\[\d{4}-\d\d-\d\d [\d:,]+\]", "[time]", text)
    text = re.sub(r"\| [\d.]+s$|\s+[\d.]+$", " <s>", text, flags=re.M)
    return re.sub(r"/\S+/(in|sub)process/", "<folder>/", text).splitlines()


def test_runs_in_a_row_leave_the_process_as_they_found_it(tmp_path: Path) -> None:
    before = process_state()
    for name, args in [*CASES.items(), ("trains", CASES["trains"])]:  # the same run twice: the second is found
        (tmp_path / name).mkdir(exist_ok=True)
        result = run_main(*args, cwd=tmp_path / name)
        assert result.returncode == {"a bad value": 2, "an unknown option": 2, "refused once built": 2}.get(
            name, 3 if name == "diverges" else 0
        ), result.stderr
        assert process_state() == before, name
    assert "already finished" in result.stdout
    (run,) = run_folders(tmp_path / "trains" / "out" / "runs")
    assert "round 1/1 |" in (run / "train.log").read_text()  # Hydra's log file, closed again
    assert len(run_folders(tmp_path / "a sweep" / "sweep")) == 2


def test_an_uncaught_exception_is_exit_code_1_with_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import train

    def broken(argv: list[str]) -> list[str]:
        raise RuntimeError("broken")

    monkeypatch.setattr(train, "check_command_line", broken)
    result = run_main(*FAST, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("Traceback") and result.stderr.strip().endswith("RuntimeError: broken")


@pytest.mark.slow
# a sweep trains as "trains" does; the bad command lines: test_bad_input.py runs rows of them as typed
@pytest.mark.parametrize("case", ["a sweep", "refused once built", "diverges"])
def test_run_main_answers_as_python_train_py_does(tmp_path: Path, case: str) -> None:
    (tmp_path / "inprocess").mkdir()
    (tmp_path / "subprocess").mkdir()
    here = run_main(*CASES[case], cwd=tmp_path / "inprocess")
    there = run_train(*CASES[case], cwd=tmp_path / "subprocess")
    assert here.returncode == there.returncode
    assert comparable(here.stdout) == comparable(there.stdout)
    assert comparable(here.stderr) == comparable(there.stderr)
