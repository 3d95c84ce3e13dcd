"""The configuration, torch-free: every key once (``schema``), the checks of a composed config (``validate``,
``hardware``, ``trainer``, ``transfer``), the run's identity (``identity``), the command line checked before Hydra
makes a folder (``command_line``), and the typed, frozen :class:`~lth.config.run.RunConfig` built once per job
(``run``, ``entry``).

May import :mod:`lth.core`'s pure-Python modules (errors, steps, catalog, granularity) and Hydra/OmegaConf; never
torch or Lightning, so ``python train.py`` refuses a bad config within a second. Only this package (the entry
point's side) handles a ``DictConfig``.
"""
