"""How far a run is and how long it has left, shown without flooding logs or slowing training (``train.progress``).

On a terminal (stderr, a process of its own rather than one of the jobs a parallel launcher runs side by side): a
line as each round starts (round k/N, weights remaining, the last round's test accuracy, the time a round takes
and the time left), then a live line during the round, rewritten at most :data:`REFRESH` times a second:
iteration, rate, time left for the round and for the run. Otherwise (a log file, a SLURM job, a joblib job): a line
with the same facts through the ``lth`` logger at a steady cadence, a tenth of the round's estimated time apart but
at least :data:`MIN_GAP` and at most :data:`MAX_GAP` seconds (:func:`line_gap`), so a round shorter than a minute
adds none. Nothing is written on other iterations; each iteration costs a clock read and a few arithmetic
operations.

Whatever ``train.progress`` says, a run that the first iterations on the CPU estimate at over :data:`LONG_RUN`
seconds says so once, in one line with the estimate and what finishes sooner (:func:`long_run_line`).
"""

from __future__ import annotations

import logging
import multiprocessing
import shutil
import sys
import time
from typing import Any, TextIO

import pytorch_lightning as pl

from lth.core.steps import Step

log = logging.getLogger("lth")
REFRESH = 4  # live-line rewrites per second, at most
MIN_GAP, MAX_GAP = 60.0, 300.0  # seconds between two lines off a terminal: at least, at most
LONG_RUN = 3600.0  # seconds: a CPU run estimated longer is told so before it goes on
ESTIMATE_AFTER = (20, 10.0)  # the estimate is made after this many measured iterations or seconds, whichever first
clock = time.monotonic  # the display's clock (tests set another)


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s`` or ``2h07m``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_rate(rate: float) -> str:
    """Iterations per second, or seconds per iteration below one a second: ``12.3 it/s``, ``4.2 s/it``."""
    return f"{rate:.1f} it/s" if rate >= 1 else f"{1 / rate:.1f} s/it"


def format_progress(
    round_index: int,
    rounds: int,
    weights_remaining: float,
    last_test_acc: float | None = None,
    seconds_per_round: float | None = None,
) -> str:
    """The line shown as round ``round_index`` of ``0..rounds`` starts (fractions in, percentages out).

    The time left counts this round and the ones after it at ``seconds_per_round`` each.
    """
    parts = [f"round {round_index}/{rounds}", f"weights remaining {100 * weights_remaining:.1f}%"]
    if last_test_acc is not None:
        parts.append(f"last test acc {100 * last_test_acc:.2f}%")
    if seconds_per_round is not None:
        left = seconds_per_round * (rounds - round_index + 1)
        parts += [f"{format_duration(seconds_per_round)}/round", f"~{format_duration(left)} left"]
    return " | ".join(parts)


def time_left(done: int, steps: int, later: int, rate: float) -> tuple[float, float]:
    """Seconds left in a round that has trained ``done`` of its ``steps`` iterations, and in the run (``later``
    iterations in the rounds after it), at ``rate`` iterations a second."""
    round_left = max(steps - done, 0) / rate
    return round_left, round_left + later / rate


def format_status(round_index: int, rounds: int, axis: tuple[int, int, int], later: int, rate: float | None) -> str:
    """The line during round ``round_index``: ``axis`` = (its first iteration, iterations trained, iterations it
    trains), on the README's iteration axis; with ``rate``, the rate and the time left for the round and the run."""
    start, done, steps = axis
    parts = [f"round {round_index}/{rounds}", f"it {start + done:,}/{start + steps:,} ({100 * done // steps}%)"]
    if rate:
        round_left, run_left = time_left(done, steps, later, rate)
        parts += [format_rate(rate), f"round {format_duration(round_left)} left"]
        parts.append(f"run ~{format_duration(run_left)} left")
    return " | ".join(parts)


def line_gap(round_seconds: float | None) -> float:
    """Seconds between two lines off a terminal in a round estimated to take ``round_seconds`` (None: not known
    yet): a tenth of it, but at least :data:`MIN_GAP` and at most :data:`MAX_GAP`."""
    if round_seconds is None:
        return MAX_GAP
    return min(max(round_seconds / 10, MIN_GAP), MAX_GAP)


def estimate_ready(measured: int, seconds: float) -> bool:
    """Whether ``measured`` iterations in ``seconds`` (after the first, which warms up) make an estimate: two at
    least, and :data:`ESTIMATE_AFTER`'s iterations or seconds."""
    iterations, wait = ESTIMATE_AFTER
    return measured >= 2 and (measured >= iterations or seconds >= wait)


def long_run_line(seconds: float, iterations: int, rate: float) -> str | None:
    """The line said before a CPU run of ``iterations`` left, estimated at ``seconds``, goes on at ``rate``; None
    for a run of :data:`LONG_RUN` seconds or less."""
    if seconds <= LONG_RUN:
        return None
    return (
        f"this run will take about {format_duration(seconds)} on the CPU ({iterations:,} iterations left at "
        f"{format_rate(rate)}); a GPU (hardware=gpu), a smaller model (model=lenet300, model=resnet20) or shorter "
        "rounds (train.steps=...) finish sooner"
    )


def later_round_steps(rewind: Any, iterations_per_epoch: int | None, total: int) -> int:
    """Iterations each round after round 0 trains when round 0 trains ``total``: a rewind to a Step k trains
    ``total`` - k (see :meth:`lth.lightning.callback.LotteryTicket.steps_this_round`), the others ``total``."""
    return total - (rewind.to_iterations(iterations_per_epoch or 0) if isinstance(rewind, Step) else 0)


class RoundProgress:
    """What a run shows of its progress: the line as each round starts (on a terminal, :func:`format_progress`), the
    display during each fit (:meth:`display`), and the long-run estimate (once per process).

    ``show`` (``train.progress``) turns the lines and the display on; ``speaks`` (rank 0) lets this process write at
    all. A round's time is the wall time from :meth:`start` to :meth:`end` (training, testing and saving); the
    estimate uses the mean over the rounds done so far.
    """

    def __init__(self, rounds: int, stream: TextIO | None = None, show: bool = True, speaks: bool = True) -> None:
        self.rounds = rounds
        self.stream = stream if stream is not None else sys.stderr
        # a job that a parallel launcher (joblib) started shares the terminal with the others: it writes lines
        self.terminal = self.stream.isatty() and multiprocessing.parent_process() is None
        self.show, self.speaks = show, speaks
        self.enabled = self.terminal and show and speaks
        self.durations: list[float] = []
        self.last_test_acc: float | None = None
        self.started = 0.0
        self.rate: float | None = None  # iterations a second in the last fit (the next one's first estimate)
        self.estimated = False  # the long-run estimate is made once, in the first fit this process trains

    def start(self, round_index: int, weights_remaining: float) -> None:
        """Round ``round_index`` begins, with ``weights_remaining`` of the prunable weights."""
        self.started = time.monotonic()
        if self.enabled:
            mean = sum(self.durations) / len(self.durations) if self.durations else None
            line = format_progress(round_index, self.rounds, weights_remaining, self.last_test_acc, mean)
            print(line, file=self.stream, flush=True)

    def end(self, test_acc: float) -> None:
        """The round begun by the last :meth:`start` is done; ``test_acc`` is its test accuracy."""
        self.durations.append(time.monotonic() - self.started)
        self.last_test_acc = test_acc

    def display(self, round_index: int, start: int, steps: int, later: int) -> pl.Callback | None:
        """The callback that shows round ``round_index``'s fit (``steps`` iterations from iteration ``start``;
        ``later``: the iterations of the rounds after it), or None where it has nothing to say."""
        if not self.speaks or (self.estimated and not self.show):
            return None
        return FitProgress(self, round_index, (start, steps), later)


class FitProgress(pl.Callback):
    """One fit's progress, as :class:`RoundProgress` says: the live line or the lines, and the long-run estimate."""

    def __init__(self, run: RoundProgress, round_index: int, span: tuple[int, int], later: int) -> None:
        self.run, self.round_index, (self.start, self.steps), self.later = run, round_index, span, later
        self.first: tuple[int, float] | None = None  # (iterations trained, time) after the fit's first iteration
        self.previous, self.last_written, self.width = 0, 0.0, 0

    def rate(self, done: int, now: float) -> float | None:
        """Iterations a second since the fit's first iteration (the last fit's rate until two are measured)."""
        if self.first is None or done - self.first[0] < 2 or now <= self.first[1]:
            return self.run.rate
        return (done - self.first[0]) / (now - self.first[1])

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.previous, self.last_written = trainer.global_step, clock()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        done, now = trainer.global_step, clock()
        if done == self.previous:  # a batch accumulated into the next iteration
            return
        if self.first is None:
            self.first = (done, now)
        elif not self.run.estimated and estimate_ready(done - self.first[0], now - self.first[1]):
            self._estimate(trainer, done, now)
        if self.run.show and self.run.terminal:
            if now - self.last_written >= 1 / REFRESH:
                self._write_live(done, now)
        elif self.run.show and done < self.steps:  # the round's end has its own line
            rate = self.rate(done, now)
            if now - self.last_written >= line_gap(self.steps / rate if rate else None):
                log.info(
                    format_status(self.round_index, self.run.rounds, (self.start, done, self.steps), self.later, rate)
                )
                self.last_written = now
        self.previous = done

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._clear()
        self.run.rate = self.rate(trainer.global_step, clock())

    def _estimate(self, trainer: pl.Trainer, done: int, now: float) -> None:
        """Say once, before the run goes on, that it will take more than :data:`LONG_RUN` seconds on the CPU."""
        self.run.estimated = True
        rate = self.rate(done, now)
        if rate and trainer.strategy.root_device.type == "cpu":
            iterations = self.steps - done + self.later
            line = long_run_line(iterations / rate, iterations, rate)
            if line is not None:
                self._clear()
                log.warning(line)

    def _write_live(self, done: int, now: float) -> None:
        axis = (self.start, done, self.steps)
        line = format_status(self.round_index, self.run.rounds, axis, self.later, self.rate(done, now))
        line = line[: shutil.get_terminal_size().columns - 1]  # one screen line, so that \r rewrites all of it
        self.run.stream.write("\r" + line.ljust(self.width))
        self.run.stream.flush()
        self.width, self.last_written = len(line), now

    def _clear(self) -> None:
        if self.width:
            self.run.stream.write("\r" + " " * self.width + "\r")
            self.run.stream.flush()
            self.width = 0
