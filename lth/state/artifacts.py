"""What a run leaves on disk, written atomically (a temporary file, then a rename), so a kill never
leaves a half-written CSV, mask or summary and the previous good file survives a failed write."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lth.config.run import RunConfig, migrate, thawed
from lth.config.yaml_file import load_yaml
from lth.core.errors import ConfigError, first_line

ROUND_COLUMNS = (
    "round",
    "weights_remaining",
    "early_stop_iteration",
    "val_loss",
    "val_acc",
    "test_acc",
    "final_test_acc",
    "train_seconds",
    "train_iterations",
    "train_flops",
    "train_flops_dense",
)
CONFIG = "config.yaml"  # the run's resolved config (lth.config.run.RunConfig.plain)
COST_COLUMNS = ROUND_COLUMNS[-3:]  # what a row's network cost to obtain (absent from files written before them)


def umask() -> int:
    """The process's umask (read without changing it where the system allows)."""
    try:  # Linux: changing the umask to read it would race with other threads creating files
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 less the umask (0o644 under umask 022), readable by colleagues
    on a shared cluster where the umask says so. Temporary files (``mkstemp``) are 0o600 and are given this."""
    return 0o666 & ~umask()


def _atomic_write(path: Path, write: Any, binary: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb" if binary else "w") as f:
            os.chmod(tmp, file_mode())  # mkstemp makes it 0o600
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):  # named by the file, not tmp
            raise OSError(error.errno, error.strerror, str(path)) from error
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


def yaml_text(data: Mapping[str, Any]) -> str:
    """``data`` (plain or frozen) as YAML, in the block style Hydra writes configs in."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(thawed(data))


def write_config(path: Path, cfg: RunConfig) -> None:
    """Write ``cfg``'s resolved config as YAML (a run folder's ``config.yaml``)."""
    write_text(path, yaml_text(cfg.plain))


def read_plain(path: Path) -> dict[str, Any]:
    """A run's ``config.yaml`` as plain data, with the keys added since it was written
    (:func:`lth.config.run.migrate`); a file that is unreadable or not a mapping is a one-line
    :class:`~lth.core.errors.ConfigError` naming it."""
    try:
        plain = load_yaml(path)
    except Exception as error:  # yaml and omegaconf raise many types for garbled files
        raise ConfigError(str(path), f"cannot be read ({first_line(error)})") from None
    if not isinstance(plain, dict):
        raise ConfigError(str(path), f"holds a {type(plain).__name__}; a run's config is a mapping of keys")
    if not plain:
        raise ConfigError(str(path), "is empty (cut short?); a run's config is a mapping of keys")
    return migrate(plain)


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


INTEGER_COLUMNS = ("round", "early_stop_iteration", *COST_COLUMNS)


def read_rounds(path: Path) -> list[dict]:
    """Read ``rounds.csv`` back with numbers as numbers (a header alone gives no rows).

    A file that is missing, cut short or garbled is a one-line :class:`~lth.core.errors.ConfigError` naming it.
    """
    where = str(path)
    try:
        with open(path, newline="") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(where, "is missing") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(where, f"cannot be read ({type(error).__name__}: {error})") from None
    return _parse_rounds(text, where)


def _parse_rounds(text: str, where: str) -> list[dict]:
    try:
        table = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as error:
        raise ConfigError(where, f"cannot be read ({type(error).__name__}: {error})") from None
    if not table or not any(table[0]):
        raise ConfigError(where, f"is empty; a rounds.csv starts with the header {','.join(ROUND_COLUMNS)}")
    header, body = table[0], [line for line in table[1:] if line]
    missing = [c for c in ROUND_COLUMNS if c not in header and c not in COST_COLUMNS]
    if missing:
        raise ConfigError(where, f"the header lacks {', '.join(missing)} (is it cut short or not a rounds.csv?)")
    rows = []
    for number, line in enumerate(body, start=1):
        if len(line) != len(header):
            raise ConfigError(where, f"row {number} has {len(line)} values for {len(header)} columns (cut short?)")
        row = {}
        for column, text_value in zip(header, line, strict=True):
            if column in COST_COLUMNS and not text_value:  # a row that did not count its cost
                continue
            try:
                row[column] = int(text_value) if column in INTEGER_COLUMNS else float(text_value)
            except ValueError:
                kind = "an integer" if column in INTEGER_COLUMNS else "a number"
                raise ConfigError(where, f"row {number}, {column}: {text_value!r} is not {kind}") from None
        rows.append(row)
    return rows


def readable_rounds(path: Path) -> tuple[list[dict], str | None]:
    """The rows of ``rounds.csv`` that read whole from its start (rounds 0, 1, ... each on a line of its own), and
    why the rest cannot be read (one line naming the file; None when all of it reads): what a cut-short or garbled
    file still holds. A last line without its line end is cut short (every write ends one)."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as error:
        return [], f"{path}: cannot be read ({type(error).__name__})"
    lines, problem = text.splitlines(), None
    if text and not text.endswith("\n"):
        lines, problem = lines[:-1], f"{path}: ends mid-line (cut short?)"
    for count in range(len(lines), 0, -1):
        try:
            rows = _parse_rounds("\n".join(lines[:count]) + "\n", str(path))
        except ConfigError as error:
            problem = problem or str(error)
            continue
        kept = next((i for i, row in enumerate(rows) if row.get("round") != i), len(rows))
        if kept < len(rows):
            problem = problem or f"{path}: row {kept + 1} is round {rows[kept].get('round')}, not {kept}"
        return rows[:kept], problem
    return [], problem or f"{path}: is empty"


def read_summary(run_dir: Path) -> dict | None:
    """A run's ``summary.json`` (written last, when every round is finished), or None when it is missing or cannot
    be read whole (then the run is not finished: ``resume=true`` writes it again)."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(summary, dict) and isinstance(summary.get("rounds"), list)
    return summary if ok and all(isinstance(row, dict) for row in summary["rounds"]) else None


def read_tensors(path: Path) -> dict[str, Any]:
    """A ``name -> tensor`` file of a run (``mask.pt``, ``early_stop.pt``, ``rewind.pt``), on the CPU.

    One that is missing, unreadable (truncated, not a torch file) or holds anything but tensors by name is a
    one-line :class:`~lth.core.errors.ConfigError` naming it.
    """
    import torch

    from lth.core.errors import ConfigError, first_line

    if not path.is_file():
        raise ConfigError(str(path), "is missing")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise ConfigError(str(path), f"cannot be read ({first_line(error)})") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in data.items()):
        raise ConfigError(str(path), "is not a mapping of tensor names to tensors")
    return data


def check_state(state: Mapping[str, Any], model: Any, path: Path) -> None:
    """Raise a :class:`~lth.core.errors.ConfigError` naming ``path`` unless ``state`` (a state dict read from it) has
    the names and shapes of ``model.state_dict()``."""
    from lth.core.errors import ConfigError

    expected, kind = model.state_dict(), type(model).__name__
    missing, unknown = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unknown:
        raise ConfigError(str(path), f"does not fit {kind} (missing {missing[:3]}, unknown {unknown[:3]})")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise ConfigError(
                str(path), f"{name} has shape {tuple(tensor.shape)}, {kind} has {tuple(expected[name].shape)}"
            )


def round_dir(run_dir: Path, round_index: int) -> Path:
    """The folder of one round's artifacts."""
    return run_dir / f"round_{round_index:02d}"


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is the temporary file of a write (``.<name>.<random>.tmp``) that a kill left behind."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def remove_temporaries(run_dir: Path) -> list[Path]:
    """Remove the temporary files that killed writes left in ``run_dir`` and its round folders; return them.

    Call it only when nothing writes to ``run_dir`` (at the end of a run that succeeded).
    """
    if not run_dir.is_dir():
        return []
    folders = [run_dir, *sorted(p for p in run_dir.glob("round_*") if p.is_dir())]
    found = [p for folder in folders for p in folder.iterdir() if p.is_file() and is_temporary(p)]
    for path in found:
        path.unlink(missing_ok=True)
    return found


HYDRA_ONLY = (".hydra",)
RUN_LOCK = (".lock", ".lock.owner")  # the lock of the process that runs in the folder, and who it is (lth.state.locks)


def holds_results(run_dir: Path) -> bool:
    """True if ``run_dir`` holds anything besides what Hydra writes before the task runs (and the run's lock)."""
    if not run_dir.is_dir():
        return False
    return any(p.name not in (*HYDRA_ONLY, *RUN_LOCK) and p.suffix != ".log" for p in run_dir.iterdir())


def remove_run_folder(run_dir: Path, output_dir: Path) -> None:
    """Remove ``run_dir`` unless it holds results, then each folder above it left empty, up to ``output_dir``."""
    if not run_dir.is_dir() or holds_results(run_dir):
        return
    shutil.rmtree(run_dir)
    remove_empty_parents(run_dir, output_dir)


def remove_empty_parents(folder: Path, output_dir: Path) -> None:
    """Remove each folder above ``folder`` that is left empty, up to (never) ``output_dir`` and nothing outside it."""
    output_dir = output_dir.resolve()
    for parent in folder.resolve().parents:
        if output_dir not in parent.parents:
            break
        try:
            parent.rmdir()
        except OSError:  # not empty
            break


def unmake_sweep_folder(sweep_dir: Path, output_dir: Path) -> None:
    """Remove the sweep folder that Hydra made for a refused sweep (it holds ``multirun.yaml`` alone), and the
    folders above it that it alone was in, up to ``output_dir``; a folder holding anything else stays."""
    try:
        if [p.name for p in sweep_dir.iterdir()] != ["multirun.yaml"]:
            return
        (sweep_dir / "multirun.yaml").unlink()
        sweep_dir.rmdir()
    except OSError:
        return
    remove_empty_parents(sweep_dir, output_dir)


def disk_full(error: OSError) -> str:
    """The one line for a write that failed on a full disk or quota (``error`` raised again if it is not that)."""
    if error.errno not in (errno.ENOSPC, errno.EDQUOT):
        raise error
    where = f" writing {error.filename}" if error.filename else ""
    return f"error: disk full{where}; free space, then continue with resume=true"
