"""The catalog of ideas: every pruning method, control, rewind mode and granularity, each an entry with its traits.

What an idea does is declared once, here, as traits (``needs_score_batches``, ``changes_initialisation``, ...);
validation, the schema's allowed values, transfer, structured pruning and the loop ask an entry for its traits and
never compare names. Adding a method or a control is one function plus one entry below; a name that is not an
entry is refused where the config is validated (:meth:`Catalog.entry`).

Pure Python, like :mod:`lth.core.granularity`: validation reads the catalog before torch is imported. An entry names
its implementation as ``"module:function"``, imported when a run first uses it (:meth:`Entry.load`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from lth.core.errors import ConfigError

# -- traits: what an idea does, as the code that consults it reads it ---------------------------------------
# methods (prune.method)
PRUNES_EVERY_ROUND = "prunes_every_round"  # ranks the trained weights at the end of every round (IMP's criterion)
PRUNES_ONCE = "prunes_once"  # one pruning round, straight to prune.target_sparsity
SCORES_INITIAL_WEIGHTS = "scores_initial_weights"  # the mask comes from the initial weights, before any training
NEEDS_SCORE_BATCHES = "needs_score_batches"  # scores sum over prune.score_batches training batches
ITERATES_SCORES = "iterates_scores"  # scores and prunes in prune.synflow_iterations steps
DRAWN_DURING_TRAINING = "drawn_during_training"  # round 0 stops where the mask stops changing (prune.early_bird)
RANKS_GLOBALLY = "ranks_globally"  # its scores compare across layers: prune.scope=global, no prune.layer_rates
SINGLE_WEIGHTS = "single_weights"  # finds masks of single weights only (prune.granularity=weight)
# controls (prune.control); each also draws its mask one way (DRAWS)
CHANGES_INITIALISATION = "changes_initialisation"  # a fresh draw from the initialiser under the ticket's mask
REDRAWS_MASK = "redraws_mask"  # the control's mask is a random draw with the ticket's counts (redraws mask_from too)
KEEPS_MASK, PRUNES_SURVIVORS, PERMUTES = "keeps_mask", "prunes_survivors", "permutes"
DRAWS = (KEEPS_MASK, PRUNES_SURVIVORS, PERMUTES)  # what structured granularities implement, each at its own grain
# rewind modes (prune.rewind); a Step is the entry "step"
REWINDS_WEIGHTS = "rewinds_weights"  # later rounds restart from recorded weights (a control needs one)
FROM_INITIALISATION = "from_initialisation"  # that point is the initialisation (pruning at init scores it)
KEEPS_TRAINED_WEIGHTS = "keeps_trained_weights"  # later rounds continue from the trained weights
HOLDS_FINAL_RATE = "holds_final_rate"  # later rounds stay at round 0's final learning rate (0 under cosine)
AT_A_STEP = "at_a_step"  # written as a Step (500it, 2ep), not as the entry's name
# granularities (prune.granularity); n:m is the entry "n:m"
WHOLE_CHANNELS = "whole_channels"  # removes whole output channels, tied through the dependency graph
GROUPS_OF_M = "groups_of_m"  # keeps n of every m consecutive inputs
SETS_OWN_SPARSITY = "sets_own_sparsity"  # its rounds set their own sparsity: no target_sparsity, no layer_rates


@dataclass(frozen=True)
class Entry:
    """One idea: its name (the config value), a line of help, its traits and where its code is."""

    name: str
    help: str
    traits: frozenset[str] = frozenset()
    implementation: str = ""  # "module:attribute", imported by load()

    def has(self, trait: str) -> bool:
        """Whether this idea has ``trait``."""
        return trait in self.traits

    def load(self) -> Callable[..., Any]:
        """The function (or class) that implements this idea."""
        if not self.implementation:
            raise RuntimeError(f"{self.name} has no implementation to load")
        module, _, attribute = self.implementation.partition(":")
        return getattr(importlib.import_module(module), attribute)


class Catalog(Mapping[str, Entry]):
    """The entries of one config key (``prune.method``, ...), by name, in the order the help lists them."""

    def __init__(self, key: str, what: str, *entries: Entry, nullable: bool = False) -> None:
        self.key, self.what, self.nullable = key, what, nullable
        self._entries = {e.name: e for e in entries}
        if len(self._entries) != len(entries):
            raise ValueError(f"{key}: an entry is named twice")

    def __getitem__(self, name: str) -> Entry:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def names(self) -> tuple[str, ...]:
        """Every entry's name, in order."""
        return tuple(self._entries)

    def allowed(self) -> str:
        """What the key allows, in words."""
        return ", ".join((("null",) if self.nullable else ()) + self.names)

    def entry(self, name: object) -> Entry:
        """The entry ``name``, or a one-line :class:`ConfigError` naming the key and what is allowed."""
        if not isinstance(name, str) or name not in self._entries:
            raise ConfigError(self.key, f"unknown {self.what} {name!r}; allowed: {self.allowed()}")
        return self._entries[name]

    def with_trait(self, trait: str) -> tuple[str, ...]:
        """The names of the entries that have ``trait``."""
        return tuple(n for n, e in self._entries.items() if e.has(trait))


def _traits(*names: str) -> frozenset[str]:
    return frozenset(names)


_AT_INIT = _traits(PRUNES_ONCE, SCORES_INITIAL_WEIGHTS, SINGLE_WEIGHTS)

METHODS = Catalog(
    "prune.method",
    "method",
    Entry(
        "magnitude",
        "the smallest |w| of the trained weights (IMP; one-shot with prune.rounds=1)",
        _traits(PRUNES_EVERY_ROUND),
        "lth.core.masks:magnitude",
    ),
    Entry(
        "lamp",
        "layer-adaptive magnitude scores of the trained weights, ranked globally (Lee et al. 2021)",
        _traits(PRUNES_EVERY_ROUND, RANKS_GLOBALLY, SINGLE_WEIGHTS),
        "lth.core.scores:lamp_scores",
    ),
    Entry(
        "early_bird",
        "round 0 stops where the mask stops changing, then prunes once (You et al. 2020)",
        _traits(PRUNES_ONCE, DRAWN_DURING_TRAINING, SINGLE_WEIGHTS),
    ),
    Entry(
        "snip", "|g * w| at initialisation (Lee et al. 2019)", _AT_INIT | {NEEDS_SCORE_BATCHES}, "lth.core.scores:snip"
    ),
    Entry(
        "grasp",
        "-w * Hg at initialisation (Wang et al. 2020)",
        _AT_INIT | {NEEDS_SCORE_BATCHES},
        "lth.core.scores:grasp",
    ),
    Entry(
        "synflow",
        "|w * dR/dw|, data-free, iterative (Tanaka et al. 2020)",
        _AT_INIT | {ITERATES_SCORES},
        "lth.core.scores:synflow",
    ),
    Entry("magnitude_init", "|w| of the initial weights", _AT_INIT, "lth.core.scores:magnitude_init"),
    Entry("random", "a random mask at the target sparsity", _AT_INIT, "lth.core.scores:random"),
)

CONTROLS = Catalog(
    "prune.control",
    "control",
    Entry(
        "reinit",
        "the ticket's masks on a fresh draw from the initialiser",
        _traits(CHANGES_INITIALISATION, KEEPS_MASK),
        "lth.core.controls:keep",
    ),
    Entry(
        "random_prune",
        "each round removes random survivors of its previous mask, as many per layer as the ticket",
        _traits(REDRAWS_MASK, PRUNES_SURVIVORS),
        "lth.core.controls:prune_survivors",
    ),
    Entry(
        "shuffle",
        "the ticket's mask permuted within each layer, afresh each round",
        _traits(REDRAWS_MASK, PERMUTES),
        "lth.core.controls:permute",
    ),
    nullable=True,
)

REWINDS = Catalog(
    "prune.rewind",
    "rewind",
    Entry("init", "the initial weights (step 0)", _traits(REWINDS_WEIGHTS, FROM_INITIALISATION)),
    Entry(
        "step", "round 0's weights at a Step such as 500it (written as the Step)", _traits(REWINDS_WEIGHTS, AT_A_STEP)
    ),
    Entry("lr", "keep the trained weights, replay the learning-rate schedule", _traits(KEEPS_TRAINED_WEIGHTS)),
    Entry(
        "none",
        "keep the trained weights at round 0's final learning rate",
        _traits(KEEPS_TRAINED_WEIGHTS, HOLDS_FINAL_RATE),
    ),
)

GRANULARITIES = Catalog(
    "prune.granularity",
    "granularity",
    Entry("weight", "single weights", _traits(SINGLE_WEIGHTS)),
    Entry("channel", "whole output channels, tied through skips", _traits(WHOLE_CHANNELS, SETS_OWN_SPARSITY)),
    Entry("n:m", "n of every m consecutive inputs (written as 2:4)", _traits(GROUPS_OF_M, SETS_OWN_SPARSITY)),
)


REWIND_WORDS = tuple(n for n, e in REWINDS.items() if not e.has(AT_A_STEP))  # what prune.rewind takes as a word


def rewind_entry(rewind: object) -> Entry:
    """The entry of a parsed ``prune.rewind``: a word's own, or the Step entry for anything else (a Step)."""
    if isinstance(rewind, str) and rewind in REWIND_WORDS:
        return REWINDS[rewind]
    (step,) = (e for e in REWINDS.values() if e.has(AT_A_STEP))
    return step


def draw_of(control: Entry) -> str:
    """How ``control`` draws its mask: one of :data:`DRAWS`."""
    (draw,) = (d for d in DRAWS if control.has(d))
    return draw
