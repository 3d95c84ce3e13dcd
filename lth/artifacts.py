"""What a run leaves on disk, written atomically (a temporary file, then a rename), so a kill never
leaves a half-written CSV, mask or summary and the previous good file survives a failed write."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROUND_COLUMNS = (
    "round",
    "weights_remaining",
    "early_stop_iteration",
    "val_loss",
    "val_acc",
    "test_acc",
    "final_test_acc",
    "train_seconds",
)


def _atomic_write(path: Path, write: Any, binary: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    _atomic_write(path, lambda f: f.write(text), binary=False)


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    _atomic_write(path, lambda f: f.write(data), binary=True)


def write_section(path: Path, text: str, start: str, end: str) -> None:
    """Put ``text`` between the markers ``start`` and ``end`` of ``path`` (appended with them if missing).

    How benchmarks keep their table in a doc whose prose stays as written.
    """
    old = path.read_text() if path.exists() else ""
    section = f"{start}\n{text}\n{end}"
    if start in old and end in old:
        new = old[: old.index(start)] + section + old[old.index(end) + len(end) :]
    else:
        new = f"{old.rstrip()}\n\n{section}\n" if old else f"{section}\n"
    write_text(path, new)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def save_tensors(path: Path, data: Any) -> None:
    """``torch.save`` ``data`` (tensors moved to the CPU) atomically."""
    import torch  # imported here: train.py --help must not wait for torch

    buffer = io.BytesIO()
    torch.save(_to_cpu(data), buffer)
    write_bytes(path, buffer.getvalue())


def _to_cpu(data: Any) -> Any:
    import torch

    if isinstance(data, torch.Tensor):
        return data.detach().cpu()
    if isinstance(data, dict):
        return {k: _to_cpu(v) for k, v in data.items()}
    return data


def write_rounds(path: Path, rows: Sequence[dict]) -> None:
    """Write ``rounds.csv``: one row per round, the columns of :data:`ROUND_COLUMNS`."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=ROUND_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: row.get(k) for k in ROUND_COLUMNS} for row in rows)
    write_text(path, out.getvalue())


def read_rounds(path: Path) -> list[dict]:
    """Read ``rounds.csv`` back with numbers as numbers."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: (int(v) if k in ("round", "early_stop_iteration") else float(v)) for k, v in r.items()} for r in rows]


def round_dir(run_dir: Path, round_index: int) -> Path:
    """The folder of one round's artifacts."""
    return run_dir / f"round_{round_index:02d}"


HYDRA_ONLY = (".hydra",)


def holds_results(run_dir: Path) -> bool:
    """True if ``run_dir`` holds anything besides what Hydra writes before the task runs."""
    if not run_dir.is_dir():
        return False
    return any(p.name not in HYDRA_ONLY and p.suffix != ".log" for p in run_dir.iterdir())
