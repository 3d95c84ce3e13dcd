"""The one error of an export: a run file (or an exported one) that cannot be read or does not fit, as one line."""

from __future__ import annotations

from lth.core.errors import ConfigError


class ExportError(ConfigError):
    """A run file that cannot be exported, as one line: ``<file>: <what is wrong>``."""
