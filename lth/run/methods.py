"""How a run finds its masks (``prune.method``) and what each round's network cost to obtain.

Methods:

- ``magnitude`` (the default): iterative magnitude pruning of the trained weights, one-shot with ``prune.rounds=1``;
  ``lamp``: the same rounds, the trained weights ranked by LAMP's layer-adaptive scores, globally.
- ``early_bird``: round 0 stops at the evaluation where the early-bird criterion holds
  (:mod:`lth.core.earlybird`); round 1 prunes the weights reached there to ``prune.target_sparsity``.
- ``snip``, ``grasp``, ``synflow``, ``magnitude_init``, ``random``: pruning at initialisation
  (:mod:`lth.core.scores`): round 1's mask is computed from the initial weights, before any training, and trains
  from them. Round 0 is the dense network, trained as in every run (and taken from the runs that share it), as the
  reference the ticket is compared with; the ticket does not depend on it.

Cost: every row of ``rounds.csv`` says what its network cost, counting the round itself and every round its mask
came from: ``train_iterations`` (optimiser steps), ``train_flops`` (as the masks allow) and ``train_flops_dense``
(the same iterations at the dense network's cost; :mod:`lth.core.flops`). For ``magnitude`` and ``early_bird``
that is every round of the run up to this one (a round 0 taken from another run counts); a control's mask comes
from its ticket's rounds, so those count; a mask pruned at initialisation cost no training, so such a round counts
its own iterations only (scoring is a few forward and backward passes, not counted).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from lth.config.run import RunConfig
from lth.core.catalog import (
    DRAWN_DURING_TRAINING,
    NEEDS_SCORE_BATCHES,
    SCORES_INITIAL_WEIGHTS,
    Entry,
)
from lth.core.errors import ConfigError
from lth.core.flops import IterationFlops, iteration_flops
from lth.core.masks import Mask
from lth.core.scores import Scoring, mask_at_init
from lth.core.seeds import stream
from lth.core.steps import Step
from lth.data import ImageData
from lth.data.loader import TensorBatches
from lth.lightning.callback import LotteryTicket
from lth.lightning.earlybird import EarlyBird
from lth.lightning.module import Classifier
from lth.run.build import build_model
from lth.state.artifacts import COST_COLUMNS, read_rounds
from lth.state.store import rewind_not_reached


def method(cfg: RunConfig) -> Entry:
    """The catalog entry of the run's ``prune.method``."""
    return cfg.prune.method


def pruned_at_init(cfg: RunConfig) -> bool:
    """Whether the run's masks are computed at initialisation (they cost no training)."""
    return method(cfg).has(SCORES_INITIAL_WEIGHTS)


def early_bird(cfg: RunConfig, ticket: LotteryTicket) -> EarlyBird | None:
    """The callback that draws an early-bird ticket in round 0, for ``prune.method=early_bird``."""
    if not method(cfg).has(DRAWN_DURING_TRAINING):
        return None
    options = cfg.prune.early_bird
    return EarlyBird(ticket, options.window, options.epsilon, options.distance)


def check_rewind_reached(cfg: RunConfig, ticket: LotteryTicket, round0: dict) -> None:
    """Refuse, in one line, a rewind Step that round 0 did not reach (an early-bird ticket drawn before it)."""
    if ticket.rewind_state is None and isinstance(ticket.rewind, Step):
        raise rewind_not_reached(cfg, round0.get("train_iterations"))


def score_batches(cfg: RunConfig, data: ImageData) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The ``prune.score_batches`` training batches SNIP and GraSP score with: from the training split only (never
    validation or test), without augmentation, in an order of their own (stream ``scores``)."""
    x, y = data.splits["train"]
    batches = TensorBatches(x.cpu(), y.cpu(), cfg.train.batch_size, shuffle=True, seed=stream(cfg.seed, "scores"))
    return [batch for _, batch in zip(range(cfg.prune.score_batches), batches, strict=False)]


def check_score_batches(cfg: RunConfig, data: ImageData) -> None:
    """Refuse more ``prune.score_batches`` than one epoch of the training split holds, where the method reads it,
    once the data is read (before anything is written; validate() refuses it first where the split's size is
    known): a larger number would silently be fewer."""
    if not method(cfg).has(NEEDS_SCORE_BATCHES):
        return
    batches = -(-len(data.splits["train"][0]) // cfg.train.batch_size)
    if cfg.prune.score_batches > batches:
        raise ConfigError(
            "prune.score_batches",
            f"got {cfg.prune.score_batches}; allowed: at most {batches}, the training batches of one epoch",
        )


def mask_at_initialisation(cfg: RunConfig, module: Classifier, ticket: LotteryTicket, data: ImageData) -> Mask:
    """Round 1's mask for a pruning-at-initialisation method: the scores of the initial weights (the ticket's
    rewind point), computed on a fresh copy of the network so that nothing of the run changes (its random state
    included)."""
    if ticket.rewind_state is None:
        raise RuntimeError("no initial weights were recorded (prune.rewind must be init)")
    device = next(module.parameters()).device
    holder = torch.nn.Module()  # names its parameters as the run's module does: model.<layer>.weight
    holder.model = build_model(cfg)
    holder.load_state_dict({k: v for k, v in ticket.rewind_state.items() if k.startswith("model.")})
    holder.to(device)
    entry = method(cfg)
    batches = (
        [(x.to(device), y.to(device)) for x, y in score_batches(cfg, data)] if entry.has(NEEDS_SCORE_BATCHES) else []
    )
    scoring = Scoring(
        holder.model,
        ticket.parameters_of(holder),
        cfg.prune.target_sparsity,
        scope=cfg.prune.scope,
        batches=batches,
        loss_fn=F.cross_entropy,
        input_shape=(cfg.dataset.channels, cfg.dataset.image_size, cfg.dataset.image_size),
        generator=torch.Generator().manual_seed(stream(cfg.seed, "prune/random")),
        iterations=cfg.prune.synflow_iterations,
    )
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return mask_at_init(entry.name, scoring)


def run_flops(cfg: RunConfig, network: torch.nn.Module, accumulate: int, world_size: int) -> IterationFlops:
    """The operations of one training iteration of the run: every process's batches (accumulated ones included)."""
    batch = cfg.train.batch_size * accumulate * world_size
    shape = (cfg.dataset.channels, cfg.dataset.image_size, cfg.dataset.image_size)
    return iteration_flops(network, shape, batch, prefix="model.")


@dataclass(frozen=True)
class Cost:
    """Training spent: optimiser steps, operations as the masks allow, and the same steps at dense cost."""

    iterations: int = 0
    flops: int = 0
    flops_dense: int = 0

    def plus(self, iterations: int, flops: IterationFlops, mask: Mask) -> Cost:
        """This cost and ``iterations`` more under ``mask``."""
        return Cost(
            self.iterations + iterations,
            self.flops + iterations * flops.masked(mask),
            self.flops_dense + iterations * flops.dense,
        )

    def columns(self) -> dict[str, int]:
        """The ``rounds.csv`` columns of this cost."""
        return dict(zip(COST_COLUMNS, (self.iterations, self.flops, self.flops_dense), strict=True))

    @classmethod
    def of_row(cls, row: dict) -> Cost:
        """The cost a ``rounds.csv`` row reports (zero for a row written before costs were counted)."""
        return cls(*(int(row.get(c) or 0) for c in COST_COLUMNS))


def spent_before(cfg: RunConfig, round_index: int, rows: list[dict], ticket_dir: Path | None) -> Cost:
    """What the masks of ``round_index`` cost before the round trains: nothing for round 0 and masks pruned at
    initialisation; else every round the mask came from, the ticket's rounds for a control."""
    if round_index == 0 or pruned_at_init(cfg):
        return Cost()
    source = read_rounds(ticket_dir / "rounds.csv") if ticket_dir is not None else rows
    return Cost.of_row(source[round_index - 1])
