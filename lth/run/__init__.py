"""The run: every object built from the typed config (``build``), how masks are found (``methods``, ``transfer``),
the IMP loop (``loop``), signals, DDP ranks, loggers and provenance.

May import :mod:`lth.core`, :mod:`lth.config`, :mod:`lth.lightning`, :mod:`lth.data`, :mod:`lth.models` and
:mod:`lth.state`; never :mod:`lth.tools`. Its modules take a :class:`lth.config.run.RunConfig`, never a DictConfig.
"""
