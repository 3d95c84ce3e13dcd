"""The controls that show a ticket is a ticket: one function per control, each an entry of
:data:`lth.core.catalog.CONTROLS` (which declares what it does: ``changes_initialisation``, ``redraws_mask``).

Each control turns the ticket's mask at a round into the mask the control trains, drawing from its own
named random stream. ``reinit`` keeps the mask; what it changes is the initialisation (a fresh draw from the
same distribution), which the run takes care of. ``random_prune`` is iterative random pruning: each round
removes random survivors of the previous control mask so that every layer keeps exactly as many weights as
the ticket's. ``shuffle`` permutes the ticket's mask within each layer, afresh each round.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lth.core.catalog import CONTROLS
from lth.core.masks import Mask

ControlFn = Callable[[Mask, Mask, torch.Generator], Mask]


def keep(ticket: Mask, previous: Mask, generator: torch.Generator) -> Mask:
    """The ticket's mask as it is (reinit: what changes is the initialisation)."""
    return Mask({n: m.clone() for n, m in ticket.items()})


def prune_survivors(ticket: Mask, previous: Mask, generator: torch.Generator) -> Mask:
    """Random survivors of ``previous`` removed until each layer keeps as many weights as the ticket."""
    out = Mask()
    for name, m in ticket.items():
        alive = torch.nonzero(previous[name].flatten().cpu()).flatten()
        keep = int(m.sum())
        if keep > len(alive):
            raise ValueError(f"{name}: the ticket keeps {keep} weights but only {len(alive)} survive")
        chosen = alive[torch.randperm(len(alive), generator=generator)[:keep]]
        flat = torch.zeros(m.numel(), dtype=torch.bool)
        flat[chosen] = True
        out[name] = flat.view_as(m).to(m.device)
    return out


def permute(ticket: Mask, previous: Mask, generator: torch.Generator) -> Mask:
    """The ticket's mask permuted within each layer."""
    return Mask(
        {
            n: m.flatten().cpu()[torch.randperm(m.numel(), generator=generator)].view_as(m).to(m.device)
            for n, m in ticket.items()
        }
    )


def control_fn(name: str) -> ControlFn:
    """The control ``name`` (config key ``prune.control``), as its catalog entry names it."""
    return CONTROLS.entry(name).load()
