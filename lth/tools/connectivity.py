"""Linear mode connectivity (Frankle et al. 2020), pure: the straight path ``(1 - α)·θ_A + α·θ_B`` between two
networks, its error barrier, and the evaluation along it with BatchNorm statistics recomputed at every point. These
functions know nothing of runs; :mod:`lth.tools.stability` trains the copies of a run's rounds and uses them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from lth.core.errors import ConfigError

State = dict[str, torch.Tensor]
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


# -- the path between two networks (pure) ---------------------------------------------------------


def alphas(count: int) -> list[float]:
    """``count`` evenly spaced points of [0, 1], both ends included (11 gives 0, 0.1, ..., 1)."""
    if count < 2:
        raise ConfigError("alphas", f"got {count}; allowed: at least 2 points on the path (its two ends)")
    return [i / (count - 1) for i in range(count)]


def interpolate(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], alpha: float) -> State:
    """The state dict ``(1 - alpha)·a + alpha·b``; ``alpha`` 0 and 1 return copies of ``a`` and ``b`` bit for bit.

    Integer entries (BatchNorm's batch counters) are taken from ``a``. Weights that are zero in both stay zero,
    so two copies trained under one mask interpolate to a network under that mask.
    """
    if a.keys() != b.keys():
        raise ValueError(f"the state dicts differ in keys: {sorted(set(a) ^ set(b))[:3]}")
    if alpha == 0:
        return {k: v.clone() for k, v in a.items()}
    if alpha == 1:
        return {k: v.clone() for k, v in b.items()}
    return {k: (1 - alpha) * a[k] + alpha * b[k] if a[k].is_floating_point() else a[k].clone() for k in a}


def barrier(errors: Sequence[float]) -> float:
    """The error barrier of a path: its highest error minus the mean error of its two ends."""
    if len(errors) < 2:
        raise ValueError(f"a path needs at least its two ends, got {len(errors)} errors")
    return max(errors) - (errors[0] + errors[-1]) / 2


def relative_distance(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], names: Iterable[str]) -> float:
    """``‖a - b‖ / ‖a‖`` over the entries ``names`` (how far apart two copies ended, relative to their size)."""
    names = list(names)
    diff = math.sqrt(sum(float((a[n].double() - b[n].double()).pow(2).sum()) for n in names))
    size = math.sqrt(sum(float(a[n].double().pow(2).sum()) for n in names))
    return diff / size if size else math.inf


# -- BatchNorm and evaluation (pure: a model and batches in, numbers out) ---------------------------


def has_batchnorm(model: nn.Module) -> bool:
    """True if ``model`` has a BatchNorm layer that tracks running statistics."""
    return any(isinstance(m, _BatchNorm) and m.track_running_stats for m in model.modules())


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, batches: Iterable[tuple[torch.Tensor, Any]]) -> bool:
    """Replace every BatchNorm's running statistics by their plain average over ``batches``; False if none.

    The statistics are reset, then the batches go through the model with only the BatchNorm layers in train
    mode (dropout stays off) and ``momentum=None`` (a cumulative average, not an exponential one). Modes and
    momenta are restored afterwards. The inputs are moved to the device of the model.
    """
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not norms:
        return False
    modes = {m: m.training for m in model.modules()}
    momenta = [m.momentum for m in norms]
    device = next(model.parameters()).device
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    for x, _ in batches:
        model(x.to(device))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    for m, training in modes.items():
        m.train(training)
    return True


@torch.no_grad()
def error_rate(model: nn.Module, batches: Batches) -> float:
    """The fraction of the samples in ``batches`` that ``model`` (in eval mode) classifies wrongly."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    wrong = total = 0
    for x, y in batches:
        y = y.to(device)
        wrong += int((model(x.to(device)).argmax(dim=1) != y).sum())
        total += len(y)
    model.train(was_training)
    if not total:
        raise ValueError("no samples to evaluate")
    return wrong / total


def error_curve(
    model: nn.Module,
    a: Mapping[str, torch.Tensor],
    b: Mapping[str, torch.Tensor],
    points: Sequence[float],
    test_batches: Batches,
    bn_batches: Sequence[tuple[torch.Tensor, Any]] = (),
) -> list[float]:
    """Test error of ``model`` loaded with :func:`interpolate` ``(a, b, α)`` at each α of ``points``.

    With ``bn_batches``, BatchNorm statistics are recomputed on them at every α (see :func:`recompute_batchnorm`).
    ``model`` is left holding the last point.
    """
    errors = []
    for alpha in points:
        model.load_state_dict(interpolate(a, b, alpha))
        if bn_batches:
            recompute_batchnorm(model, bn_batches)
        errors.append(error_rate(model, test_batches))
    return errors
