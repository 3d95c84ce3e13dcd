"""Ship a ticket: turn one round of a finished run into files that work without this project's training code.

From a run folder (``config.yaml``, ``rounds.csv``, ``rewind.pt``, ``round_XX/mask.pt`` and ``early_stop.pt``)
:func:`export` writes, for one round, one module per thing made:

- :mod:`~lth.tools.export.ticket`: reading the run and choosing the round; ``ticket.pt`` (the mask and the rewind
  weights, masked, to retrain it elsewhere) and ``model.pt`` + ``model.yaml`` (the trained weights at the
  early-stop point with the masks folded in, a plain ``state_dict`` the model class loads with ``strict=True``, and
  the ``model``/``dataset`` keys that rebuild it);
- :mod:`~lth.tools.export.shrunk`: ``shrunk.pt``, the same function as smaller dense layers: units (neurons,
  channels) whose incoming or outgoing weights are all pruned are removed. Only plain chains of Linear/Conv layers
  shrink (:func:`as_chain`);
- :mod:`~lth.tools.export.channels`: for a channel ticket, ``shrunk.pt2``, any model (residual ones too) without its
  removed channels, cut through torch-pruning's dependency graph, as a ``torch.export`` program; for a 2:4 ticket, its
  Linear layers on torch's semi-structured sparse tensors where the GPU has them;
- :mod:`~lth.tools.export.lthz`: ``compressed.lthz``, every tensor in the smallest of three encodings
  (:func:`encoded_sizes`), fp32 or fp16 values;
- :mod:`~lth.tools.export.onnx`: ``model.onnx``, the runtime model, checked in onnxruntime (the ``deploy`` extra);
- :mod:`~lth.tools.export.formats`: ``model.safetensors`` beside ``model.pt``, and with ``format="torch-prune"``
  ``model.torch_prune.pt`` (``weight_orig`` + ``weight_mask``, what a model pruned by ``torch.nn.utils.prune`` loads);
- :mod:`~lth.tools.export.onnx`: ``model.onnx`` when asked and the ``onnx`` packages are installed;
- :mod:`~lth.tools.export.sparse`: the per-layer runtime paths (dense or CSR Linear layers, picked by measurement);
- :mod:`~lth.tools.export.evaluate`: the run's test set and a model's predictions on it;
- :mod:`~lth.tools.export.files`: the export folder's lock (one export writes it at a time), the temporaries of a
  killed export cleared, and atomic writes for the files other libraries write;
- :mod:`~lth.tools.export.ship`: :func:`export` itself (asked by :class:`ExportOptions`) and ``export.json``, what
  was checked: the test accuracy evaluated afresh against ``rounds.csv``, the round trip of the compressed file, the
  shrunk model against the masked one, the sizes and the per-layer runtime paths.

A file that is missing, corrupt or made for another model is a one-line :class:`ExportError` naming it.
Every public name of the modules is importable from here.
"""

from lth.core.anatomy import NotShrinkable, as_chain
from lth.tools.export.channels import (
    example_input,
    fold_channels,
    folded,
    groups_of,
    remove_channels,
    semi_structured,
    structure,
    write_program,
)
from lth.tools.export.errors import ExportError
from lth.tools.export.evaluate import correct, predict, read_test_split
from lth.tools.export.files import export_lock, remove_stale, written_through
from lth.tools.export.formats import FORMATS, TORCH_PRUNE_FILE, write_safetensors, write_torch_prune
from lth.tools.export.lthz import (
    ENCODINGS,
    MAGIC,
    bit_identical,
    compress,
    decode_tensor,
    decompress,
    encode_tensor,
    encoded_sizes,
    index_bytes,
)
from lth.tools.export.onnx import missing_packages, onnx_outputs, onnx_session, write_onnx
from lth.tools.export.ship import ExportOptions, export, summary
from lth.tools.export.shrunk import build_chain, chain_spec, load_shrunk, shrink
from lth.tools.export.sparse import BENCH_BATCHES, CsrLinear, linear_inputs, pick_paths, time_calls, with_csr
from lth.tools.export.ticket import (
    PREFIX,
    RoundFiles,
    build_plain,
    choose_round,
    fold,
    load_exported,
    load_round,
    load_tensors,
    model_config,
    read_config_and_rounds,
    write_model,
    write_ticket,
)

__all__ = [
    "BENCH_BATCHES",
    "ENCODINGS",
    "FORMATS",
    "MAGIC",
    "PREFIX",
    "CsrLinear",
    "ExportError",
    "ExportOptions",
    "NotShrinkable",
    "RoundFiles",
    "TORCH_PRUNE_FILE",
    "as_chain",
    "bit_identical",
    "build_chain",
    "build_plain",
    "chain_spec",
    "choose_round",
    "compress",
    "correct",
    "decode_tensor",
    "decompress",
    "encode_tensor",
    "encoded_sizes",
    "example_input",
    "export",
    "export_lock",
    "fold",
    "fold_channels",
    "folded",
    "groups_of",
    "index_bytes",
    "linear_inputs",
    "load_exported",
    "load_round",
    "load_shrunk",
    "load_tensors",
    "missing_packages",
    "model_config",
    "onnx_outputs",
    "onnx_session",
    "pick_paths",
    "predict",
    "read_config_and_rounds",
    "read_test_split",
    "remove_channels",
    "remove_stale",
    "semi_structured",
    "shrink",
    "structure",
    "summary",
    "time_calls",
    "with_csr",
    "write_model",
    "write_onnx",
    "write_program",
    "write_safetensors",
    "write_ticket",
    "write_torch_prune",
    "written_through",
]
