"""Where Hydra finds lth's stacked launcher (Hydra instantiates launchers from the ``hydra_plugins`` package only):
``hydra/launcher=stacked`` (``conf/hydra/launcher/stacked.yaml``) names :class:`StackedLauncher`, which is
:class:`lth.tools.stacked_launcher.StackedLauncher`."""

from __future__ import annotations

from lth.tools.stacked_launcher import StackedLauncher as _Launcher


class StackedLauncher(_Launcher):
    """:class:`lth.tools.stacked_launcher.StackedLauncher`, under the name Hydra accepts."""
