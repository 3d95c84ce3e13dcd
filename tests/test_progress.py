"""A long run says how far it is (``train.progress``): a live line on a terminal, rewritten at most a few times a
second; off a terminal a line at a steady cadence (a tenth of the round's time, 1 to 5 minutes apart); and, once,
a CPU run estimated at over an hour says so with what finishes sooner. The arithmetic and the cadence are pure
functions; one run of train.py shows the lines off a terminal."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from lth.core.steps import Step
from lth.run import progress
from lth.run.progress import (
    MAX_GAP,
    MIN_GAP,
    REFRESH,
    FitProgress,
    RoundProgress,
    estimate_ready,
    format_rate,
    format_status,
    later_round_steps,
    line_gap,
    long_run_line,
    time_left,
)
from tests.conftest import FAST, run_main

STATUS = re.compile(
    r"^round (\d)/(\d) \| it (\d+)/30 \((\d+)%\) \| [\d.]+ (it/s|s/it) \| round \d+s left \| run ~\d+s left$"
)


def test_status_line_says_iteration_rate_and_time_left() -> None:
    assert time_left(3200, 8000, later=4 * 8000, rate=2.0) == (2400.0, 18400.0)
    line = format_status(1, 5, (0, 3200, 8000), later=4 * 8000, rate=2.0)
    assert line == "round 1/5 | it 3,200/8,000 (40%) | 2.0 it/s | round 40m00s left | run ~5h06m left"
    # a round rewound to 500it runs on the iteration axis from 500 to 8000; before a rate is known, no time left
    assert format_status(2, 5, (500, 0, 7500), later=3 * 7500, rate=None) == "round 2/5 | it 500/8,000 (0%)"
    assert [format_rate(r) for r in (12.34, 1.0, 0.25)] == ["12.3 it/s", "1.0 it/s", "4.0 s/it"]


def test_later_rounds_train_the_length_after_the_rewind_point() -> None:
    assert later_round_steps("init", None, 8000) == 8000
    assert later_round_steps(Step.parse("500it"), None, 8000) == 7500
    assert later_round_steps(Step.parse("2ep"), 100, 8000) == 7800


def test_lines_off_a_terminal_are_a_tenth_of_the_round_apart_within_one_to_five_minutes() -> None:
    assert (MIN_GAP, MAX_GAP) == (60.0, 300.0)
    assert line_gap(None) == MAX_GAP  # no rate yet
    assert [line_gap(s) for s in (30, 600, 1000, 3000, 40_000)] == [60, 60, 100, 300, 300]


def test_the_estimate_waits_for_a_few_iterations_and_speaks_past_an_hour() -> None:
    assert not estimate_ready(1, 100.0) and estimate_ready(2, 10.0)  # slow: after 2 iterations and 10 s
    assert not estimate_ready(19, 9.9) and estimate_ready(20, 0.5)  # fast: after 20 iterations
    assert long_run_line(3600, 36_000, 10.0) is None
    # the run: ResNet-18, 6 rounds of 8,000 iterations, 6 iterations in the first 2 minutes
    line = long_run_line(48_000 / 0.05, 48_000, 0.05)
    assert line is not None and line.startswith("this run will take about 266h40m on the CPU (48,000 iterations left")
    assert "20.0 s/it" in line and "hardware=gpu" in line and "model=" in line and "train.steps=" in line


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def simulate(monkeypatch: pytest.MonkeyPatch, run: RoundProgress, steps: int, rate: float, device: str = "cpu") -> None:
    """One fit of ``steps`` iterations at ``rate`` a second, on a fake clock."""
    now = [1000.0]
    monkeypatch.setattr(progress, "clock", lambda: now[0])
    trainer = SimpleNamespace(global_step=0, strategy=SimpleNamespace(root_device=SimpleNamespace(type=device)))
    fit = run.display(0, 0, steps, later=0)
    assert isinstance(fit, FitProgress)
    fit.on_train_start(trainer, None)
    for _ in range(steps):
        now[0] += 1 / rate
        trainer.global_step += 1
        fit.on_train_batch_end(trainer)
    fit.on_train_end(trainer, None)


def test_a_long_round_off_a_terminal_writes_a_line_every_five_minutes(monkeypatch, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="lth"):
        simulate(monkeypatch, RoundProgress(1, stream=io.StringIO()), steps=8000, rate=2.0)  # 4000 s
    status = [r.getMessage() for r in caplog.records if r.getMessage().startswith("round 0/1 | it")]
    assert len(status) == 13  # at 300, 600, ..., 3900 s
    assert status[0] == "round 0/1 | it 600/8,000 (7%) | 2.0 it/s | round 1h01m left | run ~1h01m left"
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage().startswith("this run will take about 1h06m on the CPU (7,979 iterations left")


def test_a_short_round_off_a_terminal_writes_nothing(monkeypatch, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="lth"):
        simulate(monkeypatch, RoundProgress(1, stream=io.StringIO()), steps=500, rate=10.0)  # 50 s on the CPU
        simulate(monkeypatch, RoundProgress(1, stream=io.StringIO()), steps=8000, rate=2.0, device="cuda")
    assert [r.getMessage() for r in caplog.records if not r.getMessage().startswith("round 0/1 | it")] == []
    assert len(caplog.records) == 13  # the GPU run: its lines, but no estimate


def test_the_terminal_line_is_rewritten_a_few_times_a_second_then_cleared(monkeypatch, caplog) -> None:
    terminal = _Terminal()
    with caplog.at_level(logging.INFO, logger="lth"):
        simulate(monkeypatch, RoundProgress(1, stream=terminal), steps=3000, rate=1000.0)  # 3 s
    written = terminal.getvalue()
    assert 3 * REFRESH - 1 <= written.count("\r") - 2 <= 3 * REFRESH + 1  # the last two: the line cleared
    live = re.compile(r"round 0/1 \| it [\d,]+/3,000 \(\d+%\) \| 1000.0 it/s \| round \ds left \| run ~\ds left")
    assert written.endswith("\r") and all(live.fullmatch(part.strip()) for part in written.split("\r")[1:-2])
    assert caplog.records == []  # nothing in the logs: the terminal has it


def test_progress_off_shows_nothing_but_the_estimate(monkeypatch, caplog) -> None:
    terminal = _Terminal()
    run = RoundProgress(1, stream=terminal, show=False)
    with caplog.at_level(logging.INFO, logger="lth"):
        simulate(monkeypatch, run, steps=8000, rate=2.0)
    assert terminal.getvalue() == "" and [r.levelno for r in caplog.records] == [logging.WARNING]
    assert run.display(1, 0, 8000, later=0) is None  # the estimate is made once
    assert RoundProgress(1, stream=terminal, speaks=False).display(0, 0, 8000, later=0) is None  # rank > 0


def test_a_run_off_a_terminal_prints_its_progress_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "MIN_GAP", 0.0)  # a tenth of a round apart, however short it is
    monkeypatch.setattr(progress, "LONG_RUN", 0.0)  # and any run is long
    done = run_main(*FAST, "prune.rounds=1", "paths.output_dir=out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    (estimate,) = [i for i, line in enumerate(lines) if line.startswith("this run will take about ")]
    assert "on the CPU (" in lines[estimate] and estimate < lines.index(next(x for x in lines if "| weights" in x))
    status = [STATUS.match(line) for line in lines if line.startswith("round") and "| it " in line]
    assert all(status) and len(status) >= 4, lines
    for round_index in (0, 1):
        iterations = [int(m.group(3)) for m in status if m.group(1) == str(round_index)]
        assert len(iterations) >= 2 and iterations == sorted(iterations) and iterations[-1] < 30
        result = next(i for i, line in enumerate(lines) if line.startswith(f"round {round_index}/1 | weights"))
        assert all(lines.index(m.group(0)) < result for m in status if m.group(1) == str(round_index))


def _terminal_seen() -> bool:
    return RoundProgress(1, stream=_Terminal()).terminal


def test_jobs_side_by_side_write_lines_not_a_shared_live_line() -> None:
    import multiprocessing

    assert _terminal_seen()
    with multiprocessing.get_context("fork").Pool(1) as pool:  # as joblib's workers run a sweep's jobs
        assert pool.apply(_terminal_seen) is False
