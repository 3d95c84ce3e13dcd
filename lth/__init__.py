"""lth: find, study and ship lottery tickets with PyTorch Lightning and Hydra.

Layers, from the bottom up: ``steps`` and ``masks`` (pure math), ``callback`` (Lightning glue),
``module``/``data``/``models`` (what is trained), ``run`` (the IMP loop behind ``train.py``).
The names below are imported on first use, so ``python train.py --help`` does not wait for torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LotteryTicket", "Step"]


def __getattr__(name: str) -> Any:
    if name == "LotteryTicket":
        from lth.callback import LotteryTicket

        return LotteryTicket
    if name == "Step":
        from lth.steps import Step

        return Step
    raise AttributeError(f"module 'lth' has no attribute {name!r}")
