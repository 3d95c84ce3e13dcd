"""``model.onnx``: the runtime model exported to ONNX with a dynamic batch size, where the ``onnx`` packages are
installed (the export says so in one line where they are not)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn


def write_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> str:
    """Export ``model`` to ONNX at ``path``; the one-line outcome (skipped where the packages are missing)."""
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        return f"skipped: {' and '.join(missing)} not installed (pip install {' '.join(missing)})"
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(
        model.eval(),
        (example,),
        str(path),
        input_names=["images"],
        dynamic_shapes=({0: batch},),
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    import onnx

    first = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    if first.dim_param:
        return f"written: {path.name}"
    return f"written: {path.name} (batch size fixed at {first.dim_value}: the exporter could not keep it dynamic)"
