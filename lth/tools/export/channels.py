"""Structured tickets made real: a channel ticket as a genuinely smaller dense model, and 2:4 tickets on torch's
semi-structured sparse tensors where the hardware has them.

A channel ticket's removed channels are exactly zero (:mod:`lth.core.structured`), so removing them physically
computes the same function. The removal is done by torch-pruning's dependency graph on the plain model (no per-model
code: residual streams, flattens and concatenations are handled by the graph) and written as ``shrunk.pt2``, a
``torch.export`` program that ``torch.export.load(path).module()`` runs without this project's code (the ONNX file of
:mod:`~lth.tools.export.onnx` is the same model).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from lth.config.run import RunConfig
from lth.core.granularity import Granularity
from lth.core.masks import Mask, prunable_parameters
from lth.core.structured import (
    CHANNEL_LAYERS,
    ChannelGroup,
    alive_channels,
    channel_groups,
    channel_mask,
    coupled_masks,
)
from lth.tools.export.files import written_through

SEMI_STRUCTURED_CAPABILITY = (8, 0)  # NVIDIA Ampere and later run 2:4 sparse matrix products


def example_input(cfg: RunConfig, batch: int = 1) -> torch.Tensor:
    """A zero batch of the run's image shape (what the dependency graph is traced with)."""
    size = cfg.dataset.image_size
    return torch.zeros(batch, cfg.dataset.channels, size, size)


def groups_of(model: nn.Module, cfg: RunConfig) -> list[ChannelGroup]:
    """The channel groups of the plain ``model`` of ``cfg`` (tensor names without the ``model.`` prefix)."""
    p = cfg.prune
    params = prunable_parameters(model, p.include, p.exclude, p.extra)
    return channel_groups(model, params, example_input(cfg))


def fold_channels(state: Mapping[str, torch.Tensor], groups: list[ChannelGroup], mask: Mask) -> dict[str, torch.Tensor]:
    """``state`` with the biases and BatchNorm entries of ``mask``'s removed channels zero (training keeps them zero;
    this makes the rewind point, which was recorded before any pruning, a channel ticket too)."""
    alive = [alive_channels(g, mask) for g in groups]
    coupled = coupled_masks(groups, alive, {n: t.shape for n, t in state.items()})
    return {n: t * coupled[n] if n in coupled else t for n, t in state.items()}


def structure(mask: Mask, granularity: Granularity, groups: list[ChannelGroup]) -> str | None:
    """How ``mask`` departs from the structure its ``granularity`` (channel, n:m) promises, in words, or None where it
    has it: weights pruned inside the channels it keeps (a channel ticket started from a weight mask), or m-groups
    that keep more than n weights (a 2:4 ticket's round 0 from a weight mask, or a round before the last)."""
    if granularity.kind == "channel":
        whole = channel_mask(groups, [alive_channels(g, mask) for g in groups], mask)
        inside = sum(int((whole[n] & ~m).sum()) for n, m in mask.items())
        return f"{inside:,} weights are pruned inside the channels it keeps" if inside else None
    n, m = granularity.n, granularity.m
    kept = [t.reshape(t.shape[0], -1, m).sum(-1) for t in mask.values() if t.dim() >= 2 and t[0].numel() % m == 0]
    over, total = sum(int((k > n).sum()) for k in kept), sum(k.numel() for k in kept)
    return f"{over:,} of its {total:,} groups of {m} weights keep more than {n}" if over else None


@torch.no_grad()
def remove_channels(
    model: nn.Module, groups: list[ChannelGroup], mask: Mask, example: torch.Tensor
) -> tuple[nn.Module, dict[str, list[int]]]:
    """A copy of ``model`` without ``mask``'s removed channels, and ``layer -> [channels before, after]``.

    Each group's removed channels are pruned physically through torch-pruning's dependency graph of the copy.
    """
    import torch_pruning as tp

    small = copy.deepcopy(model).eval()
    widths = {n: m.weight.shape[0] for n, m in small.named_modules() if isinstance(m, CHANNEL_LAYERS)}
    with torch.enable_grad():
        graph = tp.DependencyGraph().build_dependency(small, example_inputs=example)
    for group in groups:
        dead = torch.nonzero(~alive_channels(group, mask)).flatten().tolist()
        if not dead:
            continue
        root = small.get_submodule(group.root)
        handler = tp.prune_linear_out_channels if isinstance(root, nn.Linear) else tp.prune_conv_out_channels
        pruning = graph.get_pruning_group(root, handler, idxs=dead)
        if not graph.check_pruning_group(pruning):
            raise RuntimeError(f"the dependency graph refuses to remove {len(dead)} channels of {group.root}")
        pruning.prune()
    after = {n: m.weight.shape[0] for n, m in small.named_modules() if isinstance(m, CHANNEL_LAYERS)}
    return small, {n: [widths[n], after[n]] for n in widths}


def folded(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) with every BatchNorm that follows a Conv or Linear layer folded into its
    weights: the same function up to float rounding, in fewer operations per call (the program of a ResNet-20
    channel ticket runs about 2x faster at batch 1 on a CPU). ``model`` itself where torch.fx cannot trace it."""
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(model.eval())
    except Exception:  # torch.fx cannot trace every model (control flow on values): shipped unfolded
        return model.eval()


def write_program(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """``model`` as a ``torch.export`` program with a dynamic batch size, its BatchNorms :func:`folded` (loads with
    ``torch.export.load(path).module()``)."""
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(folded(model), (example,), dynamic_shapes=({0: batch},))
    with written_through(path) as tmp:  # a temporary of its own, with the suffix torch.export.save wants
        torch.export.save(program, tmp)


def semi_structured(model: nn.Module, granularity: Granularity, x: torch.Tensor) -> str:
    """Run the Linear layers of a 2:4 ``model`` on torch's semi-structured sparse tensors where the hardware has
    them (an NVIDIA GPU of compute capability 8.0 or later, in float16); the one-line outcome."""
    if (granularity.n, granularity.m) != (2, 4):
        return f"not used: torch's semi-structured sparse tensors are 2:4; this ticket is {granularity}"
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < SEMI_STRUCTURED_CAPABILITY:
        return (
            "not used: torch's semi-structured (2:4) kernels need an NVIDIA GPU of compute capability 8.0+; none "
            "here, so the runtime model is the masked dense one"
        )
    from torch.sparse import to_sparse_semi_structured

    dense = copy.deepcopy(model).half().cuda().eval()
    sparse = copy.deepcopy(dense)
    layers = [m for m in sparse.modules() if isinstance(m, nn.Linear)]
    try:
        for layer in layers:
            layer.weight = nn.Parameter(to_sparse_semi_structured(layer.weight.detach()), requires_grad=False)
    except RuntimeError as error:  # shapes the kernels do not take (too small, not a multiple of their tile)
        return f"not used: {str(error).splitlines()[0]}"
    with torch.inference_mode():
        inputs = x.half().cuda()
        difference = float((sparse(inputs) - dense(inputs)).abs().max())
    return f"used: {len(layers)} Linear layers on semi-structured sparse tensors, outputs within {difference:.1e}"
