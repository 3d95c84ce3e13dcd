"""lth: find, study and ship lottery tickets with PyTorch Lightning and Hydra.

Layers, from the bottom up: ``steps`` and ``masks`` (pure math), ``callback`` (Lightning glue),
``module``/``data``/``models`` (what is trained), ``run`` (the IMP loop behind ``train.py``).
"""

from lth.callback import LotteryTicket
from lth.steps import Step

__all__ = ["LotteryTicket", "Step"]
