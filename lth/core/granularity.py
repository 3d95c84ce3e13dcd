"""What ``prune.granularity`` names: single weights, whole channels, or n:m groups of weights.

Pure Python (config validation imports it before torch): :func:`parse_granularity` turns the config value into a
:class:`Granularity` or a one-line :class:`~lth.core.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lth.core.errors import ConfigError

KEY = "prune.granularity"
KINDS = ("weight", "channel")  # and n:m
CHANNEL_CRITERIA = ("l1", "l2", "bn_scale")  # prune.channel_criterion
_NM = re.compile(r"^(\d+):(\d+)$")


@dataclass(frozen=True)
class Granularity:
    """``weight`` | ``channel`` | ``n:m`` (``n`` and ``m`` set: n of every m consecutive weights survive)."""

    kind: str
    n: int = 0
    m: int = 0

    def __str__(self) -> str:
        return f"{self.n}:{self.m}" if self.kind == "n:m" else self.kind


def parse_granularity(value: object) -> Granularity:
    """``weight``, ``channel`` or ``n:m`` with ``0 < n < m`` (such as ``2:4``); anything else names the key."""
    allowed = "allowed: weight, channel, or n:m with 0 < n < m such as 2:4"
    if value in KINDS:
        return Granularity(str(value))
    match = _NM.match(str(value)) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(KEY, f"unknown granularity {value!r}; {allowed}")
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n < m:
        raise ConfigError(KEY, f"{value} keeps {n} of every {m} weights; {allowed}")
    return Granularity("n:m", n, m)
