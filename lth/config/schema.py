"""Every user-facing config key, defined once: its type, what is allowed, whether it is run-only, and its help.

:data:`KEYS` is the one list. From it come the simple per-key checks of :func:`lth.config.validate.validate` (type,
range, choice: :func:`check`), :data:`lth.config.validate.RUN_ONLY` (:func:`run_only_keys`, what the run's identity
leaves out) and the README's key table (:func:`render_table`). Defaults are not here: they stay in the YAML files of
``conf/`` (Hydra's one source of defaults), and the table reads them by composing the config.

What one key cannot say about itself (``train.eval_every`` at most ``train.steps``, ``dataset.mean`` one number per
channel, the hardware this machine has) is checked by the cross-key code of :mod:`lth.config.validate` and
:mod:`lth.config.hardware`; an entry's ``also`` says it in words for the table, and ``custom`` names the code that
checks an entry whose values no kind describes.

Pure Python: importing this module loads neither torch, Lightning nor Hydra (``train.py`` validates before
importing torch); only :func:`compose` and the table import Hydra.

``python -m lth.config.schema`` prints the table; ``--readme`` rewrites it in README.md, ``--check`` exits 1 if the
README's table is out of step.
"""

from __future__ import annotations

import argparse
import numbers
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from lth.config.hardware import ACCELERATORS, PRECISIONS, STRATEGIES
from lth.core import catalog
from lth.core.errors import ConfigError
from lth.core.steps import Step

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
README = REPO / "README.md"
START, END = "<!-- keys:start -->", "<!-- keys:end -->"

MAX_ITERATIONS = 10**9  # a length past a billion iterations is a typo, not an experiment
MAX_EPOCHS = 10**6
MAX_ROUNDS = 1000
# Names that live next to the code using them, repeated here so that validation needs no torch;
# tests/test_bad_input.py checks that the copies agree. The ideas (methods, controls, rewinds) are the catalog's.
SCHEDULES = ("constant", "step", "cosine")  # lth.lightning.module.SCHEDULES
CONTROLS = catalog.CONTROLS.names
PRUNING_AT_INIT = catalog.METHODS.with_trait(catalog.SCORES_INITIAL_WEIGHTS)
METHODS = catalog.METHODS.names
EARLY_BIRD_DISTANCES = ("all", "kept")  # lth.core.earlybird.DISTANCES
CHANNEL_CRITERIA = ("l1", "l2", "bn_scale")  # lth.core.granularity.CHANNEL_CRITERIA
REWIND_MODES = catalog.REWIND_WORDS
LOADERS = ("memory", "torchvision")  # lth.data.module.LOADERS
WANDB_MODES = ("online", "offline", "disabled")

KINDS = ("int", "number", "bool", "choice", "str", "step", "steps", "patterns", "numbers", "mapping", "group", "path")
# Parts of the config whose keys are free-form, so not each an entry: Hydra's own node, mappings whose keys the user
# names (layer patterns, callbacks), the loggers' arguments, a dataset source's and a model's constructor arguments
# (documented in their conf/ files, checked where the object is built). An entry may still name a key inside one.
FREE_FORM = ("hydra", "prune.layer_rates", "callbacks", "logger", "dataset.source", "model")
# Run-only keys that are not user-facing: Hydra's node, and the Trainer's _target_/_partial_ (so that a trainer node
# without arguments leaves no trace in the identity). They frame the schema's run-only keys in RUN_ONLY.
RUN_ONLY_FIRST = ("hydra",)
RUN_ONLY_LAST = ("trainer._target_", "trainer._partial_")

_ABSENT = object()


_RANGE = re.compile(r"^(\w+)(?: ([\[(])(\S+), (\S+)([\])])| (>=|>) (\S+))?$")


def _bound(text: str) -> int | float:
    return float(text) if any(c in text for c in ".e") else int(text)


@dataclass(frozen=True)
class Key:
    """One config key: what it is, what is allowed, and what it does.

    ``spec``: the kind, then for int, number, numbers and step an optional range, ``(0, 1)``, ``[0, 1000]``,
    ``>= 1`` or ``> 0``. Kinds: int | number | bool | choice (``choices``) | str (a non-empty string) | step (a
    Step, longer than 0it unless the range says ``>= 0``; ``choices``: words allowed instead) | steps (a list of
    Steps longer than 0it) | patterns (a list of name patterns) | numbers (a list of numbers, ``length`` of them,
    each in the range) | mapping (``closed``: its keys are the entries below it) | group (a config group's node,
    shown as the chosen preset) | path.
    ``nullable``: null is allowed. ``optional``: checked only when present (a key that some presets lack).
    ``run_only``: not part of the run's identity (entries below a run-only entry are run-only too).
    ``where``: the overrides under which the key exists when the default config lacks it; ``addable``: it may be
    added with ``+key=value`` (under ``where``). ``allowed_text``: the allowed values in words (null included),
    where the kind cannot say them (``{options}``: a group's presets). ``also``: what other keys constrain (for the
    table). ``custom``: the code that checks the value instead of :meth:`check`. ``unnamed_at``: the value at which
    the identity leaves the key out (what every run did before the key existed), so that their run ids stand.
    ``used_with``: ``(key, values)``: the key (and what is below it) is read, so in the identity, only where that
    other key has one of ``values`` (a method's options, say); see :func:`left_out`.
    """

    key: str
    spec: str
    help: str
    choices: tuple[Any, ...] = ()
    length: int | None = None
    closed: bool = False
    nullable: bool = False
    optional: bool = False
    run_only: bool = False
    where: str = ""
    addable: bool = False
    example: str = ""
    allowed_text: str = ""
    also: str = ""
    custom: str = ""
    unnamed_at: Any = None
    used_with: tuple[str, tuple[Any, ...]] | None = None
    kind: str = field(init=False)
    low: int | float | None = field(init=False, default=None)
    high: int | float | None = field(init=False, default=None)
    open_low: bool = field(init=False, default=False)
    open_high: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        match = _RANGE.match(self.spec)
        if match is None or match.group(1) not in KINDS:
            raise ValueError(f"{self.key}: cannot read the spec {self.spec!r}")
        kind, left, low, high, right, sign, bound = match.groups()
        if left:
            values = {"low": _bound(low), "high": _bound(high), "open_low": left == "(", "open_high": right == ")"}
        elif sign:
            values = {"low": _bound(bound), "open_low": sign == ">"}
        else:
            values = {}
        for name, value in {"kind": kind, **values}.items():
            object.__setattr__(self, name, value)
        if "\n" in self.help or not self.help:
            raise ValueError(f"{self.key}: the help is one line")

    @property
    def leaf(self) -> str:
        """The last part of the dotted key."""
        return self.key.rpartition(".")[2]

    @property
    def allowed(self) -> str:
        """What is allowed, in words: the text of errors and of the table's *allowed* column."""
        kind = self.kind
        if self.allowed_text:
            text = self.allowed_text.format(options=", ".join(group_options(self.key)))
        elif kind in ("int", "number"):
            text = self._range("an integer" if kind == "int" else "a number")
        elif kind == "bool":
            text = "true, false" if self.nullable else "true or false"
        elif kind == "choice":
            text = ", ".join(str(c) for c in self.choices)
        elif kind == "str":
            text = "a name"
        elif kind == "step":
            words = f"{', '.join(self.choices)} or " if self.choices else ""
            text = f"{words}a Step{'' if self.low == 0 else ' longer than 0it'} (500it, 2ep, 2ep50it)"
        elif kind == "steps":
            text = "a list of Steps longer than 0it"
        elif kind == "patterns":
            text = "a list of name patterns"
        elif kind == "numbers":
            count = f"{self.length} numbers" if self.length else "a list of numbers"
            text = self._range(count) if self.low is not None else count
        elif kind == "mapping":
            text = f"a mapping (keys: {', '.join(children(self.key))})" if self.closed else "a mapping"
        else:
            text = "a folder path" if kind == "path" else "a preset"
        if self.nullable and not self.allowed_text:
            text = f"{text} or null"
        return f"{text}, e.g. {self.example}" if self.example else text

    def _range(self, what: str) -> str:
        if self.high is None:
            return f"{what} {'>' if self.open_low else '>='} {self.low}"
        return f"{what} in {'(' if self.open_low else '['}{self.low}, {self.high}{')' if self.open_high else ']'}"

    def _within(self, value: Any) -> bool:
        low_ok = self.low is None or (value > self.low if self.open_low else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.open_high else value <= self.high)
        return low_ok and high_ok

    def error(self, value: Any) -> ConfigError:
        """``<key>: got <value>; allowed: <what is allowed>``."""
        return ConfigError(self.key, f"got {value!r}; allowed: {self.allowed}")

    def check(self, value: Any) -> Any:
        """Refuse ``value`` (the key's value; None for null or absent) unless this key allows it; return it, a
        :class:`~lth.core.steps.Step` for a step kind."""
        if value is None:
            if self.nullable:
                return None
            if self.kind != "step":  # Step.parse says what a Step is
                raise self.error(value)
        kind = self.kind
        if kind in ("int", "number"):
            ok = _is_number(value, integer=kind == "int") and self._within(value)
        elif kind == "bool":
            ok = isinstance(value, bool)
        elif kind == "choice":
            ok = isinstance(value, str | int | float) and value in self.choices
        elif kind == "str":
            ok = isinstance(value, str) and bool(value.strip())
        elif kind == "step":
            if self.choices and value in self.choices:
                return value
            try:
                return parse_step(value, self.key, positive=self.low != 0)
            except ConfigError:
                if not self.choices:
                    raise
                raise self.error(value) from None
        elif kind == "steps":
            if not isinstance(value, ListConfig | list):
                raise self.error(value)
            return [parse_step(step, self.key) for step in value]
        elif kind == "patterns":
            ok = isinstance(value, ListConfig | list) and all(isinstance(v, str) for v in value)
        elif kind == "numbers":
            ok = isinstance(value, ListConfig | list) and all(_is_number(v) and self._within(v) for v in value)
            ok = ok and (self.length is None or len(value) == self.length)
        elif kind in ("mapping", "group"):
            ok = isinstance(value, DictConfig | dict)
            allowed = children(self.key)
            for name in value if ok and self.closed else ():
                if name not in allowed:
                    raise ConfigError(f"{self.key}.{name}", f"unknown key; allowed: {', '.join(allowed)}")
        else:
            ok = isinstance(value, str) and bool(value.strip())
        if not ok:
            raise self.error(value)
        return value


def _is_number(value: Any, integer: bool = False) -> bool:
    return isinstance(value, numbers.Integral if integer else numbers.Real) and not isinstance(value, bool)


def parse_step(value: Any, key: str, positive: bool = True) -> Step:
    """``value`` as a :class:`~lth.core.steps.Step` for ``key``: longer than 0it if ``positive``, and not absurdly
    long (past :data:`MAX_ITERATIONS` iterations or :data:`MAX_EPOCHS` epochs)."""
    step = Step.parse(value, key=key)
    if positive and step == Step():
        raise ConfigError(key, f"got {step}; it must be longer than 0it")
    if step.iterations > MAX_ITERATIONS or step.epochs > MAX_EPOCHS:
        raise ConfigError(key, f"got {value!r}; allowed: at most {MAX_ITERATIONS}it or {MAX_EPOCHS}ep")
    return step


_CHECKED_BY_HARDWARE = "lth.config.hardware.check_values"
_CHECKED_BY_VALIDATE = "lth.config.validate.validate"
_CHECKED_BY_TRANSFER = "lth.run.transfer.check"

_KEYS = (
    # -- top level --------------------------------------------------------------------------------------------
    Key("seed", "int [0, 2147483648)", "the one seed: init, data order, augmentation and controls draw from it"),
    Key(
        "data_seed", "int [0, 2147483648)", "another data order for the same init (instability analysis)", nullable=True
    ),
    Key("resume", "bool", "true: continue the interrupted run of this config from its last checkpoint", run_only=True),
    Key(
        "callbacks",
        "mapping",
        "extra Lightning callbacks: `+callbacks.<name>._target_=<class>` and its arguments",
        nullable=True,
        also="each needs a _target_",
    ),
    # -- train ------------------------------------------------------------------------------------------------
    Key("train.steps", "step", "training length of each round"),
    Key(
        "train.eval_every",
        "step",
        "validation cadence; the early-stop point is the lowest validation loss",
        also="at most train.steps",
    ),
    Key(
        "train.batch_size",
        "int >= 1",
        "training batch of each process (the effective batch: times world_size)",
        also="at most the training images per process",
    ),
    Key(
        "train.save_weights", "bool", "keep each round's weights at the early-stop point (early_stop.pt)", run_only=True
    ),
    Key("train.eval_batch_size", "int >= 1", "batch size of validation and test", run_only=True),
    Key("train.progress", "bool", "Lightning's progress bar for each round", nullable=True, run_only=True),
    Key(
        "train.checkpoint_every",
        "step",
        "also checkpoint during a round (null: at its end)",
        nullable=True,
        run_only=True,
        also="a multiple of train.eval_every",
    ),
    Key(
        "train.share_dense",
        "bool",
        "runs that share round 0 (model, data, seed, training) train it once",
        nullable=True,
        run_only=True,
    ),
    Key(
        "train.compile",
        "bool",
        "torch.compile the network (masks still hold; pays on GPUs)",
        nullable=True,
        run_only=True,
    ),
    # -- prune ------------------------------------------------------------------------------------------------
    Key("prune.rate", "number (0, 1)", "fraction of the surviving prunable weights removed per round"),
    Key(
        "prune.rounds",
        f"int [0, {MAX_ROUNDS}]",
        "pruning rounds after round 0 (a run has rounds + 1 rows)",
        also="at least 1 with prune.target_sparsity",
    ),
    Key(
        "prune.target_sparsity",
        "number (0, 1)",
        "if set, replaces rate: equal rounds, the last ends at this sparsity",
        nullable=True,
        also="not with prune.layer_rates",
    ),
    Key(
        "prune.scope",
        "choice",
        "global: one threshold over all prunable tensors; layer: each tensor alone",
        choices=("global", "layer"),
    ),
    Key(
        "prune.layer_rates",
        "mapping",
        "layers (name patterns) pruned at their own rate; replaces the preset's",
        nullable=True,
        allowed_text="a mapping of name pattern to a number in (0, 1)",
        example="{model.out: 0.1}",
        also="each pattern matches a layer; not with prune.target_sparsity",
    ),
    Key(
        "prune.include",
        "patterns",
        "prune only the layers these match (empty: every Linear and Conv weight)",
        nullable=True,
        example="['*conv*']",
    ),
    Key(
        "prune.exclude",
        "patterns",
        "never prune the layers these match",
        nullable=True,
        example="[model.out]",
        also="not '*'",
    ),
    Key(
        "prune.extra",
        "patterns",
        "parameters to prune too, by name pattern",
        nullable=True,
        example="['*.in_proj_weight']",
    ),
    Key(
        "prune.rewind",
        "step >= 0",
        "what later rounds restart from: init, a Step of round 0, lr, none (fine-tune)",
        choices=REWIND_MODES,
        also="a Step before train.steps; none not under a cosine schedule",
    ),
    Key(
        "prune.method",
        "choice",
        "how masks are found: magnitude or lamp (IMP, one-shot), early_bird, or pruning at init (snip ... random)",
        choices=METHODS,
        also="early_bird and at init: prune.target_sparsity set, prune.rounds 1, prune.rewind init (at init); "
        "lamp: prune.scope global",
        unnamed_at="magnitude",
    ),
    Key(
        "prune.early_bird",
        "mapping",
        "early_bird's draw criterion (You et al. 2020)",
        closed=True,
        used_with=("prune.method", catalog.METHODS.with_trait(catalog.DRAWN_DURING_TRAINING)),
    ),
    Key("prune.early_bird.window", "int >= 2", "early_bird: masks compared (the newest and the ones before it)"),
    Key("prune.early_bird.epsilon", "number (0, 1)", "early_bird: drawn when every distance to the newest is below"),
    Key(
        "prune.early_bird.distance",
        "choice",
        "early_bird: differing weights over all weights (You et al.) or over what two masks can differ on",
        choices=EARLY_BIRD_DISTANCES,
    ),
    Key(
        "prune.score_batches",
        "int >= 1",
        "snip, grasp: training batches (train.batch_size) the scores sum over",
        used_with=("prune.method", catalog.METHODS.with_trait(catalog.NEEDS_SCORE_BATCHES)),
    ),
    Key(
        "prune.synflow_iterations",
        "int >= 1",
        "synflow: scoring and pruning steps to the target sparsity",
        used_with=("prune.method", catalog.METHODS.with_trait(catalog.ITERATES_SCORES)),
    ),
    Key(
        "prune.control",
        "choice",
        "null: the ticket; else a control trained on the ticket's masks",
        choices=CONTROLS,
        nullable=True,
        custom=_CHECKED_BY_VALIDATE,
        also="needs prune.rewind init or a Step",
    ),
    Key(
        "prune.granularity",
        "str",
        "weight: single weights; channel: whole output channels (tied through skips); n:m: n of every m inputs",
        allowed_text="weight, channel, or n:m with 0 < n < m such as 2:4",
        custom=_CHECKED_BY_VALIDATE,
        also="not with prune.target_sparsity or prune.layer_rates unless weight; n:m: input widths multiples of m",
        unnamed_at="weight",
    ),
    Key(
        "prune.channel_criterion",
        "choice",
        "how channel ranks channels: l1, l2 (per weight of the filter) or bn_scale (BatchNorm weight)",
        choices=CHANNEL_CRITERIA,
        unnamed_at="l1",
        used_with=("prune.granularity", catalog.GRANULARITIES.with_trait(catalog.WHOLE_CHANNELS)),
        also="in the run's identity with prune.granularity=channel only",
    ),
    Key(
        "prune.mask_from",
        "path",
        "round 0 starts from this mask: a run folder[@round], a round folder, or a mask file (ours, torch-prune, "
        "open_lth)",
        nullable=True,
        allowed_text="null, or a run folder[@round], a round folder, a mask.pt / mask.pth / state_dict file",
        example="outputs/runs/<run_id>@3",
        custom=_CHECKED_BY_TRANSFER,
        also="in the identity by its content hash; prune.control null, random_prune or shuffle",
    ),
    Key(
        "prune.mask_unmatched",
        "choice",
        "prunable tensors mask_from lacks or that do not fit: refuse (null) the run, or start them dense",
        choices=("refuse", "dense"),
        nullable=True,
        custom=_CHECKED_BY_TRANSFER,
    ),
    # -- optim ------------------------------------------------------------------------------------------------
    Key("optim.name", "str", "the optimiser preset's name (set by optim=)"),
    Key("optim.optimizer.lr", "number > 0", "learning rate (the schedule's peak)"),
    Key("optim.optimizer.weight_decay", "number >= 0", "weight decay (AdamW: decoupled)", nullable=True, optional=True),
    Key("optim.optimizer.momentum", "number [0, 1)", "SGD's momentum", nullable=True, optional=True, where="optim=sgd"),
    Key(
        "optim.optimizer.nesterov",
        "bool",
        "SGD's Nesterov momentum",
        optional=True,
        where="optim=sgd",
        also="needs momentum > 0 and dampening 0",
    ),
    Key(
        "optim.optimizer.dampening",
        "number [0, 1]",
        "SGD's dampening of the momentum",
        nullable=True,
        optional=True,
        where="optim=sgd",
        addable=True,
    ),
    Key(
        "optim.optimizer.betas",
        "numbers [0, 1)",
        "Adam's decay rates of its running averages",
        length=2,
        nullable=True,
        optional=True,
        addable=True,
        example="[0.9, 0.999]",
    ),
    Key(
        "optim.optimizer.eps",
        "number > 0",
        "Adam's term added to the denominator",
        nullable=True,
        optional=True,
        addable=True,
    ),
    Key("optim.optimizer.amsgrad", "bool", "Adam's AMSGrad variant", optional=True, addable=True),
    Key("optim.optimizer.maximize", "bool", "maximise the objective instead", optional=True, addable=True),
    Key(
        "optim.optimizer.foreach",
        "bool",
        "torch's multi-tensor implementation (null: torch picks)",
        nullable=True,
        optional=True,
        addable=True,
    ),
    Key(
        "optim.optimizer.fused",
        "bool",
        "torch's fused implementation (null: torch picks)",
        nullable=True,
        optional=True,
        addable=True,
    ),
    Key("optim.optimizer.capturable", "bool", "Adam: safe to capture in a CUDA graph", optional=True, addable=True),
    Key("optim.optimizer.differentiable", "bool", "autograd through the optimiser step", optional=True, addable=True),
    Key(
        "optim.schedule.name",
        "choice",
        "learning-rate schedule: step multiplies it by gamma at each milestone, cosine falls to 0",
        choices=SCHEDULES,
    ),
    Key(
        "optim.schedule.milestones",
        "steps",
        "where the step schedule multiplies the rate by gamma",
        nullable=True,
        example="[80ep, 120ep]",
        also="each before train.steps",
    ),
    Key("optim.schedule.gamma", "number > 0", "the step schedule's factor"),
    Key("optim.schedule.warmup", "step >= 0", "linear warm-up length (0it: none)", also="at most train.steps"),
    # -- dataset ----------------------------------------------------------------------------------------------
    Key("dataset.name", "str", "the dataset's name (image_folder: its folder under paths.data_dir)"),
    Key("dataset.channels", "int >= 1", "image channels", also="the dataset's own; image_folder: 1 or 3"),
    Key(
        "dataset.image_size",
        "int >= 1",
        "image side in pixels (image_folder: images are resized to it)",
        also="the dataset's own (image_folder: any)",
    ),
    Key(
        "dataset.num_classes",
        "int >= 2",
        "classes (image_folder: its class folders, counted)",
        also="the dataset's own (image_folder: any)",
    ),
    Key(
        "dataset.val_size",
        "int >= 1",
        "training images held out for validation (the early-stop point)",
        also="fewer than the training images",
    ),
    Key(
        "dataset.mean",
        "numbers",
        "per-channel mean taken off the inputs (null: the training split's)",
        nullable=True,
        also="one per channel",
    ),
    Key(
        "dataset.std",
        "numbers > 0",
        "per-channel deviation the inputs are divided by (null: the training split's)",
        nullable=True,
        also="one per channel",
    ),
    Key(
        "dataset.augment",
        "mapping",
        "augmentation of the training images (null: none)",
        closed=True,
        nullable=True,
        example="{crop_padding: 4, flip: true}",
    ),
    Key(
        "dataset.augment.crop_padding",
        "int >= 0",
        "pad each side by this many pixels, crop back at random (0: off)",
        nullable=True,
        optional=True,
        where="dataset=cifar10",
    ),
    Key(
        "dataset.augment.flip",
        "bool",
        "flip horizontally with probability 1/2",
        nullable=True,
        optional=True,
        where="dataset=cifar10",
    ),
    Key(
        "dataset.loader",
        "choice",
        "memory: splits on the training device, batches by index; torchvision: a DataLoader",
        choices=LOADERS,
    ),
    Key("dataset.num_workers", "int >= 0", "DataLoader worker processes (loader=torchvision only)", run_only=True),
    Key("dataset.source.download", "bool", "download the files when they are missing", optional=True, run_only=True),
    Key(
        "dataset.source.train_size",
        "int >= 2",
        "generated training images (before the validation split)",
        optional=True,
        where="dataset=synthetic",
    ),
    Key("dataset.source.test_size", "int >= 1", "generated test images", optional=True, where="dataset=synthetic"),
    # -- model ------------------------------------------------------------------------------------------------
    Key("model.name", "str", "the model's name (set by model=; its own keys are in `conf/model/<name>.yaml`)"),
    Key(
        "model.weights",
        "path",
        "pre-trained weights: a local file or folder; the rewind point init is them (nothing is downloaded)",
        nullable=True,
        optional=True,
        addable=True,
        allowed_text="null, or a local state_dict / .safetensors file or a save_pretrained folder",
        custom=_CHECKED_BY_TRANSFER,
        also="the output layer may differ (a new head keeps its initialisation)",
    ),
    # -- trainer: Lightning Trainer arguments; any other the loop does not own with +trainer.<name>=... -------
    Key(
        "trainer.gradient_clip_val",
        "number > 0",
        "clip gradients to this norm (of the surviving weights) or value",
        nullable=True,
    ),
    Key(
        "trainer.gradient_clip_algorithm",
        "choice",
        "how gradients are clipped (null: norm)",
        choices=("norm", "value"),
        nullable=True,
    ),
    Key(
        "trainer.accumulate_grad_batches",
        f"int [1, {MAX_ITERATIONS}]",
        "batches per optimiser step (an iteration is one step)",
        nullable=True,
    ),
    Key(
        "trainer.deterministic", "bool", "true: deterministic algorithms only (slower; some ops refuse)", nullable=True
    ),
    # -- paths ------------------------------------------------------------------------------------------------
    Key(
        "paths",
        "group",
        "where data is read and results go",
        run_only=True,
        allowed_text="{options}",
        custom=_CHECKED_BY_VALIDATE,
    ),
    Key(
        "paths.data_dir",
        "path",
        "datasets are read from (and downloaded into) this folder",
        custom=_CHECKED_BY_VALIDATE,
        also="not a file",
    ),
    Key(
        "paths.output_dir",
        "path",
        "run folders go to `<output_dir>/runs/<run_id>`, sweeps to `<output_dir>/multirun`",
        custom="lth.config.validate.check_output_folder",
        also="one that can be made and written",
    ),
    # -- logger -----------------------------------------------------------------------------------------------
    Key(
        "logger",
        "group",
        "step-metric loggers (rounds.csv and summary.json are written whatever the logger)",
        run_only=True,
        nullable=True,
        allowed_text="{options}, a list of them, or null",
    ),
    Key(
        "logger.wandb.mode",
        "choice",
        "null: online if an API key is configured, else offline",
        choices=WANDB_MODES,
        nullable=True,
        optional=True,
        where="logger=wandb",
    ),
    Key(
        "logger.wandb.init_timeout",
        "number > 0",
        "seconds to reach the W&B server; past them the run logs offline",
        nullable=True,
        optional=True,
        where="logger=wandb",
    ),
    # -- hardware: run-only, but processes and precision enter the identity (lth.config.validate.training_hardware) --
    Key(
        "hardware",
        "group",
        "where it trains; run-only but for world_size and precision (see below)",
        run_only=True,
        allowed_text="{options}",
        custom=_CHECKED_BY_HARDWARE,
    ),
    Key(
        "hardware.accelerator",
        "choice",
        "auto: one GPU if there is one, else the CPU",
        choices=ACCELERATORS,
        custom=_CHECKED_BY_HARDWARE,
        also="gpu, cuda, mps: this machine has one",
    ),
    Key(
        "hardware.devices",
        "int",
        "devices per node, one process each (several: DDP)",
        custom=_CHECKED_BY_HARDWARE,
        allowed_text="a positive integer, -1 or auto (all), or GPU indices such as [0,1]",
        also="GPUs this machine has",
    ),
    Key(
        "hardware.num_nodes",
        "int >= 1",
        "machines, each running hardware.devices processes",
        custom=_CHECKED_BY_HARDWARE,
    ),
    Key(
        "hardware.strategy",
        "choice",
        "Lightning's strategy (auto: ddp for several devices)",
        choices=STRATEGIES,
        custom=_CHECKED_BY_HARDWARE,
    ),
    Key(
        "hardware.precision",
        "choice",
        "numeric precision",
        choices=PRECISIONS,
        custom=_CHECKED_BY_HARDWARE,
        also="transformer-engine*: with its package",
    ),
    Key(
        "hardware.threads",
        "int >= 1",
        "torch CPU threads per process (null: torch's default)",
        nullable=True,
        custom=_CHECKED_BY_HARDWARE,
    ),
    Key(
        "hardware.rank_report",
        "bool",
        "each rank writes `<run>/ranks/rank_<r>.jsonl`: fingerprints of its state",
        custom=_CHECKED_BY_HARDWARE,
    ),
)


def _inherit_run_only(keys: Iterable[Key]) -> tuple[Key, ...]:
    """The keys, those below a run-only entry made run-only too."""
    keys = tuple(keys)
    roots = [k.key for k in keys if k.run_only]
    below = lambda key: any(key.startswith(root + ".") for root in roots)  # noqa: E731
    return tuple(replace(k, run_only=True) if below(k.key) and not k.run_only else k for k in keys)


KEYS: tuple[Key, ...] = _inherit_run_only(_KEYS)
SCHEMA: dict[str, Key] = {k.key: k for k in KEYS}
if len(SCHEMA) != len(KEYS):
    raise ValueError("a key is defined twice in lth.config.schema")


def children(key: str) -> tuple[str, ...]:
    """The leaf names of the entries directly below ``key`` (the keys a closed mapping may hold)."""
    return tuple(k.leaf for k in KEYS if k.key.rpartition(".")[0] == key)


def group_options(group: str) -> list[str]:
    """The presets of config group ``group`` (its YAML files in ``conf/``)."""
    folder = CONF / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


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


def check_key(cfg: DictConfig, key: str, required: bool = False) -> Any:
    """Check ``key`` of ``cfg`` against its entry; return its value (a Step for a step kind).

    An absent key is null, unless the entry is optional (then nothing is checked and None returned) and not
    ``required``.
    """
    entry = SCHEMA[key]
    value = OmegaConf.select(cfg, key, default=_ABSENT)
    if value is _ABSENT:
        if entry.optional and not required:
            return None
        value = None
    return entry.check(value)


def check(cfg: DictConfig, *prefixes: str) -> None:
    """Check every entry at or below ``prefixes`` that no custom code checks (:meth:`Key.check`), in schema order;
    raise :class:`~lth.core.errors.ConfigError` naming the first bad key."""
    for entry in under(*prefixes):
        if not entry.custom:
            check_key(cfg, entry.key)


# -- the README's table -------------------------------------------------------------------------------------


def compose(*overrides: str) -> DictConfig:
    """The config of ``conf/`` composed with ``overrides``, Hydra's node included (for the groups' choices)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from lth.config.identity import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=True)


def _yaml(value: Any) -> str:
    """``value`` as YAML's flow style writes it (null, true, [a, b], {k: v})."""
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=False)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return str(value)


def default_text(entry: Key, configs: Mapping[str, DictConfig]) -> str:
    """The table's *default* cell: the composed value (a group's chosen preset), with the overrides it needs."""
    where, cfg = "", configs[""]
    value = OmegaConf.select(cfg, entry.key, default=_ABSENT)
    if value is _ABSENT and entry.where:
        where, cfg = entry.where, configs[entry.where]
        value = OmegaConf.select(cfg, entry.key, default=_ABSENT)
    if value is _ABSENT:
        text = "unset; add with `+`"
    elif entry.kind == "group":
        text = f"`{cfg.hydra.runtime.choices[entry.key]}`"
    else:
        text = f"`{_yaml(value)}`"
    return f"{text} under `{where}`" if where else text


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_table(configs: Mapping[str, DictConfig] | None = None) -> str:
    """The README's key table: key | default | allowed | run-only | what it does, one row per entry.

    ``configs``: the composed configs by the overrides that made them ("" the default config, then each
    entry's ``where``); composed here when not given.
    """
    if configs is None:
        configs = {where: compose(*where.split()) for where in dict.fromkeys(["", *(k.where for k in KEYS)])}
    rows = ["| key | default | allowed | run-only | what it does |", "|---|---|---|---|---|"]
    for entry in KEYS:
        allowed = f"{entry.allowed}; {entry.also}" if entry.also else entry.allowed
        cells = (f"`{entry.key}`", default_text(entry, configs), allowed, "yes" if entry.run_only else "", entry.help)
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows) + "\n"


def readme_section(text: str) -> str:
    """What lies between the key table's markers in ``text`` (the README)."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md lacks the markers {START} ... {END}")
    return text[start + len(START) : end].strip("\n") + "\n"


def write_readme(path: Path = README, table: str | None = None) -> bool:
    """Put the rendered table between the markers of ``path``; return whether the file changed."""
    text = path.read_text()
    readme_section(text)  # the markers are there
    table = render_table() if table is None else table
    start, end = text.find(START) + len(START), text.find(END)
    new = f"{text[:start]}\n{table}{text[end:]}"
    if new != text:
        path.write_text(new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    """``python -m lth.config.schema [--readme | --check]``: print the key table, write it into README.md, or check
    that README.md holds it (exit code 1 if not)."""
    parser = argparse.ArgumentParser(prog="python -m lth.config.schema", description=main.__doc__)
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--readme", action="store_true", help="rewrite the key table in README.md")
    what.add_argument("--check", action="store_true", help="exit 1 if README.md's key table is out of step")
    args = parser.parse_args(argv)
    table = render_table()
    if args.readme:
        print(f"{README}: {'rewritten' if write_readme(README, table) else 'already up to date'}")
    elif args.check:
        if readme_section(README.read_text()) != table:
            print(
                f"error: {README}: the key table is out of step; run python -m lth.config.schema --readme",
                file=sys.stderr,
            )
            return 1
    else:
        print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
