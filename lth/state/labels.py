"""Readable names for runs whose folders are named by a hash: the keys a sweep varies and what a run's identity sets
apart from the default config (``prune.rate=0.3,seed=1``), and the alias ``<parent>/by-label/<label>`` linking to
the run folder.

A finished run writes its alias; ``scripts/runs.py --aliases`` writes them for every run listed. W&B names its runs
with the label. Nothing is renamed: the identity (the folder's hash) stays the name that counts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lth.config.identity import RUN_ONLY, copied_keys, default_identity, identity
from lth.config.schema import CONF, lookup
from lth.core.errors import ConfigError, MissingFileError

ALIASES = "by-label"  # <parent>/by-label/<label> -> ../<run folder>
GROUPS = ("model", "dataset", "optim")  # config groups whose chosen option the config names (<group>.name)
MAX_LABEL = 200  # characters of a label (a file name); longer ones end in the folder's hash


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"prune": {"rate": 0.2}}`` -> ``{"prune.rate": 0.2}``; lists stay lists, empty mappings stay values."""
    if isinstance(tree, dict) and tree:
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: tree}


def show(value: Any) -> str:
    """A config value as written on a command line: ``0.2``, ``true``, ``null``, ``init``, ``[a,b]``, ``{k:v}``."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{show(v)}" for k, v in value.items()) + "}"
    return str(value)


def label(flat: dict[str, Any], swept: Sequence[tuple[str, str]] = ()) -> str:
    """A readable name for the run of identity ``flat`` (flattened), joined by commas: the keys its sweep varies
    (``swept``, :attr:`lth.config.run.Job.swept`: ``prune.rate=0.2`` even at the default's value; run-only keys
    left out), the config groups it chose other than the default's (``model=conv2``), then every key whose value
    differs from that config's (``prune.rate=0.3``), a copy of another key at that key's value left out
    (``dataset.source.channels``); ``default`` for the default config outside a sweep. Two identities never get the
    same label."""
    named = {group: str(flat.get(f"{group}.name")) for group in GROUPS}
    base_names = flatten(default_identity())
    choices = tuple(
        (group, option)
        for group, option in named.items()
        if option != str(base_names.get(f"{group}.name")) and (CONF / group / f"{option}.yaml").is_file()
    )
    base, copies = flatten(default_identity(choices)), copied_keys(choices)
    parts, shown = _swept_parts(flat, swept)
    parts += [f"{group}={option}" for group, option in choices if f"{group}.name" not in shown]
    shown |= {f"{group}.name" for group, _ in choices}
    for key in dict.fromkeys([*flat, *base]):
        if key in shown or (key in copies and key in flat and show(flat[key]) == show(flat.get(copies[key]))):
            continue
        if key not in flat:
            parts.append(f"~{key}")  # a key of the default that the run has not (Hydra's deletion)
        elif key not in base or show(flat[key]) != show(base[key]):
            parts.append(f"{key}={show(flat[key])}")
    return ",".join(parts) or "default"


def _swept_parts(flat: dict[str, Any], swept: Sequence[tuple[str, str]]) -> tuple[list[str], set[str]]:
    """The label's parts naming the swept keys, and the identity keys they show: a key with its identity value, a
    group of :data:`GROUPS` by its option, a mapping by its keys; a key the identity leaves out at this value
    (``data_seed=null``) or another group's option (``prune=oneshot``) by the value ``swept`` gives it
    (:func:`swept_values`)."""
    parts: list[str] = []
    shown: set[str] = set()
    for key, text in swept:
        if any(key == r or key.startswith(f"{r}.") for r in RUN_ONLY):
            continue
        inside = [k for k in flat if k.startswith(f"{key}.")]
        if key in GROUPS:
            parts.append(f"{key}={flat.get(f'{key}.name', text)}")
            shown.add(f"{key}.name")
        elif key in flat:
            parts.append(f"{key}={show(flat[key])}")
            shown.add(key)
        elif inside and not (CONF / key).is_dir():
            parts += [f"{k}={show(flat[k])}" for k in inside]
            shown.update(inside)
        else:
            parts.append(f"{key}={text}")
    return parts, shown


def alias_name(text: str, folder: str) -> str:
    """``text`` as a file name: no ``/``, not hidden, at most :data:`MAX_LABEL` characters (a longer one is cut
    and ends in the folder's hash, so it still names one run)."""
    name = text.replace(os.sep, "_").replace("/", "_").replace("\0", "")
    if name.startswith("."):
        name = "_" + name[1:]
    if len(name) > MAX_LABEL:
        digest = folder.rpartition("-")[2]
        name = f"{name[: MAX_LABEL - len(digest) - 2]}..{digest}"
    return name


def write_alias(run_dir: Path, flat: dict[str, Any], swept: Sequence[tuple[str, str]] = ()) -> tuple[Path, Path]:
    """Link ``<parent>/by-label/<label of flat>`` (its sweep's keys ``swept`` first) to ``../<run_dir>`` (an
    existing link replaced, so a stale one is corrected); return ``(link, target)``. The run folder itself is
    untouched."""
    folder = run_dir.name
    aliases = run_dir.parent / ALIASES
    link = aliases / alias_name(label(flat, swept), folder)
    target = Path("..") / folder
    try:
        aliases.mkdir(exist_ok=True)
        if link.is_symlink() and Path(os.readlink(link)) == target:
            return link, target
        if link.exists() and not link.is_symlink():
            raise ConfigError(str(link), "exists and is not a link; move it away to write the alias")
        temporary = aliases / f".{link.name}.tmp{os.getpid()}"
        temporary.unlink(missing_ok=True)
        os.symlink(target, temporary)
        os.replace(temporary, link)
    except OSError as error:
        raise MissingFileError(str(link), f"cannot be written ({error.strerror or error})") from None
    return link, target


def swept_values(plain: Mapping[str, Any], swept: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The swept keys (:attr:`lth.config.run.Job.swept`) with their values in the config ``plain``, which may be
    derived from the job's (a control's ticket: ``prune.control`` null); a config group's option as the job chose
    it."""
    absent = object()
    values = ((key, lookup(plain, key, absent), text) for key, text in swept)
    return tuple(
        (key, text if value is absent or isinstance(value, Mapping) else show(value)) for key, value, text in values
    )


def run_label(plain: Mapping[str, Any], swept: Sequence[tuple[str, str]] = ()) -> str:
    """The label of the run of config ``plain`` (a resolved config as plain data), one job of a sweep varying
    ``swept`` (:attr:`lth.config.run.Job.swept`)."""
    return label(flatten(identity(plain)), swept_values(plain, swept))
