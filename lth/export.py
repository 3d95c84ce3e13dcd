"""Ship a ticket: turn one round of a finished run into files that work without this project's training code.

From a run folder (``config.yaml``, ``rounds.csv``, ``rewind.pt``, ``round_XX/mask.pt`` and ``early_stop.pt``)
:func:`export` writes, for one round:

- ``ticket.pt``: the ticket itself, the mask and the rewind weights (masked), to retrain it elsewhere;
- ``model.pt`` + ``model.yaml``: the trained weights at the early-stop point with the masks folded in, a plain
  ``state_dict`` the model class loads with ``strict=True``, and the ``model``/``dataset`` keys that rebuild it;
- ``shrunk.pt``: the same function as smaller dense layers: units (neurons, channels) whose incoming or outgoing
  weights are all pruned are removed. Only plain chains of Linear/Conv layers shrink (:func:`as_chain`);
- ``compressed.lthz``: every tensor in the smallest of three encodings (:func:`encoded_sizes`), fp32 or fp16 values;
- ``model.onnx`` when asked and the ``onnx`` packages are installed;
- ``export.json``: what was checked: the test accuracy evaluated afresh against ``rounds.csv``, the round trip of
  the compressed file, the shrunk model against the masked one, the sizes and the per-layer runtime paths.

A file that is missing, corrupt or made for another model is a one-line :class:`ExportError` naming it.
"""

from __future__ import annotations

import copy
import importlib.util
import io
import json
import math
import statistics
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from lth.artifacts import (
    check_state,
    read_rounds,
    read_tensors,
    round_dir,
    save_tensors,
    write_bytes,
    write_json,
    write_text,
)
from lth.config import validate
from lth.errors import ConfigError, first_line
from lth.masks import Mask, prunable_parameters
from lth.models import VGG, ConvNet, LeNet5, LeNet300100, ViT
from lth.models.resnet import ResNet
from lth.run import build_data, build_model

PREFIX = "model."  # the run's files name tensors as the LightningModule does: model.<name>
MAGIC = b"LTHZ1\n"
ENCODINGS = ("dense", "bitmap", "index")
BENCH_BATCHES = (1, 64)


class ExportError(ConfigError):
    """A run file that cannot be exported, as one line: ``<file>: <what is wrong>``."""


class NotShrinkable(ValueError):
    """A model whose units cannot be removed layer by layer; the message says why."""


# -- reading a run ----------------------------------------------------------------------------------


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A ``name -> tensor`` file of the run, on the CPU; anything else is an :class:`ExportError`."""
    try:
        return read_tensors(path)
    except ConfigError as error:
        raise ExportError(error.key, error.message) from None


def read_run(run_dir: Path) -> tuple[DictConfig, list[dict]]:
    """The resolved config (checked as a run checks it) and the rows of ``rounds.csv`` of a run folder."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(str(run_dir), "is not a folder" if run_dir.exists() else "no such folder")
    cfg_path, rounds_path = run_dir / "config.yaml", run_dir / "rounds.csv"
    for path in (cfg_path, rounds_path):
        if not path.is_file():
            raise ExportError(str(path), "is missing (is this a run folder?)")
    cfg = read_config(cfg_path)
    try:
        rows = read_rounds(rounds_path)
    except ConfigError as error:
        raise ExportError(error.key, error.message) from None
    if not rows:
        raise ExportError(str(rounds_path), "has a header and no rows: no round finished")
    if rows[0]["round"] != 0:
        raise ExportError(str(rounds_path), "has no round 0")
    return cfg, rows


def read_config(path: Path) -> DictConfig:
    """A run's ``config.yaml``, checked key by key as :func:`lth.config.validate` checks a new run's config;
    a file that is unreadable, not a mapping or holds a bad value is an :class:`ExportError` naming it."""
    try:
        cfg = OmegaConf.load(path)
    except Exception as error:  # yaml and omegaconf raise many types for garbled files
        raise ExportError(str(path), f"cannot be read ({first_line(error)})") from None
    if not isinstance(cfg, DictConfig):
        raise ExportError(str(path), f"holds a {type(cfg).__name__}; a run's config is a mapping of keys")
    try:
        validate(cfg)
    except ConfigError as error:
        raise ExportError(str(path), str(error)) from None
    except Exception as error:  # a value of the wrong type deep inside: not a config a run wrote
        raise ExportError(str(path), f"is not a run's config ({first_line(error)})") from None
    return cfg


def choose_round(rows: list[dict], tolerance: float = 0.5) -> int:
    """The sparsest round whose validation accuracy is at most ``tolerance`` points below round 0's."""
    if not (isinstance(tolerance, int | float) and math.isfinite(tolerance) and tolerance >= 0):
        raise ConfigError("tolerance", f"got {tolerance!r}; allowed: a number >= 0 (accuracy points)")
    floor = rows[0]["val_acc"] - tolerance / 100 - 1e-9
    good = [r for r in rows if r["val_acc"] >= floor]
    return min(good, key=lambda r: (r["weights_remaining"], -r["round"]))["round"]


def _strip(state: Mapping[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    if not all(k.startswith(PREFIX) for k in state):
        odd = next(k for k in state if not k.startswith(PREFIX))
        raise ExportError(str(path), f"names {odd!r}; a run's tensors are named {PREFIX}<parameter>")
    return {k[len(PREFIX) :]: v for k, v in state.items()}


def _check_state(state: Mapping[str, torch.Tensor], model: nn.Module, path: Path) -> None:
    try:
        check_state(state, model, path)
    except ConfigError as error:
        raise ExportError(error.key, error.message) from None


@dataclass
class RoundFiles:
    """One round of a run, checked against the model of its config; tensor names without the ``model.`` prefix."""

    row: dict
    mask: Mask
    weights: dict[str, torch.Tensor]  # at the early-stop point
    rewind: dict[str, torch.Tensor] | None  # None where the run rewinds no weights (prune.rewind=lr or none)


def _model_state(path: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    state = _strip(load_tensors(path), path)
    _check_state(state, model, path)
    return state


def load_round(run_dir: Path, cfg: DictConfig, row: dict) -> RoundFiles:
    """Read and check the mask, the early-stop weights and the rewind point of round ``row['round']``."""
    try:
        model = build_model(cfg)
    except Exception as error:  # hydra raises many types for a model key that names no model
        raise ExportError(str(run_dir / "config.yaml"), f"builds no model ({first_line(error)})") from None
    where = round_dir(run_dir, row["round"])
    params = prunable_parameters(
        nn.ModuleDict({PREFIX[:-1]: model}), cfg.prune.include or (), cfg.prune.exclude or (), cfg.prune.extra or ()
    )
    mask_path, weights_path, rewind_path = where / "mask.pt", where / "early_stop.pt", run_dir / "rewind.pt"
    mask = Mask(load_tensors(mask_path))
    try:
        mask.check_against(params, source=str(mask_path))
    except ConfigError as error:
        raise ExportError(str(mask_path), str(error).removeprefix(f"{mask_path}: ")) from None
    if not weights_path.exists():
        raise ExportError(str(weights_path), "is missing (the run was made with train.save_weights=false)")
    weights = _model_state(weights_path, model)
    rewind = _model_state(rewind_path, model) if rewind_path.exists() else None
    return RoundFiles(row, Mask(_strip(mask, mask_path)), weights, rewind)


def fold(weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``weights`` with every pruned entry set to +0.0 (a plain state_dict: no ``weight_orig``/``weight_mask``)."""
    return {
        k: torch.where(mask[k], v, torch.zeros((), dtype=v.dtype)) if k in mask else v.clone()
        for k, v in weights.items()
    }


def model_config(cfg: DictConfig) -> dict:
    """What rebuilds the model: the ``model`` keys and the dataset's shape (and normalisation) keys."""
    dataset = OmegaConf.to_container(cfg.dataset, resolve=True)
    keys = ("name", "channels", "image_size", "num_classes", "mean", "std")
    return {"model": OmegaConf.to_container(cfg.model, resolve=True), "dataset": {k: dataset.get(k) for k in keys}}


def build_plain(config: Mapping) -> nn.Module:
    """The plain model class of a :func:`model_config` (freshly initialised)."""
    return build_model(OmegaConf.create({"seed": 0, **config}))


def load_exported(out_dir: Path) -> nn.Module:
    """The exported sparse model of ``out_dir`` (``model.yaml`` + ``model.pt``), in eval mode."""
    model = build_plain(OmegaConf.to_container(OmegaConf.load(out_dir / "model.yaml")))
    model.load_state_dict(load_tensors(out_dir / "model.pt"), strict=True)
    return model.eval()


# -- the compressed file ----------------------------------------------------------------------------


def index_bytes(numel: int) -> int:
    """Bytes per flat index of a tensor of ``numel`` entries: 1, 2 or 4."""
    return 1 if numel <= 2**8 else 2 if numel <= 2**16 else 4


def encoded_sizes(numel: int, count: int, value_bytes: int) -> dict[str, int]:
    """Payload bytes of a tensor of ``numel`` entries, ``count`` of them surviving, in each encoding.

    ``dense``: every value; ``bitmap``: one bit per entry, then the surviving values; ``index``: the flat index of
    each surviving entry (:func:`index_bytes` wide), then its value.
    """
    return {
        "dense": numel * value_bytes,
        "bitmap": math.ceil(numel / 8) + count * value_bytes,
        "index": count * (index_bytes(numel) + value_bytes),
    }


def _raw(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _from_raw(buffer: bytes, dtype: torch.dtype, count: int) -> torch.Tensor:
    if count == 0:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(bytearray(buffer), dtype=dtype, count=count)


def encode_tensor(t: torch.Tensor, keep: torch.Tensor | None, fp16: bool = False) -> tuple[dict, bytes]:
    """The header entry and payload of ``t``: the smallest encoding given its mask ``keep`` (dense without one)."""
    stored = torch.float16 if fp16 and t.is_floating_point() else t.dtype
    flat = t.detach().reshape(-1).to(stored)
    count = flat.numel() if keep is None else int(keep.sum())
    sizes = encoded_sizes(flat.numel(), count, stored.itemsize)
    encoding = "dense" if keep is None else min(ENCODINGS, key=sizes.__getitem__)
    if encoding == "dense":
        payload = _raw(flat)
    else:
        alive = keep.reshape(-1)
        if encoding == "bitmap":
            where = np.packbits(alive.numpy(), bitorder="little").tobytes()
        else:
            where = np.flatnonzero(alive.numpy()).astype(f"<u{index_bytes(flat.numel())}").tobytes()
        payload = where + _raw(flat[alive])
    entry = {
        "shape": list(t.shape),
        "dtype": str(t.dtype).removeprefix("torch."),
        "stored": str(stored).removeprefix("torch."),
        "encoding": encoding,
        "count": count,
        "nbytes": len(payload),
    }
    return entry, payload


def decode_tensor(entry: Mapping, payload: bytes) -> torch.Tensor:
    """The tensor of a header entry and its payload (pruned entries +0.0, in the original dtype)."""
    stored, shape = getattr(torch, entry["stored"]), entry["shape"]
    numel, count = math.prod(shape), entry["count"]
    if entry["encoding"] == "dense":
        return _from_raw(payload, stored, numel).to(getattr(torch, entry["dtype"])).reshape(shape)
    if entry["encoding"] == "bitmap":
        head = math.ceil(numel / 8)
        bits = np.unpackbits(np.frombuffer(payload[:head], np.uint8), count=numel, bitorder="little")
        where = torch.from_numpy(np.flatnonzero(bits))
    else:
        head = count * index_bytes(numel)
        where = torch.from_numpy(np.frombuffer(payload[:head], f"<u{index_bytes(numel)}").astype(np.int64))
    if len(where) != count or len(payload) - head != count * stored.itemsize:
        raise ValueError(f"{entry['encoding']} payload does not hold {count} values")
    out = torch.zeros(numel, dtype=stored)
    out[where] = _from_raw(payload[head:], stored, count)
    return out.to(getattr(torch, entry["dtype"])).reshape(shape)


def compress(
    state: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], fp16: bool = False
) -> tuple[bytes, dict]:
    """The compressed file's bytes and its header: ``MAGIC``, header length (uint32 LE), JSON header, payloads."""
    tensors, payloads, offset = {}, [], 0
    for name, t in state.items():
        entry, payload = encode_tensor(t, mask.get(name), fp16)
        tensors[name] = {**entry, "offset": offset}
        payloads.append(payload)
        offset += len(payload)
    header = json.dumps({"tensors": tensors}).encode()
    return MAGIC + len(header).to_bytes(4, "little") + header + b"".join(payloads), tensors


def decompress(path: Path) -> dict[str, torch.Tensor]:
    """The state_dict of a compressed file written by :func:`compress`."""
    data = path.read_bytes() if path.is_file() else None
    if data is None:
        raise ExportError(str(path), "is missing")
    try:
        if not data.startswith(MAGIC):
            raise ValueError("not a compressed ticket (wrong magic bytes)")
        start = len(MAGIC) + 4
        size = int.from_bytes(data[len(MAGIC) : start], "little")
        tensors = json.loads(data[start : start + size])["tensors"]
        body = data[start + size :]
        if sum(e["nbytes"] for e in tensors.values()) != len(body):
            raise ValueError(f"payload is {len(body)} bytes, the header lists more or fewer")
        return {n: decode_tensor(e, body[e["offset"] : e["offset"] + e["nbytes"]]) for n, e in tensors.items()}
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as error:
        raise ExportError(str(path), f"cannot be read ({first_line(error)})") from None


# -- the shrunk model -------------------------------------------------------------------------------

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


def as_chain(model: nn.Module) -> nn.Sequential:
    """A copy of ``model`` as one ``nn.Sequential`` of standard layers computing the same function.

    LeNet-300-100, LeNet-5, Conv-2/4/6 and VGG are chains; residual networks and ViT are not
    (:class:`NotShrinkable` says why).
    """
    parts: list[tuple[str, nn.Module]]
    if isinstance(model, LeNet300100):
        parts = [("flatten", nn.Flatten())]
        for i, layer in enumerate(model.layers):
            parts += [(f"layers_{i}", layer), (f"relu_{i}", nn.ReLU())]
    elif isinstance(model, LeNet5):
        parts = [("conv1", model.conv1), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2))]
        parts += [("conv2", model.conv2), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)), ("flatten", nn.Flatten())]
        parts += [("fc1", model.fc1), ("relu3", nn.ReLU()), ("fc2", model.fc2), ("relu4", nn.ReLU())]
    elif isinstance(model, ConvNet):
        parts = [(f"convs_{i}", m) for i, m in enumerate(model.convs)] + [("flatten", nn.Flatten())]
        for i, layer in enumerate(model.fcs):
            parts += [(f"fcs_{i}", layer), (f"relu_{i}", nn.ReLU())]
    elif isinstance(model, VGG):
        parts = [(f"features_{i}", m) for i, m in enumerate(model.features)]
        parts += [("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten())]
    elif isinstance(model, ResNet):
        raise NotShrinkable(
            f"{type(model).__name__}: residual connections add each block's input to its output, which ties a "
            "channel across all the blocks of a stage; removing units applies to plain chains only"
        )
    elif isinstance(model, ViT):
        raise NotShrinkable(
            "ViT: the residual stream ties the embedding dimension across all blocks and attention mixes tokens; "
            "removing units applies to plain chains only"
        )
    else:
        raise NotShrinkable(f"{type(model).__name__} is not one of the plain chains (LeNets, Conv-2/4/6, VGG)")
    return copy.deepcopy(nn.Sequential(OrderedDict([*parts, ("out", model.out)])))


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


# -- runtime paths ----------------------------------------------------------------------------------


class CsrLinear(nn.Module):
    """A Linear layer whose weight is a ``torch.sparse`` CSR matrix: only the surviving weights are stored."""

    def __init__(self, layer: nn.Linear) -> None:
        super().__init__()
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            self.weight = layer.weight.detach().to_sparse_csr()
        self.bias = None if layer.bias is None else layer.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.sparse.mm(self.weight, x.t()).t()
        return y if self.bias is None else y + self.bias


def time_calls(
    calls: Mapping[str, Callable[[], object]], repeats: int = 5, min_seconds: float = 0.005
) -> dict[str, float]:
    """Median seconds per call of each function over ``repeats`` windows of at least ``min_seconds``.

    The functions take turns window by window, so a burst of load on a shared machine hits all of them alike.
    """
    with torch.inference_mode():
        numbers = {}
        for name, fn in calls.items():
            fn()  # warm-up
            number = 1
            while True:
                start = time.perf_counter()
                for _ in range(number):
                    fn()
                if time.perf_counter() - start >= min_seconds:
                    break
                number *= 2
            numbers[name] = number
        windows: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(repeats):
            for name, fn in calls.items():
                start = time.perf_counter()
                for _ in range(numbers[name]):
                    fn()
                windows[name].append((time.perf_counter() - start) / numbers[name])
    return {name: statistics.median(w) for name, w in windows.items()}


def linear_inputs(model: nn.Module, example: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input of every Linear layer whose ``forward`` runs on a batch of vectors (N, features) for ``example``."""
    seen: dict[str, torch.Tensor] = {}

    def record(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            seen.setdefault(name, args[0])

        return hook

    hooks = [m.register_forward_pre_hook(record(n)) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    return {name: x for name, x in seen.items() if x.dim() == 2}


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)


def with_csr(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """A copy of ``model`` with every Linear layer that sees vectors for ``example`` in CSR form."""
    model = copy.deepcopy(model).eval()
    for name in linear_inputs(model, example):
        _replace(model, name, CsrLinear(model.get_submodule(name)))
    return model


def pick_paths(model: nn.Module, example: torch.Tensor, repeats: int = 5) -> tuple[nn.Module, list[dict]]:
    """A copy of ``model`` with each Linear layer dense or CSR, whichever ran faster on its input for ``example``.

    Returns the model and one ``{"layer", "dense_us", "csr_us", "path"}`` per layer considered.
    """
    model = copy.deepcopy(model).eval()
    choices = []
    for name, x in linear_inputs(model, example).items():
        dense = model.get_submodule(name)
        sparse = CsrLinear(dense)
        times = time_calls({"dense": lambda m=dense, x=x: m(x), "csr": lambda m=sparse, x=x: m(x)}, repeats)
        path = min(times, key=times.__getitem__)
        choices.append({"layer": name, "dense_us": 1e6 * times["dense"], "csr_us": 1e6 * times["csr"], "path": path})
        if path == "csr":
            _replace(model, name, sparse)
    return model, choices


# -- evaluation and the export ----------------------------------------------------------------------


def read_test_split(cfg: DictConfig, data_dir: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised test images and labels of the run's dataset (read from ``data_dir`` if given)."""
    cfg = copy.deepcopy(cfg)
    if data_dir is not None:
        with open_dict(cfg):
            cfg.paths.data_dir = str(data_dir)
    data = build_data(cfg)
    data.setup()
    return data.splits["test"]


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The logits of ``model`` (in eval mode) for ``x``, in batches."""
    model.eval()
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> int:
    """How many of the images ``x`` ``model`` labels as ``y``."""
    return int((predict(model, x, batch_size).argmax(dim=1) == y).sum())


def bit_identical(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    """True if both state_dicts hold the same names, dtypes, shapes and bytes."""
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and _raw(a[k]) == _raw(b[k]) for k in a
    )


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


def export(
    run_dir: str | Path,
    round_index: int | None = None,
    tolerance: float = 0.5,
    out_dir: str | Path | None = None,
    fp16: bool = False,
    onnx: bool = False,
    data_dir: str | Path | None = None,
) -> dict:
    """Export one round of the run in ``run_dir``; return the report also written to ``<out_dir>/export.json``.

    ``round_index`` None picks :func:`choose_round` with ``tolerance`` (accuracy points). ``out_dir`` defaults to
    ``<run_dir>/export/round_XX``. ``data_dir`` overrides the run's ``paths.data_dir`` for the test set.
    """
    run_dir = Path(run_dir)
    cfg, rows = read_run(run_dir)
    chosen = choose_round(rows, tolerance) if round_index is None else round_index
    by_round = {r["round"]: r for r in rows}
    if chosen not in by_round:
        rounds = ", ".join(str(r) for r in by_round)
        raise ConfigError("round", f"got {chosen}; {run_dir / 'rounds.csv'} has rounds {rounds}")
    files = load_round(run_dir, cfg, by_round[chosen])
    out = Path(out_dir) if out_dir is not None else run_dir / "export" / f"round_{chosen:02d}"
    if out.exists() and not out.is_dir():
        raise ConfigError("out_dir", f"{out} is a file; allowed: a folder (made if missing)")
    x, y = read_test_split(cfg, data_dir)  # before anything is written: a missing test set writes nothing
    config = model_config(cfg)
    report: dict = {
        "run_dir": str(run_dir),
        "round": chosen,
        "chosen_by": "--round"
        if round_index is not None
        else f"sparsest round with validation accuracy within {tolerance} points of round 0's",
        "weights_remaining": files.row["weights_remaining"],
        "out_dir": str(out),
    }

    if files.rewind is None:
        report["ticket"] = f"skipped: no rewind.pt (prune.rewind={cfg.prune.rewind} rewinds no weights)"
    else:
        ticket = {
            "round": chosen,
            "weights_remaining": files.row["weights_remaining"],
            "rewind": str(cfg.prune.rewind),
            "config": config,
            "mask": dict(files.mask),
            "weights": fold(files.rewind, files.mask),
        }
        save_tensors(out / "ticket.pt", ticket)
        report["ticket"] = "written: ticket.pt"

    state = fold(files.weights, files.mask)
    plain = build_plain(config)
    plain.load_state_dict(state, strict=True)
    save_tensors(out / "model.pt", state)
    write_text(out / "model.yaml", OmegaConf.to_yaml(OmegaConf.create(config)))
    batch_size = cfg.train.get("eval_batch_size", 1000)
    right = correct(plain, x, y, batch_size)
    recorded = files.row["test_acc"]
    report["test"] = {
        "images": len(y),
        "acc": right / len(y),
        "rounds_csv_acc": recorded,
        "matches_rounds_csv": round(recorded * len(y)) == right,
    }

    blob, entries = compress(state, files.mask, fp16)
    write_bytes(out / "compressed.lthz", blob)
    restored = decompress(out / "compressed.lthz")
    back = build_plain(config)
    back.load_state_dict(restored, strict=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    report["compressed"] = {
        "file": "compressed.lthz",
        "fp16": fp16,
        "dense_bytes": sum(t.numel() * t.element_size() for t in state.values()),
        "model_pt_bytes": len(buffer.getvalue()),
        "file_bytes": len(blob),
        "bit_identical": bit_identical(state, restored),
        "test_acc": correct(back, x, y, batch_size) / len(y),
        "tensors": {n: {"encoding": e["encoding"], "bytes": e["nbytes"]} for n, e in entries.items()},
    }

    runtime = plain
    try:
        small, units = shrink(as_chain(plain))
    except NotShrinkable as reason:
        report["shrunk"] = {"skipped": str(reason)}
    else:
        reference, outputs = predict(plain, x, batch_size), predict(small, x, batch_size)
        if not torch.allclose(outputs, reference, rtol=1e-4, atol=1e-4):
            raise RuntimeError(f"the shrunk model differs from the masked one by {(outputs - reference).abs().max()}")
        save_tensors(out / "shrunk.pt", {"layers": chain_spec(small), "state_dict": small.state_dict()})
        report["shrunk"] = {
            "file": "shrunk.pt",
            "units": units,
            "parameters": [sum(p.numel() for p in m.parameters()) for m in (plain, small)],
            "max_abs_diff": float((outputs - reference).abs().max()),
            "test_acc": int((outputs.argmax(1) == y).sum()) / len(y),
        }
        runtime = small
    report["runtime"] = {f"batch_{n}": pick_paths(runtime, x[:n])[1] for n in BENCH_BATCHES}
    report["onnx"] = write_onnx(runtime, x[:2], out / "model.onnx") if onnx else "not asked (--onnx)"
    write_json(out / "export.json", report)
    return report


def summary(report: dict) -> str:
    """The lines the export prints for people."""
    test, packed, shrunk = report["test"], report["compressed"], report["shrunk"]
    check = "matches rounds.csv" if test["matches_rounds_csv"] else f"rounds.csv says {test['rounds_csv_acc']:.2%}"
    trip = "bit-identical" if packed["bit_identical"] else "not bit-identical"
    trip = "values rounded to fp16" if packed["fp16"] else trip
    lines = [
        f"round {report['round']} ({report['chosen_by']}): {100 * report['weights_remaining']:.1f}% weights remaining",
        f"test accuracy of the exported model, evaluated afresh: {100 * test['acc']:.2f}% "
        f"on {test['images']} images ({check})",
        f"ticket: {report['ticket']}",
        f"sizes: dense {packed['dense_bytes']:,} B, model.pt {packed['model_pt_bytes']:,} B, compressed "
        f"{packed['file_bytes']:,} B ({packed['dense_bytes'] / packed['file_bytes']:.1f}x smaller than dense"
        f"{', fp16 values' if packed['fp16'] else ''}); round trip {trip}, test accuracy {packed['test_acc']:.2%}",
    ]
    if "skipped" in shrunk:
        lines.append(f"shrunk: skipped: {shrunk['skipped']}")
    else:
        layers = ", ".join(f"{n} {a}->{b}" for n, (a, b) in shrunk["units"].items())
        lines.append(
            f"shrunk: units {layers}; parameters {shrunk['parameters'][0]:,} -> {shrunk['parameters'][1]:,}; "
            f"outputs within {shrunk['max_abs_diff']:.1e} of the masked model, test accuracy "
            f"{100 * shrunk['test_acc']:.2f}%"
        )
    for batch, choices in report["runtime"].items():
        picks = ", ".join(f"{c['layer']} {c['path']} ({c['dense_us']:.0f}/{c['csr_us']:.0f} us)" for c in choices)
        picks = f"{picks} (dense/CSR time per call)" if picks else "no Linear layer on vectors"
        lines.append(f"runtime path, {batch.replace('_', ' ')}: {picks}")
    lines += [f"onnx: {report['onnx']}", f"written to {report['out_dir']}"]
    return "\n".join(lines)
