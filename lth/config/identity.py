"""The run's identity: what names its folder, so the same experiment finds the same folder again.

The identity of an experiment is its resolved config without run-only keys (where it is written, how it is logged,
which hardware runs it) and without null values, so adding a key whose default is null never renames old results.
It is computed from plain data (:attr:`lth.config.run.RunConfig.plain`, an old run's ``config.yaml``), and for
Hydra's ``${run_id:}`` from the composed config (:func:`register_resolvers`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from lth.config.run import thawed
from lth.config.schema import CONF, left_out, run_only_keys
from lth.config.transfer import mask_identity

# What the identity leaves out: the schema's run-only keys (lth.config.schema.KEYS), Hydra's node, and the Trainer's
# _target_/_partial_
RUN_ONLY = run_only_keys()
DEFAULT_TRAINING_HARDWARE = {"world_size": 1, "precision": "32-true"}
COPY = re.compile(r"\$\{(\.*)([\w.]+)\}")  # a value that is another key's: ${..channels}, ${model.name}
PRECISION_NAMES = {"64": "64-true", "32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed"}


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _pop(tree: dict, key: str) -> None:
    """Remove the dotted ``key`` from a nested dict, if it is there."""
    *parents, leaf = key.split(".")
    for parent in parents:
        tree = tree.get(parent) or {}
    tree.pop(leaf, None)


def identity(plain: Mapping[str, Any]) -> dict:
    """The part of the config ``plain`` (resolved, as plain data) that defines the experiment: what the run folder's
    hash covers.

    The hardware is run-only except for what changes the trained weights beyond floating-point order: the number
    of processes (the effective batch is ``train.batch_size`` times it) and the precision. They enter the identity
    as ``hardware.world_size`` and ``hardware.precision`` when they differ from one process in 32-bit, so runs
    made on one device keep their names.
    """
    tree = {k: thawed(v) for k, v in plain.items() if k not in RUN_ONLY}
    for key in RUN_ONLY:
        _pop(tree, key)
    hardware = training_hardware(plain.get("hardware") or {})
    if hardware != DEFAULT_TRAINING_HARDWARE:
        tree["hardware"] = hardware
    tree = _drop_nulls(tree)
    for key in left_out(plain):  # keys at the value runs had before them, and options nothing reads
        _pop(tree, key)
    if (tree.get("prune") or {}).get("mask_from"):  # the mask's content, wherever its file lies
        tree["prune"]["mask_from"] = mask_identity(tree["prune"]["mask_from"])
    for key in ("trainer", "callbacks"):  # Trainer arguments and callbacks count once set (none: no trace)
        if not tree.get(key):
            tree.pop(key, None)
    return tree


def training_hardware(hw: Mapping[str, Any]) -> dict:
    """What of the ``hardware`` mapping changes the trained weights: processes in all, and the numeric precision."""
    devices, nodes = hw.get("devices", 1), hw.get("num_nodes", 1)
    if isinstance(devices, Sequence) and not isinstance(devices, str):  # device indices: one process each
        devices = len(devices)
    # "auto" or -1 (every device of the machine) is named as given: how many that is depends on the machine
    world_size = devices * nodes if isinstance(devices, int) and devices > 0 and isinstance(nodes, int) else None
    precision = str(hw.get("precision", "32-true"))
    return {
        "world_size": world_size if world_size is not None else f"{devices}x{nodes}",
        "precision": PRECISION_NAMES.get(precision, precision),  # Lightning's aliases are the same training
    }


def folder_name(plain: Mapping[str, Any], ident: dict) -> str:
    """``<model>_<dataset>-<hash>``: a folder name for ``ident`` (an identity, or a part of one) of ``plain``."""
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:10]
    model, dataset = plain.get("model") or {}, plain.get("dataset") or {}
    return f"{model.get('name', 'model')}_{dataset.get('name', 'data')}-{digest}"


def run_id(plain: Mapping[str, Any]) -> str:
    """The run folder's name: a short hash of :func:`identity`."""
    return folder_name(plain, identity(plain))


def composed(cfg: Any) -> dict:
    """A composed Hydra config as the plain data :func:`identity` reads: resolved, Hydra's node and the run-only
    groups left out (their interpolations may name Hydra's runtime) but the hardware."""
    from omegaconf import DictConfig, OmegaConf

    def plain(value: Any) -> Any:
        return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value

    return {k: plain(cfg[k]) for k in cfg if k not in RUN_ONLY or k == "hardware"}


@cache
def _default_config(choices: tuple[tuple[str, str], ...]) -> Any:
    """The default config composed with the group options ``choices``, unresolved."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    overrides = [f"{group}={option}" for group, option in choices]
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app (train.py): its config folder is conf/
        return compose("config", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


@cache
def default_identity(choices: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    """The identity of the default config (``conf/config.yaml``) with the group options ``choices``
    (``(("model", "conv2"),)``) chosen."""
    return identity(composed(_default_config(choices)))


@cache
def copied_keys(choices: tuple[tuple[str, str], ...] = ()) -> dict[str, str]:
    """The keys of the default config with the group options ``choices`` whose value is a copy of another key's
    (``dataset.source.channels: ${..channels}``), each with the key it copies (``dataset.channels``)."""
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(_default_config(choices), resolve=False)
    copies: dict[str, str] = {}

    def walk(node: Mapping[str, Any], path: tuple[str, ...]) -> None:
        for key, value in node.items():
            if isinstance(value, Mapping):
                walk(value, (*path, str(key)))
            elif isinstance(value, str) and (found := COPY.fullmatch(value)):
                dots, source = found.groups()
                # no dot: from the root; one: beside the key; each more dot: one node up
                above = path[: len(path) - max(len(dots) - 1, 0)] if dots else ()
                copies[".".join((*path, str(key)))] = ".".join((*above, source))

    walk({k: v for k, v in raw.items() if k != "hydra"}, ())
    return copies


def register_resolvers() -> None:
    """Register ``${run_id:}`` so Hydra's run and sweep folders are named by the experiment's identity, and
    ``${class_folders:<data_dir>,<name>}``, the class count of ``dataset=image_folder`` (:func:`class_folders`)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", lambda *, _root_: run_id(composed(_root_)))
    if not OmegaConf.has_resolver("class_folders"):
        OmegaConf.register_new_resolver("class_folders", class_folders)


def class_folders(data_dir: str, name: str) -> int | None:
    """The number of class folders in ``<data_dir>/<name>/train`` (``dataset=image_folder``), None if none."""
    train = Path(str(data_dir)).expanduser() / str(name) / "train"
    count = sum(1 for p in train.iterdir() if p.is_dir()) if train.is_dir() else 0
    return count or None
