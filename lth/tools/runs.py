"""A run folder read back by the tools: its files found and its ``config.yaml`` read, each failure one line.

Every tool that opens a finished run (results, instability analysis, export) finds its files and reads its config
here, so a missing folder, a missing file and a garbled or foreign config are reported the same way by all of them.
"""

from __future__ import annotations

from pathlib import Path

from lth.config.entry import run_of
from lth.config.run import RunConfig
from lth.core.errors import ConfigError, MissingFileError, first_line
from lth.state.artifacts import read_plain


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
