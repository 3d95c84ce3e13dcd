"""The plain weights in other tools' formats: ``model.safetensors`` beside ``model.pt``, and (``--format
torch-prune``) ``model.torch_prune.pt``, a state_dict that a model reparametrised by ``torch.nn.utils.prune`` loads
as is (``load_state_dict(strict=True)``): every pruned tensor as ``<name>_orig`` and ``<name>_mask``
(:func:`lth.core.interop.to_torch_prune`). Lightning's ``ModelPruning`` reparametrises the same way; with
``parameter_names=["weight"]`` (its default also prunes biases, which a ticket keeps) its model loads the file too.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path

import torch

from lth.core.interop import to_torch_prune
from lth.state.artifacts import save_tensors, write_bytes

FORMATS = ("lth", "torch-prune")  # lth: the files of the export alone; torch-prune: model.torch_prune.pt too
TORCH_PRUNE_FILE = "model.torch_prune.pt"


def write_safetensors(out: Path, state: Mapping[str, torch.Tensor]) -> str:
    """``model.safetensors``: ``state`` (a plain state_dict) without pickle; the one-line outcome."""
    if importlib.util.find_spec("safetensors") is None:
        return "skipped: safetensors not installed (pip install safetensors)"
    from safetensors.torch import save

    write_bytes(out / "model.safetensors", save({k: v.contiguous() for k, v in state.items()}))
    return "written: model.safetensors"


def write_torch_prune(out: Path, state: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> str:
    """``model.torch_prune.pt``: ``state`` with the tensors of ``mask`` as ``_orig`` + ``_mask``; the outcome."""
    save_tensors(out / TORCH_PRUNE_FILE, to_torch_prune(state, mask))
    return f"written: {TORCH_PRUNE_FILE} ({len(mask)} tensors as <name>_orig + <name>_mask)"
