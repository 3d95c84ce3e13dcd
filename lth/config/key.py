"""One config key, as :mod:`lth.config.keys` declares it: its kind and range in a small spec language, what is
allowed in words (the text of errors and of the README's table), and the check of one value.

Pure Python: no torch, no Hydra.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lth.core.errors import ConfigError
from lth.core.steps import Step

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
MAX_ITERATIONS = 10**9  # a length past a billion iterations is a typo, not an experiment
MAX_EPOCHS = 10**6
KINDS = ("int", "number", "bool", "choice", "str", "step", "steps", "patterns", "numbers", "mapping", "group", "path")

_ABSENT = object()


_RANGE = re.compile(r"^(\w+)(?: ([\[(])(\S+), (\S+)([\])])| (>=|>) (\S+))?$")


def _bound(text: str) -> int | float:
    return float(text) if any(c in text for c in ".e") else int(text)


@dataclass(frozen=True)
class Key:
    """One config key: what it is, what is allowed, and what it does.

    ``spec``: the kind, then for int, number, numbers and step an optional range, ``(0, 1)``, ``[0, 1000]``,
    ``>= 1`` or ``> 0``. Kinds: int | number | bool | choice (``choices``) | str (a non-empty string) | step (a
    Step, longer than 0it unless the range says ``>= 0``; ``choices``: words allowed instead) | steps (a list of
    Steps longer than 0it) | patterns (a list of name patterns) | numbers (a list of numbers, ``length`` of them,
    each in the range) | mapping (``closed``: its keys are the entries below it) | group (a config group's node,
    shown as the chosen preset) | path.
    ``nullable``: null is allowed. ``optional``: checked only when present (a key that some presets lack).
    ``run_only``: not part of the run's identity (entries below a run-only entry are run-only too).
    ``where``: the overrides under which the key exists when the default config lacks it; ``addable``: it may be
    added with ``+key=value`` (under ``where``). ``allowed_text``: the allowed values in words (null included),
    where the kind cannot say them (``{options}``: a group's presets). ``also``: what other keys constrain (for the
    table). ``custom``: the code that checks the value instead of :meth:`check`. ``unnamed_at``: the value at which
    the identity leaves the key out (what every run did before the key existed), so that their run ids stand.
    ``used_with``: ``(key, values)``: the key (and what is below it) is read, so in the identity, only where that
    other key has one of ``values`` (a method's options, say); see :func:`lth.config.schema.left_out`.
    ``members``: the keys a closed mapping may hold (the entries below it, set by :mod:`lth.config.schema`).
    """

    key: str
    spec: str
    help: str
    choices: tuple[Any, ...] = ()
    length: int | None = None
    closed: bool = False
    nullable: bool = False
    optional: bool = False
    run_only: bool = False
    where: str = ""
    addable: bool = False
    example: str = ""
    allowed_text: str = ""
    also: str = ""
    custom: str = ""
    unnamed_at: Any = None
    used_with: tuple[str, tuple[Any, ...]] | None = None
    members: tuple[str, ...] = ()
    kind: str = field(init=False)
    low: int | float | None = field(init=False, default=None)
    high: int | float | None = field(init=False, default=None)
    open_low: bool = field(init=False, default=False)
    open_high: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        match = _RANGE.match(self.spec)
        if match is None or match.group(1) not in KINDS:
            raise ValueError(f"{self.key}: cannot read the spec {self.spec!r}")
        kind, left, low, high, right, sign, bound = match.groups()
        if left:
            values = {"low": _bound(low), "high": _bound(high), "open_low": left == "(", "open_high": right == ")"}
        elif sign:
            values = {"low": _bound(bound), "open_low": sign == ">"}
        else:
            values = {}
        for name, value in {"kind": kind, **values}.items():
            object.__setattr__(self, name, value)
        if "\n" in self.help or not self.help:
            raise ValueError(f"{self.key}: the help is one line")

    @property
    def leaf(self) -> str:
        """The last part of the dotted key."""
        return self.key.rpartition(".")[2]

    @property
    def allowed(self) -> str:
        """What is allowed, in words: the text of errors and of the table's *allowed* column."""
        kind = self.kind
        if self.allowed_text:
            text = self.allowed_text.format(options=", ".join(group_options(self.key)))
        elif kind in ("int", "number"):
            text = self._range("an integer" if kind == "int" else "a number")
        elif kind == "bool":
            text = "true, false" if self.nullable else "true or false"
        elif kind == "choice":
            text = ", ".join(str(c) for c in self.choices)
        elif kind == "str":
            text = "a name"
        elif kind == "step":
            words = f"{', '.join(self.choices)} or " if self.choices else ""
            text = f"{words}a Step{'' if self.low == 0 else ' longer than 0it'} (500it, 2ep, 2ep50it)"
        elif kind == "steps":
            text = "a list of Steps longer than 0it"
        elif kind == "patterns":
            text = "a list of name patterns"
        elif kind == "numbers":
            count = f"{self.length} numbers" if self.length else "a list of numbers"
            text = self._range(count) if self.low is not None else count
        elif kind == "mapping":
            text = f"a mapping (keys: {', '.join(self.members)})" if self.closed else "a mapping"
        else:
            text = "a folder path" if kind == "path" else "a preset"
        if self.nullable and not self.allowed_text:
            text = f"{text} or null"
        return f"{text}, e.g. {self.example}" if self.example else text

    def _range(self, what: str) -> str:
        if self.high is None:
            return f"{what} {'>' if self.open_low else '>='} {self.low}"
        return f"{what} in {'(' if self.open_low else '['}{self.low}, {self.high}{')' if self.open_high else ']'}"

    def _within(self, value: Any) -> bool:
        low_ok = self.low is None or (value > self.low if self.open_low else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.open_high else value <= self.high)
        return low_ok and high_ok

    def error(self, value: Any) -> ConfigError:
        """``<key>: got <value>; allowed: <what is allowed>``."""
        return ConfigError(self.key, f"got {value!r}; allowed: {self.allowed}")

    def check(self, value: Any) -> Any:
        """Refuse ``value`` (the key's value; None for null or absent) unless this key allows it; return it, a
        :class:`~lth.core.steps.Step` for a step kind."""
        if value is None:
            if self.nullable:
                return None
            if self.kind != "step":  # Step.parse says what a Step is
                raise self.error(value)
        kind = self.kind
        if kind in ("int", "number"):
            ok = _is_number(value, integer=kind == "int") and self._within(value)
        elif kind == "bool":
            ok = isinstance(value, bool)
        elif kind == "choice":
            ok = isinstance(value, str | int | float) and value in self.choices
        elif kind == "str":
            ok = isinstance(value, str) and bool(value.strip())
        elif kind == "step":
            if self.choices and value in self.choices:
                return value
            try:
                return parse_step(value, self.key, positive=self.low != 0)
            except ConfigError:
                if not self.choices:
                    raise
                raise self.error(value) from None
        elif kind == "steps":
            if not _is_list(value):
                raise self.error(value)
            return [parse_step(step, self.key) for step in value]
        elif kind == "patterns":
            ok = _is_list(value) and all(isinstance(v, str) for v in value)
        elif kind == "numbers":
            ok = _is_list(value) and all(_is_number(v) and self._within(v) for v in value)
            ok = ok and (self.length is None or len(value) == self.length)
        elif kind in ("mapping", "group"):
            ok = isinstance(value, Mapping)
            allowed = self.members
            for name in value if ok and self.closed else ():
                if name not in allowed:
                    raise ConfigError(f"{self.key}.{name}", f"unknown key; allowed: {', '.join(allowed)}")
        else:
            ok = isinstance(value, str) and bool(value.strip())
        if not ok:
            raise self.error(value)
        return value


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _is_number(value: Any, integer: bool = False) -> bool:
    return isinstance(value, numbers.Integral if integer else numbers.Real) and not isinstance(value, bool)


def parse_step(value: Any, key: str, positive: bool = True) -> Step:
    """``value`` as a :class:`~lth.core.steps.Step` for ``key``: longer than 0it if ``positive``, and not absurdly
    long (past :data:`MAX_ITERATIONS` iterations or :data:`MAX_EPOCHS` epochs)."""
    step = Step.parse(value, key=key)
    if positive and step == Step():
        raise ConfigError(key, f"got {step}; it must be longer than 0it")
    if step.iterations > MAX_ITERATIONS or step.epochs > MAX_EPOCHS:
        raise ConfigError(key, f"got {value!r}; allowed: at most {MAX_ITERATIONS}it or {MAX_EPOCHS}ep")
    return step


def group_options(group: str) -> list[str]:
    """The presets of config group ``group`` (its YAML files in ``conf/``)."""
    folder = CONF / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
