"""The Lightning side of early-bird tickets: watch round 0's masks and stop it when the ticket is drawn.

At every evaluation of the fit, :class:`EarlyBird` computes the mask the ticket's pruning would give the current
weights (its ``target_sparsity`` in one round, its scope and layers) and adds it to an
:class:`~lth.core.earlybird.EarlyBirdWindow`; once the criterion holds it records the iteration and stops the fit
there, so the round's last weights are the weights the ticket is drawn from. Its state (the window, the draw)
is in the round's checkpoints, so a resumed round 0 draws at the same iteration.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

from lth.core.earlybird import EarlyBirdWindow
from lth.core.masks import Mask, prune
from lth.lightning.callback import LotteryTicket


class EarlyBird(pl.Callback):
    """Stops round 0 at the first evaluation where the last ``window`` masks are within ``epsilon`` of the newest
    (``distance``: how it is normalised, see :mod:`lth.core.earlybird`).

    ``ticket`` says how masks are computed (and must prune to a ``target_sparsity``); ``drawn`` is the iteration
    at which the ticket was drawn (None until then).
    """

    def __init__(self, ticket: LotteryTicket, window: int = 5, epsilon: float = 0.1, distance: str = "all") -> None:
        if ticket.target_sparsity is None:
            raise ValueError("early-bird tickets need the ticket's target_sparsity")
        self.ticket = ticket
        self.history = EarlyBirdWindow(window, epsilon, distance)
        self.drawn: int | None = None

    def mask_now(self, pl_module: pl.LightningModule) -> Mask:
        """The mask pruning the current weights to the target sparsity would give."""
        t = self.ticket
        params = {n: p.detach() for n, p in t.parameters_of(pl_module).items()}
        return prune(params, Mask.ones_like(params), t.rate, t.scope, t.layer_rates, t.target_sparsity, 1, 1)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.drawn is not None:  # resumed from the checkpoint written when it was drawn
            trainer.should_stop = True

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.drawn is not None:
            return
        if self.history.add(self.mask_now(pl_module)):
            self.drawn = trainer.global_step
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history.state_dict(), "drawn": self.drawn}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history.load_state_dict(state_dict["history"])
        self.drawn = state_dict["drawn"]
