"""A run folder read back by the tools: its files found and its ``config.yaml`` read, each failure one line.

Every tool that opens a finished run (results, instability analysis, export) finds its files and reads its config
here, so a missing folder, a missing file and a garbled or foreign config are reported the same way by all of them.
The tools that read many run folders at once (``scripts/runs.py``, ``report.py``, ``plot.py``) read them through
:func:`read_each`: one broken folder is skipped with a line saying which and why, not the end of the listing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from lth.config.entry import run_of
from lth.config.run import RunConfig
from lth.core.errors import USER_ERRORS, ConfigError, MissingFileError, first_line, one_line
from lth.state.artifacts import read_plain

T = TypeVar("T")


def run_file(run_dir: Path, name: str) -> Path:
    """``run_dir / name``; a :class:`~lth.core.errors.MissingFileError` naming the folder or the file where either
    is not there."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MissingFileError(str(run_dir), "is not a folder" if run_dir.exists() else "no such folder")
    path = run_dir / name
    if not path.is_file():
        raise MissingFileError(str(path), "is missing (is this a run folder?)")
    return path


def read_config(path: Path) -> RunConfig:
    """A run's ``config.yaml``, checked key by key as :func:`lth.config.validate.validate` checks a new run's
    config, and typed; a file that is unreadable, not a mapping or holds a bad value is a one-line
    :class:`~lth.core.errors.ConfigError` naming it."""
    plain = read_plain(path)
    try:
        return run_of(plain)
    except ConfigError as error:
        raise ConfigError(str(path), str(error)) from None
    except Exception as error:  # a value of the wrong type deep inside: not a config a run wrote
        raise ConfigError(str(path), f"is not a run's config ({first_line(error)})") from None


def _say(line: str) -> None:
    print(line, file=sys.stderr)


def read_each(
    folders: Sequence[Path], read: Callable[[Path], T], where: str, say: Callable[[str], None] = _say
) -> list[T]:
    """``read(folder)`` of every run folder of ``folders`` (found under ``where``, the paths given, as the user wrote
    them); a folder whose files ``read`` refuses (a :data:`~lth.core.errors.USER_ERRORS` error: a garbled
    ``config.yaml``, a cut-short ``rounds.csv``) is skipped with one line ``skipped <folder>: <file>: <why>`` given to
    ``say`` (stderr by default).

    Only when no folder could be read is it an error: the one folder's own error, or with several a one-line
    :class:`~lth.core.errors.ConfigError` naming ``where``, how many there were and the first reason.
    """
    read_back, skipped = [], []
    for folder in folders:
        try:
            read_back.append(read(folder))
        except USER_ERRORS as error:
            skipped.append((folder, error))
    if skipped and not read_back:
        if len(skipped) == 1:
            raise skipped[0][1]
        first, error = skipped[0]
        raise ConfigError(
            where, f"none of its {len(skipped)} run folders could be read (the first, {first}: {one_line(error)})"
        )
    for folder, error in skipped:
        say(f"skipped {folder}: {one_line(error).replace(f'{folder}/', '')}")
    return read_back
