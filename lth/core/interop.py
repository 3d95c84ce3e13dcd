"""Masks of other tools as ours, and ours in their format: ``torch.nn.utils.prune`` and open_lth.

- :func:`import_pruned`: a live model reparametrised by ``torch.nn.utils.prune`` (``weight_orig`` + ``weight_mask``)
  back to plain parameters (``weight = weight_orig * weight_mask``, as ``prune.remove`` makes it) and its masks as a
  :class:`~lth.core.masks.Mask`.
- :func:`mask_from_state`: the masks held by a saved mapping: a state_dict saved from a reparametrised model (its
  ``*_mask`` buffers), open_lth's ``mask.pth`` (0/1 integers by parameter name) or our own ``mask.pt`` (booleans).
  A tensor that is not all 0 and 1 is refused, naming it.
- :func:`to_torch_prune`: a plain state_dict and its mask as the state_dict of a reparametrised model (what
  ``load_state_dict`` of a model pruned by ``torch.nn.utils.prune``, and so Lightning's ``ModelPruning``, takes).

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


def _binary(name: str, tensor: torch.Tensor, source: str) -> torch.Tensor:
    if tensor.dtype != torch.bool and not bool(((tensor == 0) | (tensor == 1)).all()):
        raise ConfigError(source, f"{name} is no mask: its values are not all 0 and 1")
    return tensor.detach().bool().cpu()


def mask_from_state(state: Mapping[str, torch.Tensor], source: str = "mask") -> Mask:
    """The masks of a torch-prune state_dict (``<name>_mask``), an open_lth ``mask.pth`` or a ``mask.pt`` of ours."""
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(source, "holds no tensors by name")
    masks = {k[: -len(SUFFIX_MASK)]: v for k, v in state.items() if k.endswith(SUFFIX_MASK)}
    if masks and any(f"{n}{SUFFIX_ORIG}" in state for n in masks):  # saved from a reparametrised model
        return Mask({n: _binary(n + SUFFIX_MASK, v, source) for n, v in masks.items()})
    return Mask({n: _binary(n, v, source) for n, v in state.items()})


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
