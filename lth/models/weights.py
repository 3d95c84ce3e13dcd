"""Pre-trained weights from a local file or folder (``model.weights``): read, matched to the model, loaded.

A file is a ``state_dict`` saved with ``torch.save`` (``.pt``/``.pth``/``.bin``; a Lightning checkpoint's
``state_dict`` too) or ``safetensors`` (``.safetensors``); a folder holds ``model.safetensors`` or
``pytorch_model.bin`` (what transformers' ``save_pretrained`` writes). A state_dict saved from a model reparametrised
by ``torch.nn.utils.prune`` gives each pruned tensor as ``weight_orig * weight_mask``.

Every tensor must fit the model by name and shape, except those of the output layer
(:func:`lth.core.anatomy.output_layer`), which keep their fresh initialisation when the classes differ (a new head);
anything else that does not fit is one line naming ``model.weights``. A model that reads its own files (the
transformers wrapper) says so with ``lth_load_weights(path) -> state_dict``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from lth.core.anatomy import output_layer
from lth.core.errors import ConfigError, first_line

log = logging.getLogger("lth")
FOLDER_FILES = ("model.safetensors", "pytorch_model.bin")


def weights_file(path: str | Path) -> Path:
    """The file ``path`` names: itself, or the weights file inside a folder."""
    path = Path(path)
    if path.is_dir():
        for name in FOLDER_FILES:
            if (path / name).is_file():
                return path / name
        raise ConfigError("model.weights", f"{path} holds none of {', '.join(FOLDER_FILES)}")
    if not path.is_file():
        raise ConfigError("model.weights", f"{path} is not a file or folder")
    return path


def read_state(path: str | Path, key: str = "model.weights", fold: bool = True) -> dict[str, torch.Tensor]:
    """The tensors of a weights file or folder, by name, on the CPU; ``fold``: tensors reparametrised by
    ``torch.nn.utils.prune`` as ``weight_orig * weight_mask`` under their own name (else as saved)."""
    file = weights_file(path)
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # torch says more than a line about files that are not its own
        reason = "not a torch file of tensors" if "weights_only" in str(error) else first_line(error)
        raise ConfigError(key, f"{file} cannot be read ({reason})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):  # a Lightning checkpoint
        state = {k.removeprefix("model."): v for k, v in state["state_dict"].items()}
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(key, f"{file} holds no state_dict (a mapping of names to tensors)")
    for name in [k for k in state if fold and k.endswith("_orig") and f"{k[:-5]}_mask" in state]:
        base = name[:-5]
        state[base] = state.pop(name) * state.pop(f"{base}_mask")
    return state


def load_weights(model: nn.Module, path: str | Path) -> list[str]:
    """Load the weights of ``path`` into ``model``; return the names left at their initialisation (a new head)."""
    own_reader = getattr(model, "lth_load_weights", None)
    state = own_reader(path) if callable(own_reader) else read_state(path)
    own = model.state_dict()
    head = output_layer(model) + "."
    unknown = [k for k in state if k not in own]
    misfit = [k for k in state if k in own and state[k].shape != own[k].shape]
    missing = [k for k in own if k not in state]
    wrong = unknown + [k for k in misfit + missing if not k.startswith(head)]
    if wrong:
        what = "unknown to the model" if wrong[0] in unknown else "missing or of another shape"
        raise ConfigError(
            "model.weights",
            f"{path} does not fit the model: {wrong[0]} is {what} ({len(wrong)} tensor(s); only the output layer "
            f"{head[:-1]} may differ)",
        )
    fresh = sorted(set(misfit + missing))
    bad = next(
        (k for k in state if k not in fresh and state[k].is_floating_point() and not state[k].isfinite().all()), None
    )
    if bad is not None:  # it would train to a val_loss of nan in round 0, and so again in every rerun
        raise ConfigError("model.weights", f"{path}: {bad} holds NaN or infinite values; allowed: finite weights")
    model.load_state_dict({**own, **{k: v for k, v in state.items() if k not in fresh}})
    if fresh:
        log.info("model.weights: %s keep their initialisation (a new output layer)", ", ".join(fresh))
    return fresh
