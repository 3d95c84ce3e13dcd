"""Every user-facing config key, once: :data:`KEYS` (declared in :mod:`lth.config.keys`) and what is read from it.

From it come the simple per-key checks of :func:`lth.config.validate.validate` (type, range, choice: :func:`check`),
:data:`lth.config.identity.RUN_ONLY` (:func:`run_only_keys`, what the run's identity leaves out, and :func:`left_out`)
and the README's key table (:mod:`lth.config.table`). What one key cannot say about itself (``train.eval_every`` at
most ``train.steps``, the hardware this machine has) is checked by :mod:`lth.config.validate` and
:mod:`lth.config.hardware`.

Pure Python: importing this module loads neither torch, Lightning nor Hydra.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from lth.config.key import CONF, MAX_EPOCHS, MAX_ITERATIONS, Key, group_options, parse_step  # noqa: F401 - re-exported
from lth.config.keys import (  # noqa: F401 - the names repeated for validation, re-exported
    CHANNEL_CRITERIA,
    CONTROLS,
    DECLARED,
    EARLY_BIRD_DISTANCES,
    LOADERS,
    MAX_ROUNDS,
    METHODS,
    PRUNING_AT_INIT,
    REWIND_MODES,
    SCHEDULES,
    WANDB_MODES,
)

# Parts of the config whose keys are free-form, so not each an entry: Hydra's own node, mappings whose keys the user
# names (layer patterns, callbacks), the loggers' arguments, a dataset source's and a model's constructor arguments
# (documented in their conf/ files, checked where the object is built). An entry may still name a key inside one.
FREE_FORM = ("hydra", "prune.layer_rates", "callbacks", "logger", "dataset.source", "model")
# Run-only keys that are not user-facing: Hydra's node, and the Trainer's _target_/_partial_ (so that a trainer node
# without arguments leaves no trace in the identity). They frame the schema's run-only keys in RUN_ONLY.
RUN_ONLY_FIRST = ("hydra",)
RUN_ONLY_LAST = ("trainer._target_", "trainer._partial_")

_ABSENT = object()


def _inherit_run_only(keys: Iterable[Key]) -> tuple[Key, ...]:
    """The keys, those below a run-only entry made run-only too."""
    keys = tuple(keys)
    roots = [k.key for k in keys if k.run_only]
    below = lambda key: any(key.startswith(root + ".") for root in roots)  # noqa: E731
    return tuple(replace(k, run_only=True) if below(k.key) and not k.run_only else k for k in keys)


def _with_members(keys: tuple[Key, ...]) -> tuple[Key, ...]:
    """The keys, each closed mapping given the names of the entries directly below it."""
    below = lambda key: tuple(k.leaf for k in keys if k.key.rpartition(".")[0] == key)  # noqa: E731
    return tuple(replace(k, members=below(k.key)) if k.closed else k for k in keys)


KEYS: tuple[Key, ...] = _with_members(_inherit_run_only(DECLARED))
SCHEMA: dict[str, Key] = {k.key: k for k in KEYS}
if len(SCHEMA) != len(KEYS):
    raise ValueError("a key is defined twice in lth.config.schema")


def children(key: str) -> tuple[str, ...]:
    """The leaf names of the entries directly below ``key`` (the keys a closed mapping may hold)."""
    return tuple(k.leaf for k in KEYS if k.key.rpartition(".")[0] == key)


def run_only_keys() -> tuple[str, ...]:
    """The run-only keys as :func:`lth.config.validate.identity` removes them: the outermost run-only entries (whole
    groups first), between the hidden ones (:data:`RUN_ONLY_FIRST`, :data:`RUN_ONLY_LAST`)."""
    roots = [k for k in KEYS if k.run_only]
    outermost = [r for r in roots if not any(r.key.startswith(other.key + ".") for other in roots)]
    groups = [r.key for r in outermost if r.kind == "group"]
    return (*RUN_ONLY_FIRST, *groups, *(r.key for r in outermost if r.kind != "group"), *RUN_ONLY_LAST)


def governor(key: str) -> str | None:
    """The key whose value decides whether ``key`` is read (:attr:`Key.used_with` of it or of an entry above it)."""
    for entry in KEYS:
        if entry.used_with and (key == entry.key or key.startswith(f"{entry.key}.")):
            return entry.used_with[0]
    return None


def lookup(tree: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """The value of the dotted ``key`` in ``tree`` (plain data or a composed config), ``default`` if absent."""
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def left_out(tree: Mapping[str, Any]) -> list[str]:
    """The keys :func:`lth.config.identity.identity` leaves out of ``tree``'s identity although they are set: those
    at their :attr:`Key.unnamed_at` value, and those whose :attr:`Key.used_with` key has none of its values."""
    out = []
    for entry in KEYS:
        value = lookup(tree, entry.key, _ABSENT)
        if value is _ABSENT:
            continue
        if entry.unnamed_at is not None and value == entry.unnamed_at:
            out.append(entry.key)
        elif entry.used_with and lookup(tree, entry.used_with[0]) not in entry.used_with[1]:
            out.append(entry.key)
    return out


def under(*prefixes: str) -> list[Key]:
    """The entries at or below any of ``prefixes`` (dotted keys), in schema order."""
    return [k for k in KEYS if any(k.key == p or k.key.startswith(p + ".") for p in prefixes)]


def check_key(cfg: Any, key: str, required: bool = False) -> Any:
    """Check ``key`` of ``cfg`` against its entry; return its value (a Step for a step kind).

    An absent key is null, unless the entry is optional (then nothing is checked and None returned) and not
    ``required``.
    """
    entry = SCHEMA[key]
    value = lookup(cfg, key, _ABSENT)
    if value is _ABSENT:
        if entry.optional and not required:
            return None
        value = None
    return entry.check(value)


def check(cfg: Any, *prefixes: str) -> None:
    """Check every entry at or below ``prefixes`` that no custom code checks (:meth:`Key.check`), in schema order;
    raise :class:`~lth.core.errors.ConfigError` naming the first bad key."""
    for entry in under(*prefixes):
        if not entry.custom:
            check_key(cfg, entry.key)
