"""A line per round above Lightning's progress bar: round k/N, weights remaining, the last round's test accuracy,
the time a round takes and an estimate of the time left. Written to a terminal only, so logs stay clean."""

from __future__ import annotations

import sys
import time
from typing import TextIO


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


class RoundProgress:
    """Prints :func:`format_progress` as each round starts, if ``stream`` (default stderr) is a terminal.

    A round's time is the wall time from :meth:`start` to :meth:`end` (training, testing and saving);
    the estimate uses the mean over the rounds done so far.
    """

    def __init__(self, rounds: int, stream: TextIO | None = None) -> None:
        self.rounds = rounds
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self.durations: list[float] = []
        self.last_test_acc: float | None = None
        self.started = 0.0

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
