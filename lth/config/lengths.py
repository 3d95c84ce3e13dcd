"""Every Step of a run against the length of a round, checked once: when the config is validated (where only
Steps in one unit can be compared) and again at run time, when the length of an epoch is known.

Pure Python: the typed sections of :mod:`lth.config.run`, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from lth.config.run import Schedule, Train
from lth.config.schema import MAX_ITERATIONS
from lth.core.errors import ConfigError
from lth.core.steps import Step


@dataclass(frozen=True)
class Lengths:
    """A round's length, its evaluation cadence and its checkpoint cadence in iterations (None where that needs the
    length of an epoch, unknown yet, or, for ``checkpoint_every``, where it is not set)."""

    total: int | None
    eval_every: int | None
    checkpoint_every: int | None


def _comparable(a: Step, b: Step, ipe: int | None) -> tuple[int, int] | None:
    """``a`` and ``b`` in one unit; None when that needs the length of an epoch and it is not known."""
    if ipe is not None:
        return a.to_iterations(ipe), b.to_iterations(ipe)
    if not a.epochs and not b.epochs:
        return a.iterations, b.iterations
    if not a.iterations and not b.iterations:
        return a.epochs, b.epochs
    return None


def _in_iterations(step: Step | None, ipe: int | None) -> int | None:
    if step is None or (ipe is None and step.epochs):
        return None
    return step.to_iterations(ipe or 0)


def check_lengths(train: Train, rewind: str | Step, schedule: Schedule, ipe: int | None) -> Lengths:
    """Check that every Step fits in ``train.steps`` (the evaluation cadence, the rewind point, the schedule's
    milestones and warm-up, the checkpoint cadence) and that training is not absurdly long; return the lengths.

    ``ipe``: optimiser steps per epoch, None before the data is read (then only Steps in one unit are compared).
    """
    steps, eval_every = train.steps, train.eval_every
    if ipe is not None and steps.to_iterations(ipe) > MAX_ITERATIONS:
        raise ConfigError("train.steps", f"{steps} is {steps.to_iterations(ipe)} it; allowed: at most {MAX_ITERATIONS}")
    pair = _comparable(eval_every, steps, ipe)
    if pair and pair[0] > pair[1]:
        raise ConfigError("train.eval_every", f"{eval_every} is beyond train.steps={steps}; allowed: at most that")
    pair = _comparable(rewind, steps, ipe) if isinstance(rewind, Step) else None
    if pair and pair[0] >= pair[1]:
        raise ConfigError("prune.rewind", f"{rewind} is not before the end of training (train.steps={steps})")
    for step in schedule.milestones:
        pair = _comparable(step, steps, ipe)
        if pair and pair[0] >= pair[1]:
            raise ConfigError(
                "optim.schedule.milestones", f"{step} is not before the end of training (train.steps={steps})"
            )
    pair = _comparable(schedule.warmup, steps, ipe)
    if pair and pair[0] > pair[1]:
        raise ConfigError("optim.schedule.warmup", f"{schedule.warmup} is longer than training (train.steps={steps})")
    every = train.checkpoint_every
    pair = _comparable(every, eval_every, ipe) if every is not None else None
    if pair and (pair[0] <= 0 or pair[0] % pair[1]):
        raise ConfigError(
            "train.checkpoint_every", f"{every} must be a positive multiple of train.eval_every={eval_every}"
        )
    return Lengths(_in_iterations(steps, ipe), _in_iterations(eval_every, ipe), _in_iterations(every, ipe))
