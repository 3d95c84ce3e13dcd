"""What the framework needs from a model, in one place: its prunable tensors, its output layer, and how it shrinks.

Each is found from the model itself, or declared by the model with an optional attribute or method:

- prunable tensors (:func:`prunable_candidates`): by default the ``weight`` of every Linear, Conv and Hugging Face
  ``Conv1D`` (GPT-2 style, recognised by its class, so transformers need not be installed) and the input projection
  of every ``nn.MultiheadAttention``. A model replaces the default with ``lth_prunable() -> list of parameter names``.
- the output layer (:func:`output_layer`): the module a model names with ``lth_output = "<module name>"``, else the
  module called ``out`` (the zoo), else the last Linear (or Conv1D) in module order.
- shrinking (:func:`as_chain`): a model that is a plain chain of layers says so with ``lth_chain() -> nn.Sequential``
  (raising :class:`NotShrinkable` with the reason where it is not); an ``nn.Sequential`` is its own chain.

Export, shrinking, the controls and transfer of masks ask here and list no model classes.
A module reparametrised by ``torch.nn.utils.prune`` (``weight_orig`` + ``weight_mask``) is never skipped: it is a
:class:`~lth.core.errors.ConfigError` saying how to import it (:func:`reparametrised`).
"""

from __future__ import annotations

import copy

from torch import nn

from lth.core.errors import ConfigError

PRUNABLE_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
ATTENTION_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


class NotShrinkable(ValueError):
    """A model whose units cannot be removed layer by layer; the message says why."""


def is_hf_conv1d(module: nn.Module) -> bool:
    """True for Hugging Face's ``Conv1D`` (a Linear with its weight transposed, as GPT-2 uses)."""
    kind = type(module)
    return kind.__name__ == "Conv1D" and kind.__module__.startswith("transformers")


def reparametrised(model: nn.Module) -> list[str]:
    """The parameters of ``model`` that ``torch.nn.utils.prune`` reparametrised (``<name>_orig`` + ``<name>_mask``)."""
    found = []
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for name, _ in module.named_parameters(recurse=False):
            base = name.removesuffix("_orig")
            if name.endswith("_orig") and f"{base}_mask" in dict(module.named_buffers(recurse=False)):
                found.append(f"{prefix}{base}")
    return found


def prunable_candidates(model: nn.Module) -> dict[str, tuple[str, nn.Parameter]]:
    """Parameter name -> (module name, parameter) of every tensor pruned by default, in module order.

    A model (or any submodule) declaring ``lth_prunable()`` names its own (parameter names relative to itself).
    """
    pruned = reparametrised(model)
    if pruned:
        raise ConfigError(
            "model",
            f"{pruned[0]} is reparametrised by torch.nn.utils.prune (weight_orig + weight_mask, "
            f"{len(pruned)} tensor(s)); import it with lth.core.interop.import_pruned(model), or pass its saved "
            "state_dict as prune.mask_from=<file> and model.weights=<file>",
        )
    candidates: dict[str, tuple[str, nn.Parameter]] = {}
    declared = [(n, m) for n, m in model.named_modules() if callable(getattr(m, "lth_prunable", None))]
    for module_name, module in declared:
        prefix = f"{module_name}." if module_name else ""
        params = dict(module.named_parameters())
        for name in module.lth_prunable():
            if name not in params:
                raise ConfigError("model", f"{type(module).__name__}.lth_prunable() names {name!r}, not a parameter")
            candidates[f"{prefix}{name}"] = (f"{prefix}{name}".rsplit(".", 1)[0], params[name])
    owners = tuple(f"{n}." if n else "" for n, _ in declared)
    for module_name, module in model.named_modules():
        if owners and any(f"{module_name}.".startswith(o) for o in owners):
            continue  # a declaring module decides for everything below it
        prefix = f"{module_name}." if module_name else ""
        if (isinstance(module, PRUNABLE_MODULES) or is_hf_conv1d(module)) and isinstance(module.weight, nn.Parameter):
            candidates[f"{prefix}weight"] = (module_name, module.weight)
        elif isinstance(module, nn.MultiheadAttention):
            for attr in ATTENTION_WEIGHTS:
                if isinstance(getattr(module, attr, None), nn.Parameter):
                    candidates[f"{prefix}{attr}"] = (module_name, getattr(module, attr))
    # a tensor shared by two modules (GPT-2's output layer is its embedding) goes by the name named_parameters gives it
    canonical = {id(p): n for n, p in model.named_parameters()}
    shared = {n: canonical[id(p)] for n, (_, p) in candidates.items() if canonical.get(id(p), n) != n}
    for n, first in shared.items():
        candidates.setdefault(first, (first.rsplit(".", 1)[0], candidates.pop(n)[1]))
    return candidates


def output_layer(model: nn.Module) -> str:
    """The module name of ``model``'s output layer (see the module docstring for how it is found)."""
    modules = dict(model.named_modules())
    declared = getattr(model, "lth_output", None)
    if declared is not None:
        if declared not in modules:
            raise ConfigError("model", f"{type(model).__name__}.lth_output names {declared!r}, not a module")
        return declared
    if "out" in modules:
        return "out"
    last = [n for n, m in modules.items() if isinstance(m, nn.Linear) or is_hf_conv1d(m)]
    if not last:
        raise ConfigError("model", f"{type(model).__name__} has no Linear layer; name its output with lth_output")
    return last[-1]


def as_chain(model: nn.Module) -> nn.Sequential:
    """A copy of ``model`` as one ``nn.Sequential`` of standard layers computing the same function.

    The model's own ``lth_chain()`` where it has one; an ``nn.Sequential`` as it is; else :class:`NotShrinkable`.
    """
    chain = getattr(model, "lth_chain", None)
    if callable(chain):
        return copy.deepcopy(chain())
    if isinstance(model, nn.Sequential):
        return copy.deepcopy(model)
    raise NotShrinkable(
        f"{type(model).__name__} declares no lth_chain() (a plain chain of layers that computes the same function); "
        "removing units applies to plain chains only"
    )
