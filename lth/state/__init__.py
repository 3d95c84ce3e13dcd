"""The run folder as state: atomic writes and the files of a run (``artifacts``), checkpoints (``checkpoints``),
round 0 shared between runs and resume (``store``), one process per folder (``locks``), finished runs linked
instead of trained again (``reuse``), and readable names (``labels``).

May import :mod:`lth.core`, :mod:`lth.config` and Lightning (a checkpoint is Lightning's); never :mod:`lth.run`
or :mod:`lth.tools`.
"""
