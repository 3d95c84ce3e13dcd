"""Run folders listed like a researcher looks for them: what each is, how far it got, and what sets it apart.

``scripts/runs.py`` is the command line. :func:`find_run_folders` finds every folder that holds a ``config.yaml``
(the shared round-0 store ``dense/`` and the ``by-label/`` aliases left out), :func:`read_entry` reads one into an
:class:`Entry` (its status, rounds done, last weights remaining, best test accuracy at the early-stop point),
:func:`differing_keys` finds the identity keys that tell the listed runs apart, and :func:`table` lays them out.

A run folder's name is a hash; :func:`label` is a readable name for the same run made from what its identity sets
apart from the default config (``prune.rate=0.3,seed=1``), and :func:`write_aliases` links
``<parent>/by-label/<label>`` to ``../<run folder>`` beside it, without renaming anything.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from lth.config.identity import identity
from lth.config.schema import lookup
from lth.core.errors import ConfigError, MissingFileError, first_line
from lth.state.artifacts import read_plain, read_rounds
from lth.state.labels import ALIASES, flatten, show, write_alias
from lth.state.locks import owner_file, run_lock

CONFIG = "config.yaml"
SKIPPED = ("dense", ALIASES, ".hydra", "logs")  # folders never searched: the round-0 store, aliases, run internals
SHOWN = ("model.name", "dataset.name")  # keys with columns of their own
MISSING = "—"


@dataclass
class Entry:
    """One run folder as listed: where it is, its config, and how far it got."""

    path: Path
    config: dict  # the resolved config.yaml, run-only keys included (what filters compare against)
    flat: dict[str, Any]  # its identity, flattened to dotted keys
    status: str
    rounds: int
    weights_remaining: float | None  # % of the prunable weights after the last round done
    best_test_acc: float | None  # %: the highest test accuracy at the early-stop point over the rounds done
    columns: dict[str, Any] = field(default_factory=dict)  # the differing keys' values, filled by table()

    @property
    def identity(self) -> str:
        """The folder name (the run's identity hash)."""
        return self.path.name


def find_run_folders(root: Path) -> list[Path]:
    """Every run folder (one holding ``config.yaml``) at or under ``root``, sorted; a run folder's own subfolders,
    the round-0 store ``dense/``, the ``by-label/`` aliases and symbolic links are not searched."""
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(str(root), "is not a folder" if root.exists() else "no such folder")
    found = []
    for here, dirs, files in os.walk(root, onerror=_unreadable):
        if CONFIG in files:
            found.append(Path(here))
            dirs.clear()  # a run's own folders (round_XX, logs) hold no runs
        else:
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED)
    return sorted(found)


def _unreadable(error: OSError) -> None:
    raise MissingFileError(str(error.filename), f"cannot be read ({error.strerror})")


def lock_holder(run_dir: Path) -> str | None:
    """Who runs in ``run_dir`` now (``pid 1234 on node7``), or None when its lock is free or absent."""
    lock = run_lock(run_dir)
    if not lock.is_file():
        return None
    try:  # a probe: a lock held by a live process (one that ended holds none, whatever files it left)
        probe = FileLock(str(lock), timeout=0)
        probe.acquire()
    except Timeout:
        held = True
    except OSError:  # a folder this user may not write: the owner file is there only while the lock is held
        held = owner_file(lock).is_file()
    else:
        probe.release()
        held = False
    if not held:
        return None
    try:
        owner = json.loads(owner_file(lock).read_text())
        host = "" if owner["host"] == socket.gethostname() else f" on {owner['host']}"
        return f"pid {owner['pid']}{host}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def read_entry(run_dir: Path) -> Entry:
    """The run in ``run_dir``; an unreadable ``config.yaml`` or ``rounds.csv`` is a one-line
    :class:`~lth.core.errors.ConfigError` naming the file."""
    config = read_plain(run_dir / CONFIG)
    flat = flatten(config_identity(config, run_dir / CONFIG))
    rounds_csv = run_dir / "rounds.csv"
    rows = read_rounds(rounds_csv) if rounds_csv.is_file() else []
    holder = lock_holder(run_dir)
    if holder is not None:
        status = f"running ({holder})"
    elif (run_dir / "summary.json").is_file():
        status = "finished"
    elif rounds_csv.is_file():
        status = f"interrupted at round {len(rows)}"
    else:
        status = "empty"
    return Entry(
        path=run_dir,
        config=config,
        flat=flat,
        status=status,
        rounds=len(rows),
        weights_remaining=100 * rows[-1]["weights_remaining"] if rows else None,
        best_test_acc=100 * max(row["test_acc"] for row in rows) if rows else None,
    )


def config_identity(config: dict, path: Path) -> dict:
    """:func:`~lth.config.identity.identity` of the ``config`` read from ``path``; a mapping that is no run's config
    (a section that is not a mapping) is a one-line :class:`~lth.core.errors.ConfigError` naming the file."""
    try:
        return identity(config)
    except Exception as error:  # a value of the wrong type deep inside: not a config a run wrote
        raise ConfigError(str(path), f"is not a run's config ({first_line(error)})") from None


def parse_filters(texts: Sequence[str]) -> list[tuple[str, str]]:
    """``["prune.rate=0.2", "seed=0"]`` -> ``[("prune.rate", "0.2"), ("seed", "0")]``; one without ``=`` or a key
    is a :class:`~lth.core.errors.ConfigError`."""
    filters = []
    for text in texts:
        key, equals, value = text.partition("=")
        if not equals or not key.strip():
            raise ConfigError(text, "a filter is key=value (a dotted config key, e.g. prune.rate=0.2)")
        filters.append((key.strip().lstrip("+"), value.strip()))
    return filters


def _same(value: Any, wanted: str) -> bool:
    if show(value) == wanted or str(value) == wanted:
        return True
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(value) == float(wanted)
        except ValueError:
            return False
    return False


_ABSENT = object()


def keep(entries: Sequence[Entry], filters: Sequence[tuple[str, str]]) -> list[Entry]:
    """The entries whose resolved config has every ``(key, value)`` of ``filters`` (compared as written); a key that
    no entry's config has is a :class:`~lth.core.errors.ConfigError` (a typo, not an empty result)."""
    kept = list(entries)
    for key, wanted in filters:
        values = [lookup(e.config, key, _ABSENT) for e in entries]
        if entries and all(v is _ABSENT for v in values):
            raise ConfigError(key, "no listed run's config has this key")
        kept = [e for e in kept if _matches(e, key, wanted)]
    return kept


def _matches(entry: Entry, key: str, wanted: str) -> bool:
    value = lookup(entry.config, key, _ABSENT)
    return value is not _ABSENT and _same(value, wanted)


def differing_keys(entries: Sequence[Entry]) -> list[str]:
    """The identity keys (dotted, nulls and run-only keys left out) whose values are not the same in every entry,
    in config order; model and dataset names, which have columns of their own, are left out."""
    keys = dict.fromkeys(k for e in entries for k in e.flat if k not in SHOWN)
    return [k for k in keys if len({show(e.flat.get(k, _ABSENT)) if k in e.flat else None for e in entries}) > 1]


def _percent(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}"


def rows(entries: Sequence[Entry], root: Path) -> tuple[list[str], list[list[str]]]:
    """The table's header and cells: identity, (its folder when the runs live in several), model, dataset, status,
    rounds done, last weights remaining, best test accuracy at the early-stop point, then the differing keys."""
    keys = differing_keys(entries)
    parents = {e.path.parent for e in entries}
    header = ["identity", *(["in"] if len(parents) > 1 else []), "model", "dataset", "status", "rounds"]
    header += ["weights remaining (%)", "best test acc at early stop (%)", *keys]
    cells = []
    for e in entries:
        where = [str(e.path.parent.relative_to(root)) if e.path.parent != root else "."] if len(parents) > 1 else []
        line = [e.identity, *where, show(e.flat.get("model.name", MISSING)), show(e.flat.get("dataset.name", MISSING))]
        line += [e.status, str(e.rounds), _percent(e.weights_remaining), _percent(e.best_test_acc)]
        line += [show(e.flat[k]) if k in e.flat else MISSING for k in keys]
        cells.append(line)
    return header, cells


def table(entries: Sequence[Entry], root: Path) -> str:
    """:func:`rows` as aligned text columns (numbers right-aligned)."""
    header, cells = rows(entries, root)
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    numeric = {"rounds", "weights remaining (%)", "best test acc at early stop (%)"}

    def fmt(line: list[str]) -> str:
        parts = [c.rjust(w) if h in numeric else c.ljust(w) for c, w, h in zip(line, widths, header, strict=True)]
        return "  ".join(parts).rstrip()

    return "\n".join([fmt(header), *(fmt(line) for line in cells)])


def as_json(entries: Sequence[Entry]) -> list[dict[str, Any]]:
    """The entries as plain dicts (the same fields as the table; the differing keys under ``config``)."""
    keys = differing_keys(entries)
    return [
        {
            "identity": e.identity,
            "path": str(e.path),
            "model": e.flat.get("model.name"),
            "dataset": e.flat.get("dataset.name"),
            "status": e.status,
            "rounds": e.rounds,
            "weights_remaining": e.weights_remaining,
            "best_test_acc_at_early_stop": e.best_test_acc,
            "config": {k: e.flat.get(k) for k in keys},
        }
        for e in entries
    ]


def write_aliases(entries: Iterable[Entry]) -> list[tuple[Path, Path]]:
    """:func:`~lth.state.labels.write_alias` for every entry; return the ``(link, target)`` pairs."""
    return [write_alias(entry.path, entry.flat) for entry in entries]
