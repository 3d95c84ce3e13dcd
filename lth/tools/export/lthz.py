"""``compressed.lthz``: every tensor of a state_dict in the smallest of three encodings, and back.

The file is ``MAGIC``, the header's length (uint32 little-endian), a JSON header (per tensor: shape, dtype, the dtype
stored, encoding, count of stored values, payload offset and size) and the payloads. A tensor with a mask is stored
``dense`` (every value), as a ``bitmap`` (one bit per entry, then the surviving values) or as an ``index`` list (the
flat index of each surviving entry, then its value), whichever is smallest (:func:`encoded_sizes`); values are kept
in their dtype or, asked, as fp16.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from lth.core.errors import first_line
from lth.tools.export.errors import ExportError

MAGIC = b"LTHZ1\n"
ENCODINGS = ("dense", "bitmap", "index")


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


def bit_identical(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    """True if both state_dicts hold the same names, dtypes, shapes and bytes."""
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and _raw(a[k]) == _raw(b[k]) for k in a
    )
