"""The run configuration as one frozen, typed object, built once by the entry point from the validated config.

Everything below the entry point (the loop, the builders, the run folder, the tools) takes a :class:`RunConfig`:
Steps are parsed, ideas are catalog entries (:mod:`lth.core.catalog`), every default comes from ``conf/`` (there is
no ``get(key, default)`` below this module), and Hydra's facts about the job are read once (:class:`Job`). What the
user writes free-form for a library to build (a model's, a dataset source's, an optimiser's, a logger's, Lightning's
Trainer and callbacks' arguments) stays a read-only mapping, given to ``hydra.utils.instantiate`` as plain data.

:attr:`RunConfig.plain` is the resolved config as plain data: the run's identity is computed from it, and it is what
``config.yaml`` holds. Old run folders' ``config.yaml`` lack keys added since; :func:`migrate` gives them the values
those runs had (the defaults, which never change what an old key meant). Pure Python: no torch, no Hydra import.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from lth.core.catalog import CONTROLS, GRANULARITIES, METHODS, REWIND_WORDS, Entry, rewind_entry
from lth.core.granularity import Granularity, parse_granularity
from lth.core.steps import Step


def frozen(value: Any) -> Any:
    """``value`` read-only all the way down: mappings as mapping proxies, lists as tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: frozen(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(frozen(v) for v in value)
    return value


def thawed(value: Any) -> Any:
    """A plain, mutable copy of ``value`` (dicts and lists), what ``hydra.utils.instantiate`` and YAML take."""
    if isinstance(value, Mapping):
        return {k: thawed(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):  # a tuple, a list, a ListConfig
        return [thawed(v) for v in value]
    return value


def _step(value: Any) -> Step | None:
    return None if value is None else Step.parse(value)


@dataclass(frozen=True)
class Train:
    """``train.*``: the length of a round, the evaluation cadence, batches; run-only switches."""

    steps: Step
    eval_every: Step
    batch_size: int
    eval_batch_size: int
    save_weights: bool
    progress: bool
    checkpoint_every: Step | None
    compile: bool
    share_dense: bool

    @classmethod
    def of(cls, t: Mapping[str, Any]) -> Train:
        """From the ``train`` mapping."""
        return cls(
            steps=Step.parse(t["steps"]),
            eval_every=Step.parse(t["eval_every"]),
            batch_size=int(t["batch_size"]),
            eval_batch_size=int(t["eval_batch_size"]),
            save_weights=bool(t["save_weights"]),
            progress=bool(t["progress"]),
            checkpoint_every=_step(t["checkpoint_every"]),
            compile=bool(t["compile"]),
            share_dense=t["share_dense"] is not False,  # null: the default, shared
        )


@dataclass(frozen=True)
class EarlyBird:
    """``prune.early_bird.*``: the draw criterion of ``prune.method=early_bird``."""

    window: int
    epsilon: float
    distance: str


@dataclass(frozen=True)
class Prune:
    """``prune.*``: how masks are found, how many rounds, where survivors rewind to, which control."""

    rate: float
    rounds: int
    target_sparsity: float | None
    scope: str
    layer_rates: Mapping[str, float]
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    extra: tuple[str, ...]
    rewind: str | Step
    mask_from: str | None
    mask_from_zeros: bool
    mask_unmatched: str | None
    control: Entry | None
    method: Entry
    early_bird: EarlyBird
    score_batches: int
    synflow_iterations: int
    granularity: Granularity
    channel_criterion: str

    @property
    def rewinds_to(self) -> Entry:
        """The catalog entry of :attr:`rewind` (its traits: weights or schedule, the initialisation or not)."""
        return rewind_entry(self.rewind)

    @property
    def grain(self) -> Entry:
        """The catalog entry of :attr:`granularity`."""
        return GRANULARITIES[self.granularity.kind]

    @classmethod
    def of(cls, p: Mapping[str, Any]) -> Prune:
        """From the ``prune`` mapping."""
        rewind = p["rewind"]
        return cls(
            rate=float(p["rate"]),
            rounds=int(p["rounds"]),
            target_sparsity=None if p["target_sparsity"] is None else float(p["target_sparsity"]),
            scope=str(p["scope"]),
            layer_rates=frozen(dict(p["layer_rates"] or {})),
            include=tuple(p["include"] or ()),
            exclude=tuple(p["exclude"] or ()),
            extra=tuple(p["extra"] or ()),
            rewind=rewind if rewind in REWIND_WORDS else Step.parse(rewind, key="prune.rewind"),
            mask_from=p["mask_from"],
            mask_from_zeros=bool(p["mask_from_zeros"]),
            mask_unmatched=p["mask_unmatched"],
            control=None if p["control"] is None else CONTROLS.entry(p["control"]),
            method=METHODS.entry(p["method"]),
            early_bird=EarlyBird(**p["early_bird"]),
            score_batches=int(p["score_batches"]),
            synflow_iterations=int(p["synflow_iterations"]),
            granularity=parse_granularity(p["granularity"]),
            channel_criterion=str(p["channel_criterion"]),
        )


@dataclass(frozen=True)
class Schedule:
    """``optim.schedule.*``: the learning-rate schedule over a round."""

    name: str
    milestones: tuple[Step, ...]
    gamma: float
    warmup: Step


@dataclass(frozen=True)
class Optim:
    """``optim.*``: the optimiser (its class and arguments, for ``instantiate``) and the schedule."""

    name: str
    optimizer: Mapping[str, Any]
    schedule: Schedule

    @classmethod
    def of(cls, o: Mapping[str, Any]) -> Optim:
        """From the ``optim`` mapping."""
        s = o["schedule"]
        schedule = Schedule(
            str(s["name"]),
            tuple(Step.parse(m) for m in s["milestones"] or ()),
            float(s["gamma"]),
            Step.parse(s["warmup"]),
        )
        return cls(str(o["name"]), frozen(o["optimizer"]), schedule)


@dataclass(frozen=True)
class Dataset:
    """``dataset.*``: the images (their source, for ``instantiate``), their shape, the validation split, batching."""

    name: str
    source: Mapping[str, Any]
    channels: int
    image_size: int
    num_classes: int
    val_size: int
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    augment: Mapping[str, Any] | None
    loader: str
    num_workers: int

    @classmethod
    def of(cls, d: Mapping[str, Any]) -> Dataset:
        """From the ``dataset`` mapping."""
        return cls(
            name=str(d["name"]),
            source=frozen(d["source"]),
            channels=int(d["channels"]),
            image_size=int(d["image_size"]),
            num_classes=int(d["num_classes"]),
            val_size=int(d["val_size"]),
            mean=None if d["mean"] is None else tuple(d["mean"]),
            std=None if d["std"] is None else tuple(d["std"]),
            augment=frozen(d["augment"]) if d["augment"] else None,
            loader=str(d["loader"]),
            num_workers=int(d["num_workers"]),
        )


@dataclass(frozen=True)
class Hardware:
    """``hardware.*``: where the run trains (Lightning's accelerator, devices, strategy, precision) and threads."""

    accelerator: str
    devices: Any  # a count, -1, "auto", or GPU indices
    num_nodes: int
    strategy: str
    precision: str
    threads: int | None
    rank_report: bool

    @classmethod
    def of(cls, h: Mapping[str, Any]) -> Hardware:
        """From the ``hardware`` mapping."""
        return cls(
            accelerator=str(h["accelerator"]),
            devices=frozen(h["devices"]),
            num_nodes=int(h["num_nodes"]),
            strategy=str(h["strategy"]),
            precision=str(h["precision"]),
            threads=None if h["threads"] is None else int(h["threads"]),
            rank_report=bool(h["rank_report"]),
        )


@dataclass(frozen=True)
class Job:
    """What Hydra knows about this job, read once by the entry point (:func:`lth.config.entry.hydra_job`); nothing
    below it asks Hydra's global state.

    ``output_dir``: the job's folder that Hydra made (None outside Hydra: ``<paths.output_dir>/runs/<run_id>``);
    ``multirun``: one job of a ``-m`` sweep, whose folder is ``sweep_dir``; ``argv``: the command line as typed,
    where this process read it (for the line that says how to continue a stopped run); ``overrides``: the job's own
    overrides; ``experiment``: the ``experiment=`` chosen; ``swept``: the keys (or config groups) the sweep varies,
    each with this job's value as its override writes it (``(("prune.rate", "0.2"),)``; none outside a sweep).
    """

    output_dir: str | None = None
    multirun: bool = False
    argv: tuple[str, ...] | None = None
    overrides: tuple[str, ...] = ()
    sweep_dir: str | None = None
    experiment: str | None = None
    swept: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class RunConfig:
    """One job's configuration, validated and typed. Build it with :func:`RunConfig.of`."""

    seed: int
    data_seed: int | None
    resume: bool
    train: Train
    prune: Prune
    optim: Optim
    dataset: Dataset
    model: Mapping[str, Any]
    hardware: Hardware
    data_dir: str
    output_dir: str
    trainer: Mapping[str, Any]
    callbacks: Mapping[str, Any]
    logger: Mapping[str, Any]
    plain: Mapping[str, Any]  # the resolved config as plain data (identity, config.yaml)
    job: Job = Job()

    @classmethod
    def of(cls, plain: Mapping[str, Any], job: Job = Job()) -> RunConfig:
        """The typed config of ``plain`` (a resolved config as plain data, without Hydra's node), already
        validated; an old run folder's config comes migrated (:func:`lth.state.artifacts.read_plain`)."""
        plain = frozen(plain)
        return cls(
            seed=int(plain["seed"]),
            data_seed=plain["data_seed"],
            resume=bool(plain["resume"]),
            train=Train.of(plain["train"]),
            prune=Prune.of(plain["prune"]),
            optim=Optim.of(plain["optim"]),
            dataset=Dataset.of(plain["dataset"]),
            model=plain["model"],
            hardware=Hardware.of(plain["hardware"]),
            data_dir=str(plain["paths"]["data_dir"]),
            output_dir=str(plain["paths"]["output_dir"]),
            trainer=plain["trainer"] or MappingProxyType({}),
            callbacks=plain["callbacks"] or MappingProxyType({}),
            logger=plain["logger"] or MappingProxyType({}),
            plain=plain,
            job=job,
        )

    def but(self, **values: Any) -> RunConfig:
        """This config with dotted keys set (``but(**{"prune.control": None, "resume": True})``), typed again; the
        job's facts are kept except its folder, which belongs to this config alone."""
        tree = thawed(self.plain)
        for key, value in values.items():
            *parents, leaf = key.split(".")
            node = tree
            for parent in parents:
                node = node[parent]
            node[leaf] = value
        return RunConfig.of(tree, replace(self.job, output_dir=None))

    @property
    def model_name(self) -> str:
        """``model.name``: the model preset, first part of the run folder's name."""
        return str(self.model.get("name", "model"))


# -- old run folders -------------------------------------------------------------------------------------------
# Keys added after the first runs were written, with the value every run before them had (so their meaning and
# their run id stand). A config.yaml written before a key existed reads as if it held this value.
ADDED_KEYS: dict[str, Any] = {
    "train.eval_batch_size": 1000,
    "train.save_weights": True,
    "train.progress": False,
    "train.checkpoint_every": None,
    "train.compile": False,
    "train.share_dense": True,
    "prune.target_sparsity": None,
    "prune.scope": "global",
    "prune.layer_rates": {},
    "prune.include": [],
    "prune.exclude": [],
    "prune.extra": [],
    "prune.rewind": "init",
    "prune.mask_from": None,
    "prune.mask_unmatched": None,
    "prune.mask_from_zeros": False,
    "prune.control": None,
    "prune.method": "magnitude",
    "prune.early_bird": {"window": 5, "epsilon": 0.1, "distance": "all"},
    "prune.score_batches": 10,
    "prune.synflow_iterations": 100,
    "prune.granularity": "weight",
    "prune.channel_criterion": "l1",
    "dataset.mean": None,
    "dataset.std": None,
    "dataset.augment": None,
    "dataset.loader": "memory",
    "dataset.num_workers": 0,
    "optim.schedule": {"name": "constant", "milestones": [], "gamma": 0.1, "warmup": "0it"},
    "optim.schedule.warmup": "0it",
    "hardware": {"accelerator": "auto", "devices": 1, "num_nodes": 1, "strategy": "auto", "precision": "32-true"},
    "hardware.num_nodes": 1,
    "hardware.threads": None,
    "hardware.rank_report": False,
    "trainer": {},
    "callbacks": {},
    "logger": {},
    "data_seed": None,
    "resume": False,
}


def migrate(plain: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``plain`` with every key of :data:`ADDED_KEYS` that it lacks, at the value runs had before it."""
    tree = copy.deepcopy(thawed(plain))
    for key, value in ADDED_KEYS.items():
        *parents, leaf = key.split(".")
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
        if leaf not in node:
            node[leaf] = copy.deepcopy(value)
    return tree
