"""``hydra/sweeper=checked`` (the default): Hydra's basic sweeper without its second composition of every job.

Before launching a batch, Hydra's basic sweeper composes each of its jobs to catch composition errors early. For a
command line that ``train.py`` checked (:func:`lth.config.command_line.check_command_line`), each of those jobs
was already composed, exactly as the sweeper will launch it, and validated key by key; those are not composed
again. A job the command line did not check (``--config-dir``, a sweeper's own ``params``) is composed as Hydra does.
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

from lth.config.command_line import was_checked


class CheckedSweeper(BasicSweeper):
    """Hydra's basic sweeper; a batch's jobs that the command line checked are not composed a second time."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Compose (as Hydra does) the jobs of ``batch`` that this process's command-line check did not."""
        super().validate_batch_is_legal([job for job in batch if not was_checked(job)])
