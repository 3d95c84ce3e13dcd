"""Where Hydra finds lth's SLURM launcher (Hydra instantiates launchers from the ``hydra_plugins`` package only):
``hydra/launcher=slurm`` (``conf/hydra/launcher/slurm.yaml``) names :class:`SlurmLauncher`, which is
:class:`lth.tools.submitit_slurm.SlurmLauncher`. Without the submitit launcher plugin (``pip install -e
".[sweep]"``) there is nothing to extend, and ``hydra/launcher=slurm`` is not available."""

from __future__ import annotations

try:
    from lth.tools.submitit_slurm import SlurmLauncher as _Launcher
except ImportError:  # hydra-submitit-launcher is not installed
    pass
else:

    class SlurmLauncher(_Launcher):
        """:class:`lth.tools.submitit_slurm.SlurmLauncher`, under the name Hydra accepts."""
