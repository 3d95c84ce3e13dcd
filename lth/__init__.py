"""lth: find, study and ship lottery tickets with PyTorch Lightning and Hydra.

Layers, from the bottom up, each importing only those below it: ``lth.core`` (pure math: Steps, masks, controls),
``lth.lightning`` (the pruning callback and the LightningModule), ``lth.data`` and ``lth.models`` (what is trained),
``lth.run`` (config, builders, the run folder, the IMP loop behind ``train.py``), ``lth.tools`` (results, stability,
export). A test checks the direction.
The names below are imported on first use, so ``python train.py --help`` does not wait for torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LotteryTicket", "Step"]


def __getattr__(name: str) -> Any:
    if name == "LotteryTicket":
        from lth.lightning.callback import LotteryTicket

        return LotteryTicket
    if name == "Step":
        from lth.core.steps import Step

        return Step
    raise AttributeError(f"module 'lth' has no attribute {name!r}")
