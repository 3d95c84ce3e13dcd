"""The Lightning callback that turns any training loop into iterative magnitude pruning.

One ``trainer.fit`` is one round. The callback records the rewind point, multiplies the weights by
their masks after every optimiser step (so momentum and weight decay cannot revive a pruned weight),
and :meth:`LotteryTicket.advance` prunes the trained weights and rewinds the survivors between rounds.
Under DDP every rank calls ``advance``; each fit starts with rank 0's mask broadcast to all ranks, and the
rewind point is recorded from the weights DDP keeps identical on every rank.
A new ``Trainer`` per round rebuilds the optimiser and the learning-rate schedule; for a rewind to
iteration k the callback fast-forwards the schedule to k. It works in any Lightning project::

    ticket = LotteryTicket(rate=0.2)
    for round_index in range(rounds + 1):
        if round_index:
            ticket.advance(model)      # prune 20% of the survivors, rewind to the initial weights
        pl.Trainer(max_steps=ticket.steps_this_round(1000), callbacks=[ticket]).fit(model, data)
"""

from __future__ import annotations

import numbers
import warnings
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch

from lth.core.catalog import (
    FROM_INITIALISATION,
    HOLDS_FINAL_RATE,
    KEEPS_TRAINED_WEIGHTS,
    METHODS,
    PRUNES_EVERY_ROUND,
    RANKS_GLOBALLY,
    REWIND_WORDS,
    SINGLE_WEIGHTS,
    Entry,
    rewind_entry,
)
from lth.core.controls import ControlFn, control_fn
from lth.core.errors import ConfigError
from lth.core.granularity import parse_granularity
from lth.core.masks import Mask, name_matches, prunable_parameters, prune
from lth.core.steps import Step
from lth.core.structured import StructuredPruning

REWIND_MODES = REWIND_WORDS


def parse_rewind(value: str | Step) -> str | Step:
    """``init`` | ``lr`` | ``none`` | a Step such as ``500it`` (error names ``prune.rewind``)."""
    if isinstance(value, Step) or value in REWIND_MODES:
        return value
    try:
        return Step.parse(value, key="prune.rewind")
    except ConfigError:
        raise ConfigError(
            "prune.rewind", f"{value!r} is not allowed; use init, lr, none or a Step like 500it"
        ) from None


class ArgumentError(ValueError):
    """A bad argument of :class:`LotteryTicket`, in one line naming it (``rate=5: ...``); ``argument`` is its name,
    which :func:`lth.run.build.build_ticket` turns into the config key (``prune.<argument>``)."""

    def __init__(self, argument: str, value: Any, allowed: str) -> None:
        self.argument, self.value, self.allowed = argument, value, allowed
        super().__init__(f"{argument}={value!r}: allowed {allowed}")


def _fraction(argument: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ArgumentError(argument, value, "a number in (0, 1)")
    return float(value)


def _patterns(argument: str, value: Any) -> list[str]:
    if isinstance(value, str) or not all(isinstance(p, str) for p in value):
        raise ArgumentError(argument, value, "a list of name patterns, e.g. ['*.out']")
    return list(value)


def _criterion(name: Any, scope: str, layer_rates: Any, granularity: Any) -> Entry:
    """The catalog entry of ``criterion``: a method that prunes every round, with what its traits need."""
    allowed = " or ".join(repr(n) for n in METHODS.with_trait(PRUNES_EVERY_ROUND))
    entry = METHODS.get(name) if isinstance(name, str) else None
    if entry is None or not entry.has(PRUNES_EVERY_ROUND):
        raise ArgumentError("criterion", name, allowed)
    if entry.has(RANKS_GLOBALLY) and (scope != "global" or layer_rates):
        raise ArgumentError("scope", scope, f"'global' without layer_rates for criterion={name!r}")
    if entry.has(SINGLE_WEIGHTS) and granularity != "weight":
        raise ArgumentError("granularity", granularity, f"'weight' for criterion={name!r}")
    return entry


class LotteryTicket(pl.Callback):
    """Global (or layer-wise) magnitude pruning with rewinding, one round per ``trainer.fit``.

    Args:
        rate: fraction of the surviving prunable weights removed per round.
        scope: ``global`` (one threshold over all tensors) or ``layer`` (each tensor alone).
        layer_rates: name pattern -> rate for tensors pruned alone at a rate of their own.
        target_sparsity: if set, replaces ``rate``: round ``rounds`` ends exactly at this sparsity.
        rounds: number of pruning rounds (needed with ``target_sparsity``).
        include, exclude, extra: name patterns choosing the prunable tensors (see :func:`prunable_parameters`).
        rewind: ``init`` (weights at step 0), a Step (weights at that step of round 0), ``lr`` (keep the
            trained weights, replay the learning-rate schedule) or ``none`` (keep them, stay at the final rate).
        granularity: ``weight``, ``channel`` or ``n:m`` such as ``2:4`` (:mod:`lth.core.structured`).
        channel_criterion: how ``channel`` ranks channels: ``l1``, ``l2`` or ``bn_scale``.
        example_input: one input batch, to trace the model's channel dependencies (``channel`` only; default: the
            LightningModule's ``example_input_array``).
        criterion: how each round ranks the trained weights, a method of :data:`lth.core.catalog.METHODS` that
            prunes every round: ``magnitude`` (``|w|``) or ``lamp`` (layer-adaptive scores, ranked globally).
    """

    def __init__(
        self,
        rate: float = 0.2,
        scope: str = "global",
        layer_rates: Mapping[str, float] | None = None,
        target_sparsity: float | None = None,
        rounds: int | None = None,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        extra: Sequence[str] = (),
        rewind: str | Step = "init",
        granularity: str = "weight",
        channel_criterion: str = "l1",
        example_input: torch.Tensor | None = None,
        criterion: str = "magnitude",
    ) -> None:
        if scope not in ("global", "layer"):
            raise ArgumentError("scope", scope, "'global' or 'layer'")
        self.criterion = _criterion(criterion, scope, layer_rates, granularity)
        if target_sparsity is not None:
            target_sparsity = _fraction("target_sparsity", target_sparsity)
            if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
                raise ArgumentError("rounds", rounds, "an int >= 1 with target_sparsity (the round that reaches it)")
        self.rate, self.scope = _fraction("rate", rate), scope
        self.layer_rates = {p: _fraction(f"layer_rates[{p!r}]", r) for p, r in dict(layer_rates or {}).items()}
        self.target_sparsity, self.rounds = target_sparsity, rounds
        self.include, self.exclude = _patterns("include", include), _patterns("exclude", exclude)
        self.extra = _patterns("extra", extra)
        try:
            self.rewind = parse_rewind(rewind)
        except ConfigError:
            raise ArgumentError("rewind", rewind, "'init', 'lr', 'none' or a Step such as '500it' or '2ep'") from None
        try:
            self.granularity = parse_granularity(granularity)
        except ConfigError:
            raise ArgumentError("granularity", granularity, "'weight', 'channel' or 'n:m' such as '2:4'") from None
        self.channel_criterion = channel_criterion
        self.example_input = example_input
        self.structure: StructuredPruning | None = None  # built from the model on first use (not for weight)
        self.round_index = 0
        self.mask: Mask | None = None
        self.rewind_state: dict[str, torch.Tensor] | None = None
        self.round0_steps: int | None = None
        self.iterations_per_epoch: int | None = None
        self._applied: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        self._pruned: list[torch.nn.Parameter] = []  # the parameters with pruned weights, as _applied holds them
        self._fitted: tuple[weakref.ref, int] | None = None  # the Trainer of the last fit and its round

    # -- the tensors -------------------------------------------------------------------------------
    def parameters_of(self, module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
        """The prunable parameters of ``module`` by name; checks the layer-rate patterns too."""
        params = prunable_parameters(module, self.include, self.exclude, self.extra)
        for pattern in self.layer_rates:
            if not any(name_matches(n, pattern) for n in params):
                raise ConfigError(
                    "prune.layer_rates", f"pattern {pattern!r} matches no prunable tensor; they are {list(params)[:6]}"
                )
        if self.granularity.kind != "weight" and self.structure is None:
            example = self.example_input
            if example is None:  # a LightningModule may say what its input looks like
                example = getattr(module, "example_input_array", None)
            if example is None and self.granularity.kind == "channel":
                raise ArgumentError(
                    "example_input",
                    None,
                    "an input batch to trace the model for granularity='channel' (or set the "
                    "LightningModule's example_input_array)",
                )
            self.structure = StructuredPruning.build(self.granularity, self.channel_criterion, module, params, example)
        return params

    def control_fn(self, name: str) -> ControlFn:
        """The control ``name`` (``prune.control``) at this callback's granularity."""
        return control_fn(name) if self.structure is None else self.structure.control(name)

    def _ensure_mask(self, module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
        params = self.parameters_of(module)
        if self.mask is None:
            self.mask = Mask.ones_like(params)
        self.mask.check_against(params, source="mask")
        for n, p in params.items():
            if self.mask[n].device != p.device:
                self.mask[n] = self.mask[n].to(p.device)
        return params

    def apply_mask(self, module: torch.nn.Module) -> None:
        """Zero the pruned weights of ``module`` (one fused multiply over the tensors that have pruned weights).

        It multiplies the parameters' ``.data``, which autograd does not track, so it needs no ``no_grad`` context
        (entering one every step costs more than the rest of this method's Python).
        """
        if self._applied is None:
            params = self._ensure_mask(module)
            masks = {n: m for n, m in self.mask.items() if not bool(m.all())}  # dense round 0: none
            if self.structure is not None:  # the biases and BatchNorm entries of removed channels
                named = dict(module.named_parameters())
                masks.update(self.structure.coupled(self.mask, {n: named[n].shape for n in named}))
                params = {**params, **{n: named[n] for n in masks if n not in params}}
            pruned = {n: params[n] for n in masks}
            weights = [p.data for p in pruned.values()]
            factors = [masks[n].to(device=p.device, dtype=p.dtype) for n, p in pruned.items()]
            self._applied = (weights, factors)
            self._pruned = list(pruned.values())
        if self._applied[0]:
            torch._foreach_mul_(*self._applied)

    def _record_rewind_point(self, module: torch.nn.Module) -> None:
        self.rewind_state = {k: v.detach().clone() for k, v in module.state_dict().items()}

    # -- rounds ------------------------------------------------------------------------------------
    def start_iteration(self) -> int:
        """Where this round starts on the iteration axis (iterations since the initialisation its weights come from).

        Round 0 and rounds rewound to ``init``, ``lr`` or ``none`` start at 0; a round rewound to a Step k starts at
        k: its weights are round 0's at iteration k, and it trains from there to the end of round 0's length.
        """
        if self.round_index == 0 or not isinstance(self.rewind, Step):
            return 0
        if self.rewind.epochs and self.iterations_per_epoch is None:
            raise RuntimeError(f"rewind={self.rewind} needs the iterations per epoch; call steps_this_round first")
        return self.rewind.to_iterations(self.iterations_per_epoch or 0)

    def schedule_offset(self) -> int:
        """Where this round's learning-rate schedule starts (iterations into round 0's schedule).

        ``init`` and ``lr`` replay the schedule from 0, a Step k resumes it at k, ``none`` stays at its end (round 0's
        length is in the callback's state, so a round 0 restored from a checkpoint counts). Weights this callback
        did not train in round 0 (a pre-trained model pruned at once) fine-tune from the schedule's start.
        """
        if self.round_index > 0 and rewind_entry(self.rewind).has(HOLDS_FINAL_RATE):
            return self.round0_steps or 0
        return self.start_iteration()

    def steps_this_round(self, total: int, iterations_per_epoch: int | None = None) -> int:
        """Iterations to train this round when round 0 trains ``total``: a rewind to k trains total - k.

        ``iterations_per_epoch`` resolves a rewind given in epochs (else the one seen in round 0 is used).
        """
        if iterations_per_epoch is not None:
            self.iterations_per_epoch = iterations_per_epoch
        return total - self.start_iteration()

    @torch.no_grad()
    def advance(self, module: torch.nn.Module, mask: Mask | None = None) -> Mask:
        """End the round: prune the trained weights of ``module``, rewind the survivors, return the new mask.

        A ``mask`` given here (a control's) replaces the one magnitude pruning would compute.
        """
        params = self._ensure_mask(module)
        keeps_trained = rewind_entry(self.rewind).has(KEEPS_TRAINED_WEIGHTS)
        if self.rewind_state is None and not keeps_trained:
            raise RuntimeError(f"no rewind point was recorded (rewind={self.rewind}); did round 0 train long enough?")
        if mask is not None:
            mask.check_against(params, source="mask")
            self.mask = Mask({n: mask[n].to(p.device) for n, p in params.items()})
        elif self.structure is not None:
            self.mask = self.structure.prune(
                {n: p.detach() for n, p in module.named_parameters()},
                self.mask,
                self.rate,
                self.scope,
                self.round_index + 1,
                self.rounds or 1,
            )
        else:
            self.mask = prune(
                self.criterion.load()({n: p.detach() for n, p in params.items()}, self.mask),
                self.mask,
                self.rate,
                self.scope,
                self.layer_rates,
                self.target_sparsity,
                self.round_index + 1,
                self.rounds or 1,
            )
        self.round_index += 1
        self._applied = None
        if not keeps_trained:
            module.load_state_dict(self.rewind_state)
        self.apply_mask(module)
        return self.mask

    # -- Lightning hooks ---------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._fitted is not None and self._fitted[0]() is trainer and self._fitted[1] != self.round_index:
            raise RuntimeError(
                f"LotteryTicket: round {self.round_index} is fit with the Trainer of round {self._fitted[1]}, which "
                "has trained its steps already (it would not train); build a new Trainer per round"
            )
        if isinstance(self.rewind, Step) and self.rewind != Step() and trainer.max_steps in (-1, None):
            raise RuntimeError(
                f"LotteryTicket(rewind={self.rewind}): every round after round 0 trains from iteration "
                f"{self.rewind} of round 0, so each round's Trainer needs max_steps=ticket.steps_this_round(<round "
                "0's steps>), not max_epochs (which would train round 0's whole length again)"
            )
        self._fitted = (weakref.ref(trainer), self.round_index)
        if trainer.world_size > 1 and self.mask is not None:  # under DDP every rank trains with rank 0's mask
            self.mask = Mask(trainer.strategy.broadcast(dict(self.mask.cpu()), src=0))
        self._applied = None
        self.apply_mask(pl_module)
        at_start = rewind_entry(self.rewind).has(FROM_INITIALISATION) or self.rewind == Step()  # 0it, 0ep too
        if self.round_index == 0 and at_start and self.rewind_state is None:
            self._record_rewind_point(pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.num_training_batches != float("inf"):  # optimiser steps: batches over the accumulation
            self.iterations_per_epoch = -(-int(trainer.num_training_batches) // trainer.accumulate_grad_batches)
        if self.round_index == 0:  # before any checkpoint is written, so every checkpoint knows it
            self.round0_steps = int(trainer.max_steps if trainer.max_steps > 0 else trainer.estimated_stepping_batches)
        offset = self.schedule_offset() if trainer.global_step == 0 else 0  # a resumed round restored its schedule
        if offset:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                for config in trainer.lr_scheduler_configs:
                    for _ in range(offset):
                        config.scheduler.step()

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        # Lightning clips after this hook: the gradients of pruned weights must not count in the clipping norm
        if trainer.gradient_clip_val and self._applied is not None and self._pruned:
            grads = [p.grad for p in self._pruned]
            if all(g is not None for g in grads):
                torch._foreach_mul_(grads, self._applied[1])

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.apply_mask(pl_module)
        if self.round_index == 0 and isinstance(self.rewind, Step) and self.rewind_state is None:
            if trainer.global_step >= self.rewind.to_iterations(self.iterations_per_epoch or 0):
                self._record_rewind_point(pl_module)

    # -- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "round_index": self.round_index,
            "mask": dict(self.mask.cpu()) if self.mask is not None else None,
            "rewind_state": self.rewind_state,
            "round0_steps": self.round0_steps,
            "iterations_per_epoch": self.iterations_per_epoch,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.round_index = state_dict["round_index"]
        self.mask = Mask(state_dict["mask"]) if state_dict["mask"] is not None else None
        self.rewind_state = state_dict["rewind_state"]
        self.round0_steps = state_dict["round0_steps"]
        self.iterations_per_epoch = state_dict.get("iterations_per_epoch", self.iterations_per_epoch)
        self._applied = None
