"""``model.onnx``: the runtime model exported to ONNX with a dynamic batch size, then run in onnxruntime and compared
with torch (the export says so in one line where the ``deploy`` extra, onnx, onnxscript and onnxruntime, is missing)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from lth.tools.export.files import written_through

PACKAGES = ("onnx", "onnxscript", "onnxruntime")


def missing_packages() -> list[str]:
    """The packages of the ``deploy`` extra that are not installed."""
    return [name for name in PACKAGES if importlib.util.find_spec(name) is None]


def write_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> str:
    """Export ``model`` to ONNX at ``path``; the one-line outcome (skipped where the packages are missing)."""
    missing = missing_packages()
    if missing:
        return f"skipped: {' and '.join(missing)} not installed (pip install -e '.[deploy]')"
    batch = torch.export.Dim("batch", min=1)
    with written_through(path) as tmp:  # a killed export leaves no half-written model.onnx
        torch.onnx.export(
            model.eval(),
            (example,),
            str(tmp),
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


def onnx_session(path: Path, threads: int | None = None):  # noqa: ANN201 - onnxruntime's InferenceSession
    """An onnxruntime CPU session of ``path`` (``threads``: intra-op threads, default onnxruntime's)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_outputs(path: Path, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The outputs of the ONNX model at ``path`` for ``x``, run in onnxruntime, in batches."""
    session = onnx_session(path)
    name = session.get_inputs()[0].name
    parts = [session.run(None, {name: x[i : i + batch_size].numpy()})[0] for i in range(0, len(x), batch_size)]
    return torch.cat([torch.from_numpy(p) for p in parts])
