"""``shrunk.pt``: the same function as smaller dense layers, the units (neurons, channels) whose incoming or outgoing
weights are all pruned removed.

Only plain chains of Linear/Conv layers shrink: a model gives its chain with ``lth_chain()`` (the LeNets, Conv-2/4/6,
VGG; see :func:`lth.core.anatomy.as_chain`); residual networks and ViT are :class:`NotShrinkable`. The file holds the
layers as plain data (:func:`chain_spec`) and the ``state_dict``, so any ``nn.Sequential`` of those ``torch.nn`` layers
loads it (:func:`load_shrunk`).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from lth.core.anatomy import NotShrinkable
from lth.core.errors import first_line
from lth.tools.export.errors import ExportError

WEIGHT_LAYERS = (nn.Linear, nn.Conv2d)
CHANNEL_OPS = (nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.BatchNorm2d)  # per channel, keep constants
SPEC_ARGS = {
    "Linear": ("in_features", "out_features"),
    "Conv2d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation"),
    "ReLU": (),
    "Flatten": ("start_dim", "end_dim"),
    "MaxPool2d": ("kernel_size", "stride", "padding", "dilation", "ceil_mode"),
    "AdaptiveAvgPool2d": ("output_size",),
    "BatchNorm2d": ("num_features", "eps", "momentum"),
}


def _units(layer: nn.Module) -> int:
    return layer.weight.shape[0]


def _through(op: nn.Module, value: torch.Tensor) -> torch.Tensor:
    """What a per-channel op makes of channels that are constant ``value``."""
    if isinstance(op, nn.ReLU):
        return value.clamp(min=0)
    if isinstance(op, nn.BatchNorm2d):
        return (value - op.running_mean) / torch.sqrt(op.running_var + op.eps) * op.weight + op.bias
    return value  # pooling and flattening keep a constant channel constant


def _padded(layer: nn.Module) -> bool:
    padding = layer.padding
    return padding != "valid" if isinstance(padding, str) else any(p != 0 for p in padding)


def _shrink_pair(layers: list[nn.Module], a: int, b: int) -> bool:
    """Remove the dead units between weight layers ``a`` and ``b``; True if any went.

    A unit whose outgoing weights are all zero is unused. A unit whose incoming weights are all zero outputs a
    constant; its contribution to layer ``b`` moves into ``b``'s bias, which is exact for a Linear layer and for
    an unpadded convolution (a padded one sees the zero padding at the borders, so such a unit stays unless its
    constant is 0).
    """
    first, second = layers[a], layers[b]
    n = _units(first)
    outgoing = second.weight.reshape(second.weight.shape[0], n, -1)  # (out, unit, inputs of that unit)
    out_dead = (outgoing == 0).all(dim=2).all(dim=0)
    in_dead = (first.weight.reshape(n, -1) == 0).all(dim=1)
    value = first.bias.detach().clone() if first.bias is not None else torch.zeros(n)
    for op in layers[a + 1 : b]:
        value = _through(op, value)
    foldable = isinstance(second, nn.Linear) or not _padded(second)
    remove = out_dead | (in_dead & (foldable | (value == 0)))
    if remove.all():
        remove[0] = False  # keep one unit so every layer stays well-formed
    if not remove.any():
        return False
    moved = remove & ~out_dead & (value != 0)
    if moved.any():
        shift = (outgoing[:, moved] * value[moved].view(1, -1, 1)).sum(dim=(1, 2))
        second.bias = nn.Parameter(shift if second.bias is None else second.bias.detach() + shift)
    keep = ~remove
    first.weight = nn.Parameter(first.weight.detach()[keep])
    if first.bias is not None:
        first.bias = nn.Parameter(first.bias.detach()[keep])
    setattr(first, "out_features" if isinstance(first, nn.Linear) else "out_channels", int(keep.sum()))
    for op in layers[a + 1 : b]:
        if isinstance(op, nn.BatchNorm2d):
            op.weight, op.bias = nn.Parameter(op.weight.detach()[keep]), nn.Parameter(op.bias.detach()[keep])
            op.running_mean, op.running_var = op.running_mean[keep], op.running_var[keep]
            op.num_features = int(keep.sum())
    second.weight = nn.Parameter(
        outgoing.detach()[:, keep].reshape(second.weight.shape[0], -1, *second.weight.shape[2:])
    )
    setattr(second, "in_features" if isinstance(second, nn.Linear) else "in_channels", second.weight.shape[1])
    return True


@torch.no_grad()
def shrink(chain: nn.Sequential) -> tuple[nn.Sequential, dict[str, list[int]]]:
    """A smaller dense copy of ``chain`` computing the same function, and ``layer -> [units before, after]``.

    Units are removed between consecutive weight layers until none is dead (removing one can kill another).
    The network's inputs and outputs stay as they are.
    """
    names, layers = list(chain._modules), [copy.deepcopy(m) for m in chain]
    for name, layer in zip(names, layers, strict=True):
        if not isinstance(layer, WEIGHT_LAYERS + CHANNEL_OPS):
            raise NotShrinkable(f"{name} is a {type(layer).__name__}; chains of {SPEC_ARGS.keys()} shrink")
        if isinstance(layer, nn.Conv2d) and layer.groups != 1:
            raise NotShrinkable(f"{name} is a grouped convolution")
        if isinstance(layer, nn.BatchNorm2d) and not (layer.track_running_stats and layer.affine):
            raise NotShrinkable(f"{name} normalises with batch statistics")
    weighted = [i for i, m in enumerate(layers) if isinstance(m, WEIGHT_LAYERS)]
    before = {names[i]: _units(layers[i]) for i in weighted}
    while any([_shrink_pair(layers, a, b) for a, b in zip(weighted, weighted[1:], strict=False)]):
        pass
    units = {names[i]: [before[names[i]], _units(layers[i])] for i in weighted}
    return nn.Sequential(OrderedDict(zip(names, layers, strict=True))), units


def chain_spec(chain: nn.Sequential) -> list[dict]:
    """The layers of a chain as plain data (what :func:`build_chain` rebuilds it from)."""
    spec = []
    for name, m in chain.named_children():
        kind = type(m).__name__
        entry = {"name": name, "type": kind, **{a: getattr(m, a) for a in SPEC_ARGS[kind]}}
        if isinstance(m, WEIGHT_LAYERS):
            entry["bias"] = m.bias is not None
        spec.append(entry)
    return spec


def build_chain(spec: list[dict]) -> nn.Sequential:
    """The ``nn.Sequential`` of a :func:`chain_spec`."""
    layers = OrderedDict()
    for entry in spec:
        args = {k: v for k, v in entry.items() if k not in ("name", "type")}
        layers[entry["name"]] = getattr(nn, entry["type"])(**args)
    return nn.Sequential(layers)


def load_shrunk(path: Path) -> nn.Sequential:
    """The shrunk model saved by :func:`export` (``shrunk.pt``), in eval mode."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        chain = build_chain(saved["layers"])
        chain.load_state_dict(saved["state_dict"], strict=True)
    except Exception as error:
        raise ExportError(str(path), f"cannot be read ({first_line(error)})") from None
    return chain.eval()
