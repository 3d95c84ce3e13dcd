"""Steps: one type for every length in a run (training length, evaluation cadence, rewind points, schedules).

A Step is written ``"500it"``, ``"2ep"`` or ``"2ep50it"`` and becomes a number of iterations once the
number of iterations per epoch is known. Bare integers are refused so that no key means epochs in one
place and iterations in another.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lth.core.errors import ConfigError

_PATTERN = re.compile(r"^\s*(?:(\d+)\s*ep)?\s*(?:(\d+)\s*it)?\s*$")


@dataclass(frozen=True)
class Step:
    """A length of training: ``epochs`` whole epochs plus ``iterations`` further iterations."""

    epochs: int = 0
    iterations: int = 0

    @classmethod
    def parse(cls, text: str | Step, key: str = "step") -> Step:
        """Parse ``"500it"``, ``"2ep"`` or ``"2ep50it"``; ``key`` names the config key in the error."""
        if isinstance(text, Step):
            return text
        match = _PATTERN.match(text) if isinstance(text, str) else None
        if match is None or match.group(1) is None and match.group(2) is None:
            raise ConfigError(key, f"{text!r} is not a Step; write e.g. '500it', '2ep' or '2ep50it'")
        return cls(int(match.group(1) or 0), int(match.group(2) or 0))

    def to_iterations(self, iterations_per_epoch: int) -> int:
        """The number of iterations this Step covers when an epoch has ``iterations_per_epoch`` of them."""
        return self.epochs * iterations_per_epoch + self.iterations

    def __str__(self) -> str:
        if self.epochs and self.iterations:
            return f"{self.epochs}ep{self.iterations}it"
        return f"{self.epochs}ep" if self.epochs else f"{self.iterations}it"
