"""The composed config, checked once before anything is written: :func:`validate` checks every key a user sets
(each key's own type, range or choices from :mod:`lth.config.schema`, and what one key cannot say alone), then
the classes it names (:mod:`lth.config.targets`, which imports torch and Lightning: a bad value is refused first).
The entry point then builds the typed :class:`lth.config.run.RunConfig` from it.
"""

from __future__ import annotations

import difflib
import fnmatch
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from lth.config.hardware import check_values
from lth.config.identity import class_folders  # noqa: F401 - dataset=image_folder's resolver, re-exported
from lth.config.key import group_options
from lth.config.lengths import check_lengths
from lth.config.run import Optim, Train
from lth.config.schema import (  # noqa: F401 - the names repeated for validation, re-exported
    CHANNEL_CRITERIA,
    CONTROLS,
    LOADERS,
    MAX_EPOCHS,
    MAX_ITERATIONS,
    MAX_ROUNDS,
    REWIND_MODES,
    SCHEDULES,
    WANDB_MODES,
    check,
    check_key,
    children,
    left_out,
    parse_step,
    run_only_keys,
)
from lth.config.targets import check_targets
from lth.config.trainer import (  # noqa: F401 - re-exported
    LOOP_OWNED,
    OPTIMIZER_KEYS,
    TRAINER_ARGS,
    check_loggers,
    check_optimizer,
    check_trainer,
)
from lth.config.transfer import check as check_transfer
from lth.core import catalog
from lth.core.errors import ConfigError
from lth.core.granularity import Granularity, parse_granularity
from lth.core.steps import Step

# -- validation -------------------------------------------------------------------------------------
# Everything here runs before torch or Lightning is imported (train.py validates first). Each key's own type,
# range or choices are in lth.config.schema (with the names repeated from the modules that use them, such as
# lth.lightning.module.SCHEDULES, which tests/test_bad_input.py compares); what is checked here is what one key
# cannot say alone.

AUGMENT_KEYS = children("dataset.augment")  # lth.data.augment.KEYS
# Where ``+key=value`` may add a key that no config group defines (fnmatch patterns of dotted keys); anywhere
# else a new key is a typo. Optimiser keyword arguments may be added when the optimiser takes them.
OPEN_MODELS = ("torchvision", "timm", "hf", "custom")  # model presets whose arguments are the library's or the user's
OPEN_KEYS = (
    "hydra.*",
    "prune.layer_rates.*",
    # a logger's own arguments: one per logger preset of conf/logger/ (many, none: sets of them, no arguments)
    *(f"logger.{name}.*" for name in group_options("logger") if name not in ("many", "none")),
    "callbacks.*",  # any Lightning callback: +callbacks.<name>._target_=... and its arguments
)


@dataclass(frozen=True)
class KnownData:
    """What a dataset of fixed files is: training images (before the validation split) and their shape."""

    train_size: int
    channels: int
    image_size: int
    num_classes: int


KNOWN_DATASETS = {  # by the source's _target_
    "lth.data.sources.mnist": KnownData(60000, 1, 28, 10),
    "lth.data.sources.fashion_mnist": KnownData(60000, 1, 28, 10),
    "lth.data.sources.cifar10": KnownData(50000, 3, 32, 10),
    "lth.data.sources.cifar100": KnownData(50000, 3, 32, 100),
}
IMAGE_FOLDER = "lth.data.sources.image_folder"
SYNTHETIC = "lth.data.sources.synthetic"
MNIST_SPLIT = "lth.data.sources.mnist_split"


def _rewind(cfg: DictConfig) -> str | Step:
    """``prune.rewind``: init | lr | none | a Step (what :func:`lth.lightning.callback.parse_rewind` accepts)."""
    return check_key(cfg, "prune.rewind")


def check_output_folder(value: Any, key: str) -> None:
    """Refuse an output folder that cannot be made: empty, a file, under a file, or in a read-only folder."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, f"got {value!r}; allowed: a folder path")
    path = Path(value).expanduser()
    for folder in (path, *path.parents):
        if not folder.exists():
            continue
        if not folder.is_dir():
            where = "is a file" if folder == path else f"lies under {folder}, which is a file"
            raise ConfigError(key, f"{value} {where}; allowed: a folder")
        if not os.access(folder, os.W_OK | os.X_OK) or not folder.stat().st_mode & 0o222:
            raise ConfigError(key, f"{folder} is read-only; allowed: a folder that can be written")
        return


def _dataset(cfg: DictConfig) -> int | None:
    """Check ``dataset``; return the size of the training split (after validation) when known without reading."""
    source = OmegaConf.select(cfg, "dataset.source") or {}
    target = source.get("_target_") if isinstance(source, DictConfig) else None
    known = KNOWN_DATASETS.get(target)
    if target == IMAGE_FOLDER and OmegaConf.select(cfg, "dataset.num_classes") is None:
        folder = Path(str(cfg.paths.data_dir)) / str(OmegaConf.select(cfg, "dataset.name"))
        raise ConfigError(
            "paths.data_dir",
            f"no class folders in {folder}/train; put one sub-folder of .png/.jpg images per class in "
            f"{folder}/train and {folder}/test, or pass paths.data_dir=<folder holding them>",
        )
    check(cfg, "dataset")
    channels = cfg.dataset.channels
    if target == IMAGE_FOLDER and channels not in (1, 3):
        raise ConfigError("dataset.channels", f"got {channels!r}; allowed for image folders: 1 (grey) or 3 (RGB)")
    if known is not None:
        name = target.rsplit(".", 1)[-1]
        for key in ("channels", "image_size", "num_classes"):
            if cfg.dataset[key] != getattr(known, key):
                raise ConfigError(
                    f"dataset.{key}", f"got {cfg.dataset[key]!r}; {name} has {getattr(known, key)}; allowed: that"
                )
    val_size = cfg.dataset.val_size
    size = known.train_size if known is not None else None
    if target == MNIST_SPLIT:
        digits = check_key(cfg, "dataset.source.digits", required=True)
        if len(set(digits)) != len(digits) or len(digits) < 2 or not all(float(d).is_integer() for d in digits):
            raise ConfigError("dataset.source.digits", f"got {list(digits)}; allowed: two or more different digits")
        if cfg.dataset.num_classes != len(digits):
            raise ConfigError(
                "dataset.num_classes", f"got {cfg.dataset.num_classes}; allowed: {len(digits)}, one per digit"
            )
    if target == SYNTHETIC:
        size = check_key(cfg, "dataset.source.train_size", required=True)
        check_key(cfg, "dataset.source.test_size", required=True)
    if size is not None and val_size >= size:
        raise ConfigError("dataset.val_size", f"must be in [1, {size - 1}] for {size} training images")
    for key in ("mean", "std"):
        values = OmegaConf.select(cfg, f"dataset.{key}")
        if values is not None and len(values) != channels:
            raise ConfigError(
                f"dataset.{key}", f"got {values!r}; allowed: {channels} number(s), one per channel, or null"
            )
    return size - val_size if size is not None else None


def check_steps(cfg: DictConfig, iterations_per_epoch: int | None) -> None:
    """Every Step of ``cfg`` against ``train.steps`` (:func:`lth.config.lengths.check_lengths`); with
    ``iterations_per_epoch=None`` (the data not read yet) only Steps in the same unit are compared."""
    sections = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("train", "optim")}
    check_lengths(Train.of(sections["train"]), _rewind(cfg), Optim.of(sections["optim"]).schedule, iterations_per_epoch)


def _processes(cfg: DictConfig) -> int | None:
    """DDP processes in all when ``hardware`` says so without asking the machine ('auto' or -1: None)."""
    devices, nodes = OmegaConf.select(cfg, "hardware.devices"), OmegaConf.select(cfg, "hardware.num_nodes") or 1
    if isinstance(devices, ListConfig | list):
        return len(devices) * nodes
    return devices * nodes if isinstance(devices, int) and devices > 0 else None


def _iterations_per_epoch(cfg: DictConfig, train_size: int | None, batch_size: int) -> int | None:
    """What :func:`lth.run.build.iterations_per_epoch` will say, when the split's size is known; also
    refuse a batch larger than the training split (of one rank's shard under DDP)."""
    if train_size is None:
        return None
    world = _processes(cfg)
    per_rank = train_size // (world or 1)
    if batch_size > per_rank:
        shard = f" per process ({world} processes)" if (world or 1) > 1 else ""
        raise ConfigError(
            "train.batch_size",
            f"got {batch_size}; allowed: at most {per_rank}, the training images{shard} "
            f"({train_size} after dataset.val_size)",
        )
    if world is None:
        return None
    if cfg.dataset.loader == "torchvision":  # Lightning's DistributedSampler pads every shard to ceil(n / world)
        batches = _ceil(_ceil(train_size, world), batch_size)
    else:
        batches = _ceil(per_rank, batch_size)  # the memory loader: len(x) // world samples per rank and epoch
    accumulate = OmegaConf.select(cfg, "trainer.accumulate_grad_batches") or 1
    return _ceil(batches, accumulate) if isinstance(accumulate, int) and accumulate > 0 else batches  # steps


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def new_key_allowed(cfg: DictConfig, key: str) -> bool:
    """Whether ``+key=value`` may add ``key``, which no config group defines (see :data:`OPEN_KEYS`)."""
    if any(fnmatch.fnmatchcase(key, pattern) for pattern in OPEN_KEYS):
        return True
    parent, _, leaf = key.rpartition(".")
    if parent == "model":  # pre-trained weights for any model; any constructor argument of an open model
        return leaf == "weights" or OmegaConf.select(cfg, "model.name") in OPEN_MODELS
    if parent == "trainer":  # validate() then refuses, naming where to set it, the arguments the loop owns
        return leaf in TRAINER_ARGS
    if parent == "optim.optimizer":
        return leaf in OPTIMIZER_KEYS.get(OmegaConf.select(cfg, "optim.optimizer._target_"), ())
    return False


def closest_key(cfg: DictConfig, key: str) -> str | None:
    """The key of ``cfg`` closest to ``key``, part by part (``prun.rate`` -> ``prune.rate``; past the last part
    that matches, the parts as typed: ``trainr.max_epochs`` -> ``trainer.max_epochs``); None where nothing
    matches."""
    node, parts, path = cfg, key.split("."), []
    for part in parts:
        names = [str(k) for k in node if not str(k).startswith("_")] if isinstance(node, DictConfig) else []
        close = [part] if part in names else difflib.get_close_matches(part, [n for n in names if n != "hydra"], n=1)
        if not close:
            break
        path.append(close[0])
        node = node._get_node(close[0])  # the node itself: an interpolation is not resolved
    found = ".".join([*path, *parts[len(path) :]])
    return found if path and found != key else None


def unknown_key(cfg: DictConfig, key: str) -> ConfigError:
    """The error for a key that the config does not have: its siblings, and the closest of them."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if not isinstance(node, DictConfig):
        close = closest_key(cfg, key)
        hint = f"; did you mean {close}?" if close else ""
        absent = object()
        if OmegaConf.select(cfg, parent, default=absent) is absent:  # a typo above the leaf: prun.rate
            return ConfigError(key, f"no such key: the config has no {parent}{hint}")
        return ConfigError(key, f"no such key: {parent} holds no keys{hint}")
    if parent == "optim.optimizer" and node.get("_target_") in OPTIMIZER_KEYS:
        target, allowed = node._target_, OPTIMIZER_KEYS[node._target_]
        if leaf in allowed:
            return ConfigError(key, f"not in this optim preset; add it with +{key}=<value>")
        return ConfigError(key, f"{target} takes no {leaf!r}; allowed: {', '.join(sorted(allowed))}")
    siblings = sorted(str(k) for k in node if not str(k).startswith("_") and str(k) != "hydra")
    close = difflib.get_close_matches(leaf, siblings, n=1)
    hint = f"; did you mean {parent + '.' if parent else ''}{close[0]}?" if close else ""
    return ConfigError(key, f"no such key; {parent or 'the config'} has: {', '.join(siblings)}{hint}")


def validate(cfg: DictConfig, machine: bool = True) -> None:
    """Check every user-set key up front; raise :class:`ConfigError` naming the first bad key. Torch and Lightning
    are imported only by the last check, of the classes the config names (:func:`lth.config.targets.check_targets`).

    ``machine``: also check what this machine must have (the GPUs asked for); off where the jobs run elsewhere
    (a SLURM sweep is validated on the machine that submits it).
    """
    check(cfg, "seed", "data_seed", "resume", "model")
    check_output_folder(OmegaConf.select(cfg, "paths.output_dir"), "paths.output_dir")
    check_output_folder(str(Path(str(cfg.paths.output_dir)) / "runs"), "paths.output_dir")
    data_dir = OmegaConf.select(cfg, "paths.data_dir")
    if not isinstance(data_dir, str) or not data_dir.strip() or Path(data_dir).expanduser().is_file():
        raise ConfigError("paths.data_dir", f"got {data_dir!r}; allowed: a folder path")
    check_values(cfg, machine=machine)  # hardware
    # pruning
    check(cfg, "prune")
    layer_rates = OmegaConf.select(cfg, "prune.layer_rates") or {}
    for pattern in layer_rates:
        value = layer_rates[pattern]
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 < value < 1:
            nested = isinstance(value, DictConfig)
            hint = f" (a dotted pattern is one key: prune.layer_rates={{{pattern}.x: 0.1}})" if nested else ""
            raise ConfigError(f"prune.layer_rates.{pattern}", f"got {value!r}; allowed: a number in (0, 1){hint}")
    target = OmegaConf.select(cfg, "prune.target_sparsity")
    if target is not None and layer_rates:
        raise ConfigError("prune.target_sparsity", "cannot be combined with prune.layer_rates; set one of them")
    if target is not None and OmegaConf.select(cfg, "prune.rounds") == 0:
        raise ConfigError("prune.rounds", "must be at least 1 when prune.target_sparsity is set")
    if any(set(pattern) <= {"*"} for pattern in OmegaConf.select(cfg, "prune.exclude") or []):
        raise ConfigError("prune.exclude", "'*' excludes every layer, which leaves no prunable weights")
    rewind = _rewind(cfg)
    rewinds_to = catalog.rewind_entry(rewind)
    if rewinds_to.has(catalog.HOLDS_FINAL_RATE) and OmegaConf.select(cfg, "optim.schedule.name") == "cosine":
        raise ConfigError(
            "prune.rewind",
            f"{rewind} fine-tunes at the schedule's final learning rate, which is 0 under optim.schedule.name=cosine; "
            "use prune.rewind=lr, or a step or constant optim.schedule.name",
        )
    granularity = parse_granularity(OmegaConf.select(cfg, "prune.granularity"))
    check_method(cfg, target, rewind, granularity)
    control = OmegaConf.select(cfg, "prune.control")
    if control is not None:
        catalog.CONTROLS.entry(control)
        if not rewinds_to.has(catalog.REWINDS_WEIGHTS):
            raise ConfigError("prune.control", f"{control} needs a rewind to weights (init or a Step), not {rewind}")
    if catalog.GRANULARITIES[granularity.kind].has(catalog.SETS_OWN_SPARSITY) and (target is not None or layer_rates):
        other = "prune.target_sparsity" if target is not None else "prune.layer_rates"
        raise ConfigError(
            "prune.granularity", f"{granularity} sets its own sparsity per round; {other} applies to weight only"
        )
    # training and data
    check(cfg, "train")
    train_size = _dataset(cfg)
    check_score_batches(cfg, train_size)
    check_optimizer(cfg)
    check_steps(cfg, _iterations_per_epoch(cfg, train_size, cfg.train.batch_size))
    check_loggers(cfg)
    check_trainer(cfg)
    check_transfer(cfg)  # model.weights, prune.mask_from
    check_targets(cfg)  # last: it imports the classes named (torch, Lightning)


def check_score_batches(cfg: DictConfig, train_size: int | None) -> None:
    """``prune.score_batches``, where the method reads it: at most the training batches of one epoch (the scores
    sum over one pass of the training split); a larger number would silently be fewer."""
    method = catalog.METHODS.entry(OmegaConf.select(cfg, "prune.method"))
    wanted, batch = OmegaConf.select(cfg, "prune.score_batches"), cfg.train.batch_size
    if train_size is None or not method.has(catalog.NEEDS_SCORE_BATCHES) or not isinstance(wanted, int):
        return
    if wanted > _ceil(train_size, batch):
        raise ConfigError(
            "prune.score_batches",
            f"got {wanted}; allowed: at most {_ceil(train_size, batch)}, the training batches of one epoch "
            f"({train_size} images in batches of train.batch_size={batch})",
        )


def check_method(cfg: DictConfig, target: float | None, rewind: str | Step, granularity: Granularity) -> None:
    """``prune.method``, as its catalog entry's traits say: a method that prunes once goes straight to
    ``prune.target_sparsity`` in one round; one that scores the initial weights trains from them
    (``prune.rewind=init``); one that ranks globally needs ``prune.scope=global``; one that finds masks of single
    weights needs ``prune.granularity=weight``."""
    name = OmegaConf.select(cfg, "prune.method")
    method = catalog.METHODS.entry(name)
    single = not catalog.GRANULARITIES[granularity.kind].has(catalog.SINGLE_WEIGHTS)
    if method.has(catalog.RANKS_GLOBALLY) and (
        OmegaConf.select(cfg, "prune.scope") != "global" or OmegaConf.select(cfg, "prune.layer_rates")
    ):
        raise ConfigError("prune.scope", f"prune.method={name} ranks globally; allowed: global, without layer_rates")
    if method.has(catalog.SINGLE_WEIGHTS) and single:
        raise ConfigError("prune.granularity", f"prune.method={name} finds masks of single weights; allowed: weight")
    if not method.has(catalog.PRUNES_ONCE):
        return
    if target is None:
        raise ConfigError(
            "prune.target_sparsity", f"prune.method={name} prunes once to a target sparsity; set it in (0, 1)"
        )
    rounds = OmegaConf.select(cfg, "prune.rounds")
    if rounds != 1:
        raise ConfigError("prune.rounds", f"prune.method={name} prunes once; allowed: 1, got {rounds}")
    if OmegaConf.select(cfg, "prune.mask_from") is not None:
        raise ConfigError("prune.mask_from", f"prune.method={name} finds its own masks; allowed: null")
    if method.has(catalog.SCORES_INITIAL_WEIGHTS) and not catalog.rewind_entry(rewind).has(catalog.FROM_INITIALISATION):
        raise ConfigError(
            "prune.rewind",
            f"prune.method={name} trains from the initial weights it scored; allowed: init, got {rewind}",
        )
