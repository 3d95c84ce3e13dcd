"""The config, checked once: one validation function for every key a user sets, and the run's identity.

The identity of an experiment is its resolved config without run-only keys (where it is written, how it
is logged, which hardware runs it) and without null values, so adding a key whose default is null never
renames old results. It names the run folder, so the same command finds the same folder again.
"""

from __future__ import annotations

import hashlib
import json
import numbers
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from lth.errors import ConfigError
from lth.steps import Step

RUN_ONLY = (
    "hydra",
    "paths",
    "logger",
    "hardware",
    "resume",
    "train.save_weights",
    "train.eval_batch_size",
    "train.progress",
    "train.checkpoint_every",
    "train.share_dense",
    "train.compile",
    "dataset.num_workers",
)


def _plain(cfg: Any) -> Any:
    if isinstance(cfg, DictConfig | ListConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def identity(cfg: DictConfig) -> dict:
    """The part of the config that defines the experiment (what the run folder's hash covers)."""
    plain = {k: _plain(cfg[k]) for k in cfg if k not in RUN_ONLY}  # never resolve hydra's node (it names the run)
    for key in RUN_ONLY:
        *parents, leaf = key.split(".")
        node = plain
        for parent in parents:
            node = node.get(parent) or {}
        node.pop(leaf, None)
    return _drop_nulls(plain)


def folder_name(cfg: DictConfig, ident: dict) -> str:
    """``<model>_<dataset>-<hash>``: a folder name for ``ident`` (an identity, or a part of one)."""
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{cfg.model.get('name', 'model')}_{cfg.dataset.get('name', 'data')}-{digest}"


def run_id(cfg: DictConfig) -> str:
    """The run folder's name: a short hash of :func:`identity`."""
    return folder_name(cfg, identity(cfg))


def register_resolvers() -> None:
    """Register ``${run_id:}`` so Hydra's run and sweep folders are named by the experiment's identity."""
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", lambda *, _root_: run_id(_root_))


# -- validation -------------------------------------------------------------------------------------


def _number(
    cfg: DictConfig,
    key: str,
    low: float,
    high: float,
    *,
    open_low: bool = True,
    open_high: bool = True,
    integer: bool = False,
    allow_none: bool = False,
) -> Any:
    value = OmegaConf.select(cfg, key)
    if value is None and allow_none:
        return None
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, numbers.Integral if integer else numbers.Real) and not isinstance(value, bool)
    lo_ok = ok_type and (value > low if open_low else value >= low)
    hi_ok = ok_type and (value < high if open_high else value <= high)
    if not (ok_type and lo_ok and hi_ok):
        bounds = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        extra = " or null" if allow_none else ""
        raise ConfigError(key, f"got {value!r}; allowed: {kind} in {bounds}{extra}")
    return value


def _step(cfg: DictConfig, key: str, positive: bool = True) -> Step:
    step = Step.parse(OmegaConf.select(cfg, key), key=key)
    if positive and step == Step():
        raise ConfigError(key, f"got {step}; it must be longer than 0it")
    return step


def _choice(cfg: DictConfig, key: str, allowed: tuple[str, ...]) -> str:
    value = OmegaConf.select(cfg, key)
    if value not in allowed:
        raise ConfigError(key, f"got {value!r}; allowed: {', '.join(allowed)}")
    return value


def validate(cfg: DictConfig) -> None:
    """Check every user-set key up front; raise :class:`ConfigError` naming the first bad key."""
    from lth.callback import parse_rewind  # imported here: train.py --help must not wait for torch
    from lth.controls import control_fn
    from lth.module import SCHEDULES

    inf = float("inf")
    _number(cfg, "seed", 0, 2**31, open_low=False, integer=True)
    _number(cfg, "data_seed", 0, 2**31, open_low=False, integer=True, allow_none=True)
    # pruning
    _number(cfg, "prune.rate", 0, 1)
    rounds = _number(cfg, "prune.rounds", 0, inf, open_low=False, integer=True)
    target = _number(cfg, "prune.target_sparsity", 0, 1, allow_none=True)
    _choice(cfg, "prune.scope", ("global", "layer"))
    layer_rates = OmegaConf.select(cfg, "prune.layer_rates") or {}
    if not isinstance(layer_rates, DictConfig | dict):
        raise ConfigError("prune.layer_rates", "must be a mapping of layer-name pattern to rate, e.g. {'*out': 0.1}")
    for pattern in layer_rates:
        value = layer_rates[pattern]
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 < value < 1:
            raise ConfigError(f"prune.layer_rates.{pattern}", f"got {value!r}; allowed: a number in (0, 1)")
    if target is not None and layer_rates:
        raise ConfigError("prune.target_sparsity", "cannot be combined with prune.layer_rates; set one of them")
    if target is not None and rounds == 0:
        raise ConfigError("prune.rounds", "must be at least 1 when prune.target_sparsity is set")
    for key in ("include", "exclude", "extra"):
        value = OmegaConf.select(cfg, f"prune.{key}")
        if value is not None and not (isinstance(value, ListConfig | list) and all(isinstance(v, str) for v in value)):
            raise ConfigError(f"prune.{key}", f"got {value!r}; allowed: a list of name patterns, e.g. ['*conv*']")
    rewind = parse_rewind(OmegaConf.select(cfg, "prune.rewind"))
    control = OmegaConf.select(cfg, "prune.control")
    if control is not None:
        control_fn(control)
        if rewind in ("lr", "none"):
            raise ConfigError("prune.control", f"{control} needs a rewind to weights (init or a Step), not {rewind}")
    # training
    _step(cfg, "train.steps")
    _step(cfg, "train.eval_every")
    _number(cfg, "train.batch_size", 1, inf, open_low=False, integer=True)
    _number(cfg, "train.eval_batch_size", 1, inf, open_low=False, integer=True)
    check_lengths(cfg, iterations_per_epoch=None)
    _number(cfg, "dataset.val_size", 1, inf, open_low=False, integer=True)
    # optimiser
    _number(cfg, "optim.optimizer.lr", 0, inf)
    _choice(cfg, "optim.schedule.name", SCHEDULES)
    for milestone in OmegaConf.select(cfg, "optim.schedule.milestones") or []:
        Step.parse(milestone, key="optim.schedule.milestones")
    _step(cfg, "optim.schedule.warmup", positive=False)
    _number(cfg, "optim.schedule.gamma", 0, inf)


def check_lengths(cfg: DictConfig, iterations_per_epoch: int | None) -> tuple[int, int]:
    """Resolve ``train.steps`` and ``train.eval_every`` to iterations; check they and the rewind point fit.

    With ``iterations_per_epoch=None`` (data not loaded yet) only lengths given in iterations are compared.
    """
    from lth.callback import parse_rewind

    ipe = iterations_per_epoch or 0
    steps, eval_every = Step.parse(cfg.train.steps), Step.parse(cfg.train.eval_every)
    rewind = parse_rewind(cfg.prune.rewind)
    known = lambda *xs: iterations_per_epoch is not None or all(x.epochs == 0 for x in xs)  # noqa: E731
    total = steps.to_iterations(ipe)
    if known(steps, eval_every) and eval_every.to_iterations(ipe) > total:
        raise ConfigError("train.eval_every", f"{eval_every} is beyond train.steps={steps}; allowed: at most that")
    if isinstance(rewind, Step) and known(steps, rewind) and rewind.to_iterations(ipe) >= total:
        raise ConfigError("prune.rewind", f"{rewind} is not before the end of training (train.steps={steps})")
    return total, eval_every.to_iterations(ipe)
