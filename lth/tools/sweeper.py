"""``hydra/sweeper=checked`` (the default): Hydra's basic sweeper without composing a job more often than once.

Before launching a batch, Hydra's basic sweeper composes each of its jobs to catch composition errors early. For a
command line that ``train.py`` checked (:func:`lth.config.command_line.check_command_line`), each of those jobs
was already composed, exactly as the sweeper will launch it, and validated key by key; those are not composed
again. A job the command line did not check (``--config-dir``, a sweeper's own ``params``) is composed as Hydra does.

Under Hydra's basic launcher and ``hydra/launcher=stacked`` (jobs composed in turn, in this process) a job that
differs from the one before it in plain values alone is that job's config with its values set
(:class:`lth.config.command_line.ComposedInTurn`).

Hydra loads this module through ``hydra_plugins.lth_sweeper`` when it scans its plugins, after executing its core
plugins' modules again: a module that imports this one before that scan subclasses a ``BasicSweeper`` Hydra no
longer uses (``super()`` then fails), so nothing imports it but Hydra.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra._internal.core_plugins import basic_launcher
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.types import HydraContext

from lth.config.command_line import ComposedInTurn, was_checked


class CheckedSweeper(BasicSweeper):
    """Hydra's basic sweeper; a batch's jobs that the command line checked are not composed a second time."""

    def setup(self, *, hydra_context: HydraContext, task_function: Any, config: Any) -> None:
        """As Hydra's; the basic launcher, and a launcher that says it composes its jobs in turn in this process
        (``COMPOSES_IN_TURN``: hydra/launcher=stacked), compose them through :class:`ComposedInTurn`."""
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        basic = type(self.launcher) is basic_launcher.BasicLauncher  # the class of Hydra's last scan
        if basic or getattr(self.launcher, "COMPOSES_IN_TURN", False):
            loader = ComposedInTurn(hydra_context.config_loader)
            self.launcher.hydra_context = HydraContext(config_loader=loader, callbacks=hydra_context.callbacks)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Compose (as Hydra does) the jobs of ``batch`` that this process's command-line check did not."""
        super().validate_batch_is_legal([job for job in batch if not was_checked(job)])
