"""Masks of other tools as ours, and ours in their format: ``torch.nn.utils.prune`` and open_lth.

- :func:`import_pruned`: a live model reparametrised by ``torch.nn.utils.prune`` (``weight_orig`` + ``weight_mask``)
  back to plain parameters (``weight = weight_orig * weight_mask``, as ``prune.remove`` makes it) and its masks as a
  :class:`~lth.core.masks.Mask`.
- :func:`mask_from_state`: the masks held by a saved mapping: a state_dict saved from a reparametrised model (its
  ``*_mask`` buffers), open_lth's ``mask.pth`` (0/1 integers by parameter name) or our own ``mask.pt`` (booleans).
  A tensor that is not all 0 and 1 is refused, naming it; asked explicitly (``zeros``), a state_dict of plain
  weights is read as a mask instead, its zeros the pruned weights (what Lightning's ``ModelPruning`` saves once it
  made pruning permanent).
- :func:`to_torch_prune`: a plain state_dict and its mask as the state_dict of a reparametrised model (what
  ``load_state_dict`` of a model pruned by ``torch.nn.utils.prune``, and so Lightning's ``ModelPruning``, takes).
- :func:`load_torch_prune`: that state_dict into a plain module, reparametrised first with ``custom_from_mask``; it
  returns what ``ModelPruning(parameters_to_prune=...)`` takes to go on pruning the module.

Pure tensor code: no files, no Lightning.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from lth.core.anatomy import reparametrised
from lth.core.errors import ConfigError
from lth.core.masks import Mask

SUFFIX_ORIG, SUFFIX_MASK = "_orig", "_mask"


def import_pruned(model: nn.Module) -> Mask:
    """Remove ``torch.nn.utils.prune``'s reparametrisation from ``model`` in place; return its masks by name."""
    mask = Mask()
    modules = dict(model.named_modules())
    for name in reparametrised(model):
        module_name, _, attr = name.rpartition(".")
        module = modules[module_name]
        mask[name] = getattr(module, attr + SUFFIX_MASK).detach().bool().clone()
        torch_prune.remove(module, attr)
    return mask


def _binary(name: str, tensor: torch.Tensor, source: str, hint: str) -> torch.Tensor:
    if tensor.dtype != torch.bool and not bool(((tensor == 0) | (tensor == 1)).all()):
        raise ConfigError(source, f"{name} is no mask: its values are not all 0 and 1{hint}")
    return tensor.detach().bool().cpu()


def mask_from_state(
    state: Mapping[str, torch.Tensor], source: str = "mask", zeros: bool = False, hint: str = ""
) -> Mask:
    """The masks of a torch-prune state_dict (``<name>_mask``), an open_lth ``mask.pth`` or a ``mask.pt`` of ours;
    with ``zeros``, of a state_dict of weights too: each tensor's non-zero entries (a weight trained to exactly 0
    reads as pruned). ``hint`` ends the line that refuses a tensor that is no mask."""
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(source, "holds no tensors by name")
    masks = {k[: -len(SUFFIX_MASK)]: v for k, v in state.items() if k.endswith(SUFFIX_MASK)}
    if masks and any(f"{n}{SUFFIX_ORIG}" in state for n in masks):  # saved from a reparametrised model
        return Mask({n: _binary(n + SUFFIX_MASK, v, source, hint) for n, v in masks.items()})
    if zeros:
        return Mask({n: v.detach().cpu() != 0 for n, v in state.items()})
    return Mask({n: _binary(n, v, source, hint) for n, v in state.items()})


def to_torch_prune(state: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with each masked tensor ``<name>`` as ``<name>_orig`` (its values) and ``<name>_mask`` (0/1 in its
    dtype), in the order ``torch.nn.utils.prune`` registers them."""
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if name in mask:
            out[name + SUFFIX_ORIG] = value.clone()
            out[name + SUFFIX_MASK] = mask[name].to(value.dtype).clone()
        else:
            out[name] = value.clone()
    return out


def load_torch_prune(model: nn.Module, state: Mapping[str, torch.Tensor]) -> list[tuple[nn.Module, str]]:
    """Load ``state``, a torch-prune state_dict (``model.torch_prune.pt``), into ``model`` (``strict``): each tensor
    it holds as ``<name>_orig`` + ``<name>_mask`` is reparametrised first by ``torch.nn.utils.prune.custom_from_mask``
    where it is still a plain parameter. Returns those tensors as ``(module, name)`` pairs, which Lightning's
    ``ModelPruning(parameters_to_prune=...)`` takes to prune them further (it finds only plain parameters by name)."""
    modules = dict(model.named_modules())
    pairs = []
    for key in state:
        name = key.removesuffix(SUFFIX_MASK)
        if key == name or name + SUFFIX_ORIG not in state:
            continue
        module_name, _, attr = name.rpartition(".")
        module = modules.get(module_name)
        if module is None or not isinstance(getattr(module, attr, None), torch.Tensor):
            raise ConfigError(name, "is no tensor of the model (the file names the network's tensors: load it there)")
        if not hasattr(module, attr + SUFFIX_ORIG):
            torch_prune.custom_from_mask(module, attr, state[key].to(getattr(module, attr).device))
        pairs.append((module, attr))
    model.load_state_dict(state, strict=True)
    with torch.no_grad():  # the masked tensors of the loaded values, as a forward would compute them, but leaves
        for module, attr in pairs:  # (ModelPruning deep-copies each module before its first forward)
            setattr(module, attr, getattr(module, attr + SUFFIX_ORIG) * getattr(module, attr + SUFFIX_MASK))
    return pairs
