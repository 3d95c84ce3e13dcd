"""The Lightning layer: the pruning callback, the LightningModule that trains a classifier, and the callbacks that
watch a round (evaluation cadence on the iteration axis, early-stop point, divergence, random state).

May import :mod:`lth.core` and Lightning; never :mod:`lth.run` or :mod:`lth.tools`, and no run folder I/O.
"""
