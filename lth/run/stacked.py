"""One round of many runs at once: the members of a stack trained as one vmapped network (``train.engine=stacked``).

Each member is a run's own network, masks and data: :func:`fit_stack` stacks the members' parameters
(``torch.func.stack_module_state``), runs ``functional_call`` under ``vmap`` on a stack of the members' own batches
(each member draws its batches from its own seed's order), and takes one optimiser step over the stacked tensors.
Convolutions are computed as matrix products of unfolded patches (:class:`UnfoldConv2d`), so that they too stay
independent of the stack's size.
The optimisers allowed (:data:`ELEMENTWISE`) update every element from its own gradient and state, so a member's
numbers do not depend on which other members share its stack; its loss is the mean over its own batch and the
stack's loss is the sum of the members' losses (a member's gradient is its own loss's). Every member evaluates its
own validation split at the cadence of the plain loop and keeps its own early-stop point (lowest validation loss).
A member whose validation or training loss is not finite at an evaluation has diverged: it leaves the stack there
(its slices of the parameters, masks and optimiser state are dropped) and the others train on, their numbers as
they would have been without it. Each member logs its step metrics through its run's Lightning loggers
(:class:`StepLog`): the names, steps and epochs a Lightning fit of its round logs.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import Logger
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from lth.config.run import RunConfig, thawed
from lth.core.catalog import FROM_INITIALISATION, rewind_entry
from lth.core.steps import Step
from lth.data import ImageData
from lth.data.loader import TensorBatches
from lth.lightning.callback import LotteryTicket
from lth.lightning.module import Classifier
from lth.lightning.tracking import EvaluationCadence
from lth.run.loggers import RunLoggers, logging_interval

ELEMENTWISE = ("torch.optim.SGD", "torch.optim.Adam", "torch.optim.AdamW")  # per-element updates: members independent


@dataclass(frozen=True)
class StepLog:
    """A member's step metrics of one round, logged with its run's Lightning loggers of the round (on the iteration
    axis) as a Lightning fit of the round logs them (:class:`~lth.lightning.module.Classifier`,
    :func:`lth.run.build.build_trainer`): ``lr-<optimiser>`` and ``train_loss`` every ``every`` iterations,
    ``val_loss``/``val_acc`` at each evaluation, the test metrics at the end; all but the learning rate with the
    fit's epoch, its epochs of ``epoch_length`` beginning where the data order's do. The fit starts at ``start``."""

    loggers: list[Logger]
    every: int
    start: int
    epoch_length: int

    def due(self, iteration: int) -> bool:
        """Whether Lightning logs the loss and the learning rate of ``iteration`` (a point of the axis)."""
        return (iteration - self.start) % self.every == 0

    def log(self, metrics: dict[str, float], iteration: int, epoch: bool = True, ended: bool = False) -> None:
        """Log ``metrics`` at ``iteration``, with the fit's epoch there unless ``epoch`` is false (the learning
        rate); ``ended``: after the fit (a test), when Lightning counts one epoch more."""
        trained = iteration - self.start  # Lightning's step, from 0 in every fit, is this less one
        if epoch:
            metrics = {**metrics, "epoch": (self.start % self.epoch_length + trained - 1) // self.epoch_length + ended}
        for logger in self.loggers:
            logger.log_metrics(metrics, step=trained - 1)

    def log_tests(self, final: tuple[float, float], early: tuple[float, float], end: int) -> None:
        """Log the test (loss, accuracy) of the round's last weights, then of its early-stop point's, at its last
        iteration ``end``, as the plain loop tests them; then finish."""
        self.log({"final_test_loss": final[0], "final_test_acc": final[1]}, end, ended=True)
        self.log({"test_loss": early[0], "test_acc": early[1]}, end, ended=True)
        self.finish()

    def finish(self, status: str = "success") -> None:
        """Write out what the loggers hold, as Lightning does after a fit or a test (``failed``: a diverged fit)."""
        for logger in self.loggers:
            logger.finalize(status)


def step_log(run: RunLoggers, round_index: int, span: Span, epoch_length: int) -> StepLog | None:
    """The :class:`StepLog` of round ``round_index`` (``span``) with ``run``'s loggers of the round, started afresh
    (None: it has none), logging as often as :func:`lth.run.build.build_trainer` makes Lightning log."""
    loggers, _ = run.for_round(round_index, None, span.start, span.total)
    if not loggers:
        return None
    return StepLog(loggers, logging_interval(span.eval_every, span.start, span.steps), span.start, epoch_length)


@dataclass
class Member:
    """One run of a stack: its config, network (with optimiser settings and schedule), pruning state, data, step log."""

    cfg: RunConfig
    module: Classifier
    ticket: LotteryTicket
    data: ImageData
    run_dir: Path
    steps: StepLog | None = None


@dataclass
class Watch:
    """What a member's fit found: its early-stop point (lowest validation loss) and the iterations trained."""

    iteration: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    state: dict[str, torch.Tensor] | None = None


@dataclass(frozen=True)
class Span:
    """A round of the stack on the iteration axis: ``steps`` iterations from ``start``, evaluated every
    ``eval_every`` iterations and at ``total`` (round 0's length)."""

    steps: int
    start: int
    eval_every: int
    total: int


class UnfoldConv2d(nn.Conv2d):
    """A ``Conv2d`` computed as a matrix product of its unfolded input (the same numbers to rounding).

    Under ``vmap`` a convolution with stacked weights becomes one grouped convolution, whose kernels change a
    member's numbers with the stack's size; a matrix product of unfolded patches stays a batched matrix product, whose
    members do not depend on each other (tests/test_stacked.py checks both).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (ph, pw), (dh, dw), (sh, sw) = self.kernel_size, self.padding, self.dilation, self.stride
        cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)
        height = (x.shape[-2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        width = (x.shape[-1] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        out = (self.weight.flatten(1) @ cols).unflatten(-1, (height, width))
        return out if self.bias is None else out + self.bias.view(-1, 1, 1)


def unfolds(conv: nn.Module) -> bool:
    """Whether :class:`UnfoldConv2d` computes ``conv`` (a plain 2-d convolution: no groups, zero padding by numbers);
    other convolutions do not stack."""
    return (
        type(conv) in (nn.Conv2d, UnfoldConv2d)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
    )


def stackable_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` on the meta device (structure only) whose 2-d convolutions are :class:`UnfoldConv2d`."""
    base = copy.deepcopy(model).to("meta")
    for module in base.modules():
        if type(module) is nn.Conv2d:
            module.__class__ = UnfoldConv2d  # the same attributes; only forward differs
    return base


def member_masks(member: Member) -> dict[str, torch.Tensor]:
    """What the member's weights are multiplied by after each step, by parameter name (without ``model.``): its masks
    and, for channel and n:m granularity, the entries they couple (biases of removed channels), as its ticket's
    ``apply_mask`` has them."""
    ticket = member.ticket
    masks = dict(ticket.mask.items()) if ticket.mask is not None else {}
    if ticket.structure is not None:
        named = dict(member.module.named_parameters())
        masks.update(ticket.structure.coupled(ticket.mask, {n: p.shape for n, p in named.items()}))
    return {n.removeprefix("model."): m for n, m in masks.items() if n.startswith("model.")}


class Stack:
    """The members' networks as one vmapped function of stacked parameters (on ``device``)."""

    def __init__(self, members: Sequence[Member], device: torch.device) -> None:
        self.members, self.device = list(members), device
        models = [m.module.model for m in self.members]
        params, _ = stack_module_state(models)
        self.params = {k: v.detach().to(device).requires_grad_(True) for k, v in params.items()}
        base = stackable_copy(models[0])

        def call(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(base, p, (x,))

        self.forward = vmap(call)
        self.masks = {}
        factors = [member_masks(m) for m in self.members]
        for name in self.params:
            entries = [f.get(name) for f in factors]
            if any(e is not None for e in entries):
                dense = torch.ones_like(self.params[name][0], dtype=torch.bool)
                self.masks[name] = torch.stack([dense if e is None else e.to(device) for e in entries]).to(
                    self.params[name].dtype
                )

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero every member's pruned weights (after each step, as the plain loop's callback does)."""
        for name, mask in self.masks.items():
            self.params[name].mul_(mask)

    @torch.no_grad()
    def keep(self, kept: Sequence[int], optimizer: torch.optim.Optimizer) -> None:
        """Keep only the members at positions ``kept``: their slices of the parameters, masks and ``optimizer``'s
        state (whose parameters become the new stacked tensors)."""
        index = torch.tensor(list(kept), device=self.device)
        renamed = {}
        for name, old in self.params.items():
            self.params[name] = old.detach().index_select(0, index).requires_grad_(True)
            renamed[old] = self.params[name]
            state = optimizer.state.pop(old, None)
            if state is not None:  # per-element state sliced; scalars (Adam's step count) kept
                optimizer.state[self.params[name]] = {
                    k: v.index_select(0, index) if torch.is_tensor(v) and v.dim() else v for k, v in state.items()
                }
        for group in optimizer.param_groups:
            group["params"] = [renamed[p] for p in group["params"]]
        self.masks = {name: mask.index_select(0, index) for name, mask in self.masks.items()}
        self.members = [self.members[k] for k in kept]

    @torch.no_grad()
    def unstack(self) -> None:
        """Copy each member's slice of the stacked parameters into its own network."""
        for k, member in enumerate(self.members):
            for name, p in member.module.model.named_parameters():
                p.copy_(self.params[name][k].to(p.device))

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member ``k``'s weights as its module's state dict (``model.<name>``), detached copies."""
        return {f"model.{name}": p[k].detach().clone().cpu() for name, p in self.params.items()}

    @torch.no_grad()
    def evaluate(self, split: str, params: dict[str, torch.Tensor] | None = None) -> list[tuple[float, float]]:
        """Every member's (loss, accuracy) on its own ``split``: the mean over the split's samples."""
        params = self.params if params is None else params
        splits = [m.data.splits[split] for m in self.members]
        size, batch = len(splits[0][1]), self.members[0].cfg.train.eval_batch_size
        loss_sum = torch.zeros(len(self.members), dtype=torch.float64, device=self.device)
        correct = torch.zeros(len(self.members), dtype=torch.int64, device=self.device)
        for lo in range(0, size, batch):
            x = torch.stack([s[0][lo : lo + batch] for s in splits]).to(self.device)
            y = torch.stack([s[1][lo : lo + batch] for s in splits]).to(self.device)
            logits = self.forward(params, x)
            losses = vmap(lambda z, t: F.cross_entropy(z, t, reduction="sum"))(logits, y)
            loss_sum += losses.double()
            correct += (logits.argmax(-1) == y).sum(-1)
        return [(float(s) / size, int(c) / size) for s, c in zip(loss_sum.tolist(), correct.tolist(), strict=True)]


def member_batches(member: Member, start: int) -> TensorBatches:
    """The member's training batches from iteration ``start`` of its data order (as the plain loop draws them)."""
    data = member.data
    x, y = data.splits["train"]
    batches = TensorBatches(x, y, data.batch_size, shuffle=True, seed=data.seed, augment=data.augment)
    if start:
        epoch, step = divmod(start, len(batches))
        batches.load_state_dict({"epoch": epoch, "batch": step})
    return batches


class Draws:
    """Every member's next batch, stacked, each member cycling through its own epochs."""

    def __init__(self, members: Sequence[Member], start: int, device: torch.device) -> None:
        self.batches = [member_batches(m, start) for m in members]
        self.iters = [iter(b) for b in self.batches]
        self.device = device

    def keep(self, kept: Sequence[int]) -> None:
        """Keep drawing for the members at positions ``kept`` only."""
        self.batches, self.iters = [self.batches[k] for k in kept], [self.iters[k] for k in kept]

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for k, batches in enumerate(self.batches):
            try:
                x, y = next(self.iters[k])
            except StopIteration:  # a new epoch: iter() starts the epoch after the last one begun
                self.iters[k] = iter(batches)
                x, y = next(self.iters[k])
            xs.append(x)
            ys.append(y)
        return torch.stack(xs).to(self.device), torch.stack(ys).to(self.device)


def _optimiser(stack: Stack) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The members' optimiser over the stacked parameters and its schedule, fast-forwarded to the round's offset."""
    first = stack.members[0]
    optimizer = hydra.utils.instantiate(thawed(first.cfg.optim.optimizer))(list(stack.params.values()))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, first.module.lr_factor)
    for _ in range(first.ticket.schedule_offset()):
        optimizer.step()  # no gradients: nothing moves, the schedule advances as the plain loop's does
        scheduler.step()
    return optimizer, scheduler


def _log_steps(stack: Stack, optimiser: str, stepped: tuple[float, torch.Tensor], iteration: int) -> None:
    """Log the learning rate and each member's loss of ``iteration`` (``stepped``) where its step log is due."""
    lr, losses = stepped
    logs = [m.steps for m in stack.members]
    if not any(log is not None and log.due(iteration) for log in logs):
        return
    for log, loss in zip(logs, losses.detach().tolist(), strict=True):
        if log is not None and log.due(iteration):
            log.log({f"lr-{optimiser}": lr}, iteration, epoch=False)  # as Lightning's LearningRateMonitor
            log.log({"train_loss": loss}, iteration)


def _watch(stack: Stack, watches: list[Watch], train_losses: list[float], iteration: int) -> dict[int, str]:
    """Evaluate (and log) every member of the stack (``watches`` and ``train_losses`` by its position); keep the
    early-stop point of those whose validation loss is a new lowest; return, by position, why each member whose loss
    is not finite has diverged (the plain loop's words: validation loss checked first, then last training loss)."""
    diverged = {}
    for k, ((loss, acc), train_loss) in enumerate(zip(stack.evaluate("val"), train_losses, strict=True)):
        if stack.members[k].steps is not None:
            stack.members[k].steps.log({"val_loss": loss, "val_acc": acc}, iteration)
        for key, value in (("val_loss", loss), ("train_loss", train_loss)):
            if not math.isfinite(value):
                diverged[k] = f"{key} is {value} at iteration {iteration}"
                break
        else:
            if watches[k].state is None or loss < watches[k].metrics["val_loss"]:
                watches[k] = Watch(iteration, {"val_loss": loss, "val_acc": acc}, stack.member_state(k))
    return diverged


def fit_stack(members: Sequence[Member], span: Span, device: torch.device) -> tuple[list[Watch], float, dict[int, str]]:
    """Train every member ``span.steps`` iterations from its current (masked) weights, in lockstep; leave each
    member's module at its last weights and return each member's early-stop point, the seconds it took, and, by
    index in ``members``, why each member that diverged did (it left the stack then; its module is left as it was).

    In round 0 a rewind to a Step records the members' weights at that iteration (``ticket.rewind_state``).
    """
    started = time.perf_counter()
    moved: dict[int, dict] = {}  # splits shared by members are moved once
    for m in members:
        splits = m.data.splits
        m.data.splits = moved.setdefault(id(splits), {k: (x.to(device), y.to(device)) for k, (x, y) in splits.items()})
        m.ticket.apply_mask(m.module)
        at_start = rewind_entry(m.ticket.rewind).has(FROM_INITIALISATION) or m.ticket.rewind == Step()
        if m.ticket.round_index == 0 and at_start and m.ticket.rewind_state is None:  # as the plain loop records it
            m.ticket.rewind_state = {k: v.detach().clone() for k, v in m.module.state_dict().items()}
    stack = Stack(members, device)
    optimizer, scheduler = _optimiser(stack)
    draws, cadence = Draws(members, span.start, device), EvaluationCadence(span.start, span.eval_every, span.total)
    watches, diverged, alive = [Watch() for _ in members], {}, list(range(len(members)))
    rewind_at = _rewind_iteration(members[0])
    for trained in range(1, span.steps + 1):
        x, y = draws.next()
        losses = vmap(F.cross_entropy)(stack.forward(stack.params, x), y)
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        stack.apply_masks()
        _log_steps(stack, type(optimizer).__name__, (lr, losses), span.start + trained)
        if rewind_at is not None and trained >= rewind_at and stack.members[0].ticket.rewind_state is None:
            for k, m in enumerate(stack.members):
                m.ticket.rewind_state = stack.member_state(k)
        if cadence.due(span.start + trained):
            mine = [watches[i] for i in alive]
            lost = _watch(stack, mine, losses.detach().tolist(), span.start + trained)
            for k, i in enumerate(alive):
                watches[i] = mine[k]
            if lost:  # a diverged member leaves the stack: the others train on as they would without it
                diverged.update({alive[k]: why for k, why in lost.items()})
                kept = [k for k in range(len(alive)) if k not in lost]
                if not kept:
                    break
                stack.keep(kept, optimizer)
                draws.keep(kept)
                alive = [alive[k] for k in kept]
    if len(diverged) < len(members):
        stack.unstack()
    return watches, time.perf_counter() - started, diverged


def _rewind_iteration(member: Member) -> int | None:
    """The round-0 iteration where a rewind to a Step records its weights (None: not this round, or recorded)."""
    ticket = member.ticket
    if ticket.round_index != 0 or ticket.rewind_state is not None or not isinstance(ticket.rewind, Step):
        return None
    return ticket.rewind.to_iterations(ticket.iterations_per_epoch or 0)


def tested(
    members: Sequence[Member], states: Sequence[dict[str, torch.Tensor]], device: torch.device
) -> list[tuple[float, float]]:
    """Every member's test (loss, accuracy) with the weights of its ``states`` entry (``model.<name>`` state dicts)."""
    stack = Stack(members, device)
    params = {name: torch.stack([s[f"model.{name}"] for s in states]).to(device) for name in stack.params}
    return stack.evaluate("test", params)
