"""The scripts' command lines, held to the project's rule for bad input: one line on stderr,
``error: <which argument or file>: <what is wrong / what is allowed>``, exit code 2, no traceback, nothing written.

- :class:`ArgumentParser` reports argparse's own errors (an unknown option, a missing or malformed value) as a
  :class:`~lth.core.errors.ConfigError` naming the argument, instead of printing its usage;
- :func:`integer`, :func:`number`, :func:`folder`, :func:`output_folder` and :func:`output_file` are argument
  types that range-check a value as it is parsed;
- :func:`docs_or_file` adds the benchmarks' ``--write-docs`` / ``--out FILE`` pair, :func:`print_and_write` prints
  a benchmark's text and writes it where they say, with its :func:`command_line`;
- :func:`one_line_errors` wraps a script's ``main``: a :data:`~lth.core.errors.USER_ERRORS` error raised anywhere below
  it becomes that one line and ``SystemExit(2)``.
"""

from __future__ import annotations

import argparse
import functools
import math
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

from lth.core.errors import USER_ERRORS, ConfigError, one_line
from lth.state.artifacts import write_section

EXIT_BAD_INPUT = 2
T = TypeVar("T")


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are a :class:`ConfigError` keyed by the argument at fault."""

    def error(self, message: str) -> NoReturn:
        """Raise argparse's complaint as ``ConfigError(<argument>, <what is wrong>)``."""
        raise ConfigError(*split_message(message))


def split_message(message: str) -> tuple[str, str]:
    """argparse's error text as ``(argument, what is wrong)``: ``"argument --round: invalid int value: 'x'"`` ->
    ``("--round", "invalid int value: 'x'")``."""
    patterns = (
        (r"argument (?P<key>\S+): (?P<what>.*)", None),
        (r"the following arguments are required: (?P<key>.*)", "is required"),
        (r"unrecognized arguments: (?P<key>.*)", "unrecognized argument(s); see --help"),
        (r"one of the arguments (?P<key>.*) is required", "one of them is required"),
    )
    for pattern, what in patterns:
        match = re.fullmatch(pattern, message.strip(), flags=re.DOTALL)
        if match:
            return match["key"], what or match["what"]
    return "arguments", message


def one_line_errors(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a script's ``main(argv)``: a user's error (:data:`~lth.core.errors.USER_ERRORS`) raised inside becomes one
    line ``error: <key>: <message>`` on stderr and ``SystemExit(2)``; anything else propagates unchanged."""

    @functools.wraps(main)
    def wrapped(*args: object, **kwargs: object) -> T:
        try:
            return main(*args, **kwargs)
        except USER_ERRORS as error:
            print(f"error: {one_line(error)}", file=sys.stderr)
            raise SystemExit(EXIT_BAD_INPUT) from None

    return wrapped


# -- argument types ---------------------------------------------------------------------------------


def _bounds(low: float | None, high: float | None, open_low: bool, open_high: bool, kind: str) -> str:
    show = lambda x: str(x) if isinstance(x, int) else f"{x:g}"  # noqa: E731
    if low is not None and high is not None:
        return f"{kind} in {'(' if open_low else '['}{show(low)}, {show(high)}{')' if open_high else ']'}"
    if low is not None:
        return f"{kind} {'>' if open_low else '>='} {show(low)}"
    if high is not None:
        return f"{kind} {'<' if open_high else '<='} {show(high)}"
    return kind


def _within(value: float, low: float | None, high: float | None, open_low: bool, open_high: bool) -> bool:
    above = low is None or (value > low if open_low else value >= low)
    below = high is None or (value < high if open_high else value <= high)
    return above and below


N = TypeVar("N", int, float)


def _ranged(
    convert: Callable[[str], N], kind: str, low: N | None, high: N | None, open_low: bool, open_high: bool
) -> Callable[[str], N]:
    """An argument type: ``convert(text)``, refused unless finite and between ``low`` and ``high`` (each end open or
    closed, either optional); ``kind`` names what is allowed in the message."""
    allowed = _bounds(low, high, open_low, open_high, kind)

    def parse(text: str) -> N:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"got {text!r}; allowed: {allowed}") from None
        finite = not isinstance(value, float) or math.isfinite(value)  # an int of any size is finite
        if not finite or not _within(value, low, high, open_low, open_high):
            raise argparse.ArgumentTypeError(f"got {text}; allowed: {allowed}")
        return value

    return parse


def integer(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argument type: an integer in ``[low, high]`` (either end optional)."""
    return _ranged(int, "an integer", low, high, False, False)


def number(
    low: float | None = None, high: float | None = None, *, open_low: bool = False, open_high: bool = False
) -> Callable[[str], float]:
    """An argument type: a finite number between ``low`` and ``high`` (each end open or closed, either optional)."""
    return _ranged(float, "a number", low, high, open_low, open_high)


def folder(text: str) -> Path:
    """An argument type: an existing folder."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {'is not a folder' if path.exists() else 'no such folder'}")
    return path


def _check_parents(text: str, path: Path) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{text}: {parent} is a file, not a folder")
            return


def output_folder(text: str) -> Path:
    """An argument type: a folder to write into (made when missing); an existing file is refused."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a file; allowed: a folder (made if missing)")
    _check_parents(text, path)
    return path


def output_file(text: str) -> Path:
    """An argument type: a file to write (its folder made when missing); an existing folder is refused."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder; allowed: a file path")
    _check_parents(text, path)
    return path


def docs_or_file(parser: argparse.ArgumentParser, doc: Path, what: str = "the table") -> None:
    """Add a benchmark's outputs: ``--write-docs`` (rewrite ``what``'s section of ``doc``, a file of ``docs/``) or
    ``--out FILE`` (that Markdown file instead), at most one of them; with neither, the script prints only."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--write-docs", action="store_true", help=f"write {what} into docs/{doc.name} (default: print only)"
    )
    where.add_argument("--out", type=output_file, help=f"write {what} into this Markdown file (default: none)")


def print_and_write(text: str, args: argparse.Namespace, doc: Path, start: str, end: str) -> None:
    """Print ``text``; with the ``--write-docs`` of :func:`docs_or_file` also write it between the markers ``start``
    and ``end`` of ``doc``, with ``--out FILE`` of that file, and say where."""
    out = doc if args.write_docs else args.out
    print(text)
    if out is not None:
        write_section(out, text, start, end)
        print(f"\nwritten to {out}")


def command_line(script: str, argv: list[str] | None) -> str:
    """The command that ran ``scripts/<script>.py`` with ``argv`` (``sys.argv`` where None), as a shell line."""
    return shlex.join(["python", f"scripts/{script}.py", *(sys.argv[1:] if argv is None else argv)])
