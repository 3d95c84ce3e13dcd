"""The run: the config and its checks, building every object from it, the run folder as state (artifacts, store,
locks, resume, reuse), the IMP loop, signals, DDP ranks, loggers and provenance.

May import :mod:`lth.core`, :mod:`lth.lightning`, :mod:`lth.data` and :mod:`lth.models`; never :mod:`lth.tools`.
This ``__init__`` imports nothing, so ``lth.run.config`` validates a config without loading torch or Lightning.
"""
