"""A run folder read back by the tools: its files found and its ``config.yaml`` read, each failure one line.

Every tool that opens a finished run (results, instability analysis, export) finds its files and reads its config
here, so a missing folder, a missing file and a garbled or foreign config are reported the same way by all of them.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lth.core.errors import ConfigError, MissingFileError, first_line
from lth.run.config import validate


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


def read_config(path: Path, check: bool = True) -> DictConfig:
    """A run's ``config.yaml``; with ``check``, checked key by key as :func:`lth.run.config.validate` checks a new
    run's config. A file that is unreadable, not a mapping or (with ``check``) holds a bad value is a one-line
    :class:`~lth.core.errors.ConfigError` naming it."""
    try:
        cfg = OmegaConf.load(path)
    except Exception as error:  # yaml and omegaconf raise many types for garbled files
        raise ConfigError(str(path), f"cannot be read ({first_line(error)})") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(str(path), f"holds a {type(cfg).__name__}; a run's config is a mapping of keys")
    if check:
        try:
            validate(cfg)
        except ConfigError as error:
            raise ConfigError(str(path), str(error)) from None
        except Exception as error:  # a value of the wrong type deep inside: not a config a run wrote
            raise ConfigError(str(path), f"is not a run's config ({first_line(error)})") from None
    return cfg
