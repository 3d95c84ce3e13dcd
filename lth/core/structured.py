"""Structured sparsity kept as masks: whole channels tied through a dependency graph, and n:m groups of weights.

The masks stay :class:`~lth.core.masks.Mask` objects over the same weight tensors as unstructured pruning, so
rewinding, the controls and resume work unchanged; only which entries a round removes differs.

- ``channel``: a *channel* is one output channel of a Conv layer (one unit of a Linear layer) together with
  everything tied to it. torch-pruning's dependency graph (DepGraph, Fang et al. 2023) finds the ties, generically:
  the producers' weight rows, the consumers' weight columns (the next layer's input channels, several per channel
  after a flatten), biases and BatchNorm entries, and, in a residual network, every layer that writes into the same
  channel of the skip path. Removing a channel zeroes the weight rows and columns in the mask, and the biases and
  BatchNorm weight and bias of the channel follow the mask (:meth:`StructuredPruning.coupled`), so a removed
  channel is exactly zero everywhere and the shrunk model of the export computes the same function. Each round
  removes ``round(rate x surviving channels)`` channels (of all groups together, or of each group alone with
  ``prune.scope=layer``), ranked by ``prune.channel_criterion``: ``l1`` (mean |w| of the channel's filter(s)),
  ``l2`` (root mean square) or ``bn_scale`` (mean |BatchNorm weight|, network slimming). Every group keeps at
  least one channel. The output layer's units are never removed.
- ``n:m``: along the input dimension (a weight's row, flattened over the kernel for a Conv) exactly ``n`` of every
  ``m`` consecutive weights survive, those of largest magnitude (ties: the earlier one). Round r of R keeps
  ``m - round((m - n) r / R)`` per group, so the last round lands on n:m.

The controls keep the structure: ``shuffle`` draws which channels (which weights of each m-group) survive at random
with the ticket's counts per group, ``random_prune`` removes random survivors of the previous control mask down to
the ticket's counts per group, and ``reinit`` keeps the mask.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from lth.core.catalog import CONTROLS, KEEPS_MASK, PRUNES_SURVIVORS, draw_of
from lth.core.controls import ControlFn
from lth.core.errors import ConfigError
from lth.core.granularity import CHANNEL_CRITERIA, KEY, Granularity
from lth.core.masks import Mask, removal_count, round_half_up

CHANNEL_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


# -- n:m --------------------------------------------------------------------------------------------------------
def check_nm(params: Mapping[str, torch.Tensor], granularity: Granularity) -> None:
    """Refuse a tensor whose input width (a row's length) is not a multiple of ``m``."""
    for name, p in params.items():
        width = p[0].numel() if p.dim() >= 2 else 0
        if p.dim() < 2 or width % granularity.m:
            raise ConfigError(
                KEY,
                f"{granularity} needs input widths that are multiples of {granularity.m}; {name} {tuple(p.shape)} "
                f"has {width} (leave it out with prune.exclude)",
            )


def nm_keep(granularity: Granularity, round_index: int, rounds: int) -> int:
    """Weights of every m-group that survive round ``round_index`` of ``rounds``."""
    n, m = granularity.n, granularity.m
    return m - round_half_up((m - n) * min(round_index, rounds) / max(rounds, 1))


def _top_per_group(scores: torch.Tensor, keep: int, m: int) -> torch.Tensor:
    """True at the ``keep`` highest scores of every ``m`` consecutive entries of each row (ties: the earlier)."""
    groups = scores.reshape(scores.shape[0], -1, m)
    order = torch.sort(groups, dim=-1, descending=True, stable=True).indices[..., :keep]
    out = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, order, True)
    return out.reshape(scores.shape)


def prune_nm(weights: Mapping[str, torch.Tensor], mask: Mask, granularity: Granularity, keep: int) -> Mask:
    """The mask keeping the ``keep`` largest-magnitude survivors of every m-group of every tensor."""
    out = Mask()
    for name, m in mask.items():
        scores = weights[name].detach().abs().float().masked_fill(~m, -1.0)  # pruned entries rank last
        out[name] = _top_per_group(scores, keep, granularity.m) & m
    return out


# -- channels ---------------------------------------------------------------------------------------------------
@dataclass
class Slice:
    """The entries of one tensor that the channels of a group own: positions ``index`` along ``dim``, position i
    belonging to channel ``channel[i]``."""

    name: str
    dim: int
    index: torch.Tensor
    channel: torch.Tensor


@dataclass
class ChannelGroup:
    """Channels removed together: ``root`` (the module whose output channels they are), the weight rows of the
    producers (``outputs``), the weight columns of the consumers (``inputs``), and the biases and BatchNorm
    entries (``coupled``; ``scales`` the BatchNorm weights among them)."""

    root: str
    channels: int
    outputs: list[Slice] = field(default_factory=list)
    inputs: list[Slice] = field(default_factory=list)
    coupled: list[Slice] = field(default_factory=list)
    scales: list[Slice] = field(default_factory=list)


def output_layers(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """The Conv/Linear layers whose output is the model's output (their units are the classes)."""
    seen: list[tuple[nn.Module, torch.Tensor]] = []
    hooks = [
        m.register_forward_hook(lambda mod, args, out: seen.append((mod, out)))
        for m in model.modules()
        if isinstance(m, CHANNEL_LAYERS)
    ]
    try:
        with torch.no_grad():
            result = model(example)
    finally:
        for hook in hooks:
            hook.remove()
    return [mod for mod, out in seen if out is result]


def _positions(values: list) -> torch.Tensor:
    return torch.tensor([int(getattr(v, "idx", v)) for v in values], dtype=torch.long)


def channel_groups(model: nn.Module, params: Mapping[str, torch.Tensor], example: torch.Tensor) -> list[ChannelGroup]:
    """The channel groups of ``model`` whose producers are all among ``params`` (the prunable weights, by name).

    ``example`` is one input batch; the graph is traced on a copy of the model in eval mode (no state changes).
    A prunable tensor that is not the weight of a Conv/Linear layer, a grouped convolution, or a group holding a
    layer with parameters other than Conv, Linear and BatchNorm is a config error naming ``prune.granularity``.
    """
    import torch_pruning as tp  # imported here: weight and n:m pruning do not need it

    copied = copy.deepcopy(model).eval()
    names = {m: n for n, m in copied.named_modules()}
    for name in params:
        module = copied.get_submodule(name.rsplit(".", 1)[0]) if "." in name else copied
        if not (isinstance(module, CHANNEL_LAYERS) and name.endswith(".weight")):
            raise ConfigError(
                KEY, f"channel removes output channels of Conv and Linear layers; {name} has no channel structure"
            )
        if getattr(module, "groups", 1) != 1:
            raise ConfigError(KEY, f"channel does not prune grouped convolutions like {name}")
    outputs = output_layers(copied, example)
    if not outputs:
        raise ConfigError(KEY, "channel needs a Conv or Linear layer whose output is the model's output; found none")
    with torch.enable_grad():
        graph = tp.DependencyGraph().build_dependency(copied, example_inputs=example)
        found = graph.get_all_groups(ignored_layers=outputs, root_module_types=list(CHANNEL_LAYERS))
        groups = []
        for group in found:
            built = _group(group, names, params, outputs)
            if built is not None:
                groups.append(built)
    return groups


def _group(group: list, names: dict, params: Mapping[str, torch.Tensor], outputs: list) -> ChannelGroup | None:
    """One DepGraph group as slices of named tensors; None where a producer is not prunable."""
    items = list(group)
    root = items[0].dep.target.module
    built = ChannelGroup(names[root], 1 + max(int(r) for item in items for r in item.root_idxs))
    for item in items:
        module, handler = item.dep.target.module, getattr(item.dep.handler, "__name__", "")
        index, channel = _positions(item.idxs), torch.as_tensor([int(r) for r in item.root_idxs], dtype=torch.long)
        name = names.get(module)
        direct = list(module.parameters(recurse=False))
        if isinstance(module, CHANNEL_LAYERS):
            if handler == "prune_out_channels":
                if module in outputs or f"{name}.weight" not in params:
                    return None
                built.outputs.append(Slice(f"{name}.weight", 0, index, channel))
                if module.bias is not None:
                    built.coupled.append(Slice(f"{name}.bias", 0, index, channel))
            elif f"{name}.weight" in params:
                built.inputs.append(Slice(f"{name}.weight", 1, index, channel))
        elif isinstance(module, NORMS):
            if module.affine:
                scale = Slice(f"{name}.weight", 0, index, channel)
                built.coupled += [scale, Slice(f"{name}.bias", 0, index, channel)]
                built.scales.append(scale)
        elif direct:
            raise ConfigError(KEY, f"channel cannot remove channels through {name} ({type(module).__name__})")
    return built if built.outputs else None


def _per_channel(values: torch.Tensor, s: Slice, channels: int) -> torch.Tensor:
    """Sum over each channel's entries of ``values`` (a tensor of ``s``'s shape) -> (channels,)."""
    taken = values.index_select(s.dim, s.index.to(values.device)).movedim(s.dim, 0).reshape(len(s.index), -1)
    return torch.zeros(channels, device=values.device).index_add_(0, s.channel.to(values.device), taken.sum(1))


def alive_channels(group: ChannelGroup, mask: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """True for each channel of ``group`` whose producers keep a weight in ``mask``."""
    kept = sum(_per_channel(mask[s.name].float(), s, group.channels) for s in group.outputs)
    return kept.cpu() > 0


def channel_scores(
    group: ChannelGroup, values: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], criterion: str
) -> torch.Tensor:
    """How much each channel of ``group`` matters (larger survives): per weight, so layers of any width compare."""
    if criterion == "bn_scale":  # every group has a BatchNorm (StructuredPruning.build checks)
        total = sum(_per_channel(values[s.name].detach().abs().float(), s, group.channels) for s in group.scales)
        return (total / len(group.scales)).cpu()
    power = 1 if criterion == "l1" else 2
    total = sum(
        _per_channel((values[s.name].detach().float() * mask[s.name]).abs() ** power, s, group.channels)
        for s in group.outputs
    )
    ones = (torch.ones_like(mask[s.name], dtype=torch.float) for s in group.outputs)
    count = sum(_per_channel(one, s, group.channels) for one, s in zip(ones, group.outputs, strict=True))
    mean = (total / count).cpu()
    return mean if power == 1 else mean.sqrt()


def channel_mask(groups: list[ChannelGroup], alive: list[torch.Tensor], like: Mapping[str, torch.Tensor]) -> Mask:
    """The weight mask of the tensors of ``like`` that keeps exactly the ``alive`` channels of every group."""
    out = Mask({n: torch.ones_like(m, dtype=torch.bool) for n, m in like.items()})
    for group, keep in zip(groups, alive, strict=True):
        for s in group.outputs + group.inputs:
            _zero(out[s.name], s, keep)
    return out


def _zero(target: torch.Tensor, s: Slice, keep: torch.Tensor) -> None:
    dead = s.index[~keep[s.channel]].to(target.device)
    if len(dead):
        target.index_fill_(s.dim, dead, False)


def coupled_masks(groups: list[ChannelGroup], alive: list[torch.Tensor], shapes: Mapping[str, torch.Size]) -> Mask:
    """Masks of the biases and BatchNorm entries of removed channels (only tensors with a removed entry)."""
    out = Mask()
    for group, keep in zip(groups, alive, strict=True):
        if bool(keep.all()):
            continue
        for s in group.coupled:
            target = out.setdefault(s.name, torch.ones(shapes[s.name], dtype=torch.bool))
            _zero(target, s, keep)
    return out


def prune_channels(
    groups: list[ChannelGroup],
    values: Mapping[str, torch.Tensor],
    mask: Mask,
    rate: float,
    scope: str,
    criterion: str,
) -> Mask:
    """One round: remove ``round(rate x surviving channels)`` of the lowest-scoring channels, of all groups together
    (``scope=global``) or of each group alone (``layer``); ties by group, then channel order; each group keeps one.
    A weight ``mask`` pruned already (round 0 from ``prune.mask_from``) stays pruned inside the channels kept."""
    alive = [alive_channels(g, mask) for g in groups]
    pools = [list(range(len(groups)))] if scope == "global" else [[i] for i in range(len(groups))]
    for pool in pools:
        scores = {i: channel_scores(groups[i], values, mask, criterion) for i in pool}
        candidates = [(float(scores[i][c]), i, c) for i in pool for c in range(groups[i].channels) if alive[i][c]]
        count = removal_count(len(candidates), len(candidates), rate, None, 1, 1)
        left = {i: int(alive[i].sum()) for i in pool}
        for _, i, c in sorted(candidates):
            if count == 0:
                break
            if left[i] > 1:
                alive[i][c], left[i], count = False, left[i] - 1, count - 1
    kept = channel_mask(groups, alive, mask)
    return Mask({n: kept[n] & mask[n] for n in kept})


# -- the pruning a granularity does, for the callback ------------------------------------------------------------
class StructuredPruning:
    """Pruning at ``channel`` or ``n:m`` granularity for :class:`~lth.lightning.callback.LotteryTicket`."""

    def __init__(self, granularity: Granularity, criterion: str, groups: list[ChannelGroup] | None = None) -> None:
        if criterion not in CHANNEL_CRITERIA:
            raise ConfigError("prune.channel_criterion", f"got {criterion!r}; allowed: {', '.join(CHANNEL_CRITERIA)}")
        self.granularity, self.criterion, self.groups = granularity, criterion, groups or []

    @classmethod
    def build(
        cls,
        granularity: Granularity,
        criterion: str,
        model: nn.Module,
        params: Mapping[str, torch.Tensor],
        example: torch.Tensor | None,
    ) -> StructuredPruning:
        """Check ``params`` fit the granularity and find the channel groups (``example``: an input batch)."""
        if granularity.kind == "n:m":
            check_nm(params, granularity)
            return cls(granularity, criterion)
        if example is None:
            raise ValueError("channel granularity needs an example input to trace the model")
        groups = channel_groups(model, params, example)
        unscaled = [g.root for g in groups if not g.scales]
        if criterion == "bn_scale" and unscaled:
            raise ConfigError(
                "prune.channel_criterion", f"bn_scale ranks by BatchNorm weight; {unscaled[0]} has no BatchNorm"
            )
        return cls(granularity, criterion, groups)

    def prune(
        self, values: Mapping[str, torch.Tensor], mask: Mask, rate: float, scope: str, round_index: int, rounds: int
    ) -> Mask:
        """The next mask (``round_index`` counts 1..rounds)."""
        if self.granularity.kind == "n:m":
            return prune_nm(values, mask, self.granularity, nm_keep(self.granularity, round_index, rounds))
        return prune_channels(self.groups, values, mask, rate, scope, self.criterion)

    def coupled(self, mask: Mapping[str, torch.Tensor], shapes: Mapping[str, torch.Size]) -> Mask:
        """The biases and BatchNorm entries that ``mask``'s removed channels zero (none for n:m)."""
        if self.granularity.kind == "n:m":
            return Mask()
        return coupled_masks(self.groups, [alive_channels(g, mask) for g in self.groups], shapes)

    def control(self, name: str) -> ControlFn:
        """The control ``name`` at this granularity (drawing channels or m-group entries, never single weights)."""
        entry = CONTROLS.entry(name)
        draw = draw_of(entry)  # each draw the catalog declares is implemented here at this grain
        if draw == KEEPS_MASK:
            return entry.load()
        return self._draw(draw == PRUNES_SURVIVORS)

    def _draw(self, from_previous: bool) -> ControlFn:
        def draw(ticket: Mask, previous: Mask, generator: torch.Generator) -> Mask:
            if self.granularity.kind == "n:m":
                return self._draw_nm(ticket, previous, generator, from_previous)
            alive = []
            for group in self.groups:
                keep = int(alive_channels(group, ticket).sum())
                pool = alive_channels(group, previous) if from_previous else torch.ones(group.channels, dtype=bool)
                scores = torch.rand(group.channels, generator=generator).masked_fill(~pool, -1.0)
                chosen = torch.zeros(group.channels, dtype=torch.bool)
                chosen[torch.sort(scores, descending=True, stable=True).indices[:keep]] = True
                alive.append(chosen)
            out = channel_mask(self.groups, alive, ticket)
            return Mask({n: m.to(ticket[n].device) for n, m in out.items()})

        return draw

    def _draw_nm(self, ticket: Mask, previous: Mask, generator: torch.Generator, from_previous: bool) -> Mask:
        out = Mask()
        m = self.granularity.m
        for name, t in ticket.items():
            keep = int(t.reshape(t.shape[0], -1, m)[0, 0].sum())  # every m-group of the ticket keeps as many
            scores = torch.rand(t.shape, generator=generator)
            if from_previous:
                scores = scores.masked_fill(~previous[name].cpu(), -1.0)
            out[name] = _top_per_group(scores, keep, m).to(t.device)
        return out
