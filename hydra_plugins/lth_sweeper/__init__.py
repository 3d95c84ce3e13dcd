"""Where Hydra finds lth's sweeper (Hydra instantiates sweepers from the ``hydra_plugins`` package only):
``hydra/sweeper=checked`` (``conf/hydra/sweeper/checked.yaml``, the default) names :class:`CheckedSweeper`, which
is :class:`lth.tools.sweeper.CheckedSweeper`."""

from __future__ import annotations

from lth.tools.sweeper import CheckedSweeper as _Sweeper


class CheckedSweeper(_Sweeper):
    """:class:`lth.tools.sweeper.CheckedSweeper`, under the name Hydra accepts."""
