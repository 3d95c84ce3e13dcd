"""Masks and magnitude pruning: pure tensor code, no Lightning and no I/O.

A :class:`Mask` maps parameter names to boolean tensors (True = the weight survives). Masks are stored,
never inferred from zeros, and pruning only ever turns True into False. :func:`prune` removes exactly the
requested number of smallest-magnitude surviving weights per group, breaking ties by position so the
count is exact and the result deterministic.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from lth.core.anatomy import prunable_candidates
from lth.core.errors import ConfigError


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def name_matches(param_name: str, pattern: str) -> bool:
    """True if ``pattern`` matches the parameter name (``fc3.weight``) or its module's name (``fc3``)."""
    return fnmatch.fnmatchcase(param_name, pattern) or fnmatch.fnmatchcase(param_name.rsplit(".", 1)[0], pattern)


def prunable_parameters(
    model: nn.Module,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    extra: Iterable[str] = (),
    key: str = "prune",
) -> dict[str, nn.Parameter]:
    """The tensors to prune, by parameter name, in module order.

    By default the tensors :func:`lth.core.anatomy.prunable_candidates` finds (or the model declares): the
    ``weight`` of every Linear, Conv and Hugging Face Conv1D layer and the input projection of every
    ``nn.MultiheadAttention`` (``in_proj_weight``, or ``q/k/v_proj_weight``), which no Linear holds; ``extra``
    adds parameters by name pattern. ``include`` keeps only layers whose module or parameter name matches a pattern;
    ``exclude`` drops matching ones. Biases and normalisation layers are never prunable. A pattern that matches
    nothing is a config error naming ``<key>.include`` etc.
    """
    include, exclude, extra = list(include), list(exclude), list(extra)
    candidates = prunable_candidates(model)
    names = dict(model.named_parameters())
    for pattern in extra:
        found = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not found:
            raise ConfigError(
                f"{key}.extra", f"pattern {pattern!r} matches no parameter; names look like {_sample(names)}"
            )
        for n in found:
            if names[n].dim() < 2:
                raise ConfigError(f"{key}.extra", f"{n} is not a weight matrix (biases and norms are never pruned)")
            candidates.setdefault(n, (n.rsplit(".", 1)[0], names[n]))
    for field, patterns in (("include", include), ("exclude", exclude)):
        for pattern in patterns:
            if not any(_matches(n, [pattern]) or _matches(m, [pattern]) for n, (m, _) in candidates.items()):
                raise ConfigError(
                    f"{key}.{field}", f"pattern {pattern!r} matches no prunable layer; they are {_sample(candidates)}"
                )
    chosen = {}
    for n, (m, p) in candidates.items():
        if include and not _matches(n, include) and not _matches(m, include):
            continue
        if _matches(n, exclude) or _matches(m, exclude):
            continue
        chosen[n] = p
    if not chosen:
        field, patterns = ("exclude", exclude) if exclude else ("include", include)
        kept = f" of those {key}.include keeps" if exclude and include else ""
        raise ConfigError(
            f"{key}.{field}", f"{patterns} leaves no prunable weights{kept}; they are {_sample(candidates)}"
        )
    order = {n: i for i, n in enumerate(names)}
    return dict(sorted(chosen.items(), key=lambda item: order[item[0]]))


def _sample(names: Iterable[str], limit: int = 6) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}]"


class Mask(dict):
    """Parameter name -> boolean tensor of the same shape; True marks a surviving weight."""

    @classmethod
    def ones_like(cls, params: Mapping[str, torch.Tensor]) -> Mask:
        """A mask that keeps every weight of ``params``."""
        return cls({n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()})

    def total(self) -> int:
        """Number of prunable weights."""
        return sum(m.numel() for m in self.values())

    def remaining(self) -> int:
        """Number of surviving weights."""
        return sum(int(m.count_nonzero()) for m in self.values())

    def weights_remaining(self) -> float:
        """Surviving fraction of the prunable weights."""
        return self.remaining() / max(self.total(), 1)

    def report(self) -> dict:
        """Sparsity report counted from the mask: per tensor and overall."""
        counts = {n: int(m.count_nonzero()) for n, m in self.items()}
        layers = {
            n: {"total": m.numel(), "remaining": counts[n], "weights_remaining": counts[n] / m.numel()}
            for n, m in self.items()
        }
        return {
            "total": self.total(),
            "remaining": self.remaining(),
            "weights_remaining": self.weights_remaining(),
            "layers": layers,
        }

    def check_against(self, params: Mapping[str, torch.Tensor], source: str = "mask") -> None:
        """Refuse a mask whose names, shapes or dtype do not fit ``params``."""
        if set(self) != set(params):
            missing, unknown = sorted(set(params) - set(self)), sorted(set(self) - set(params))
            raise ConfigError(source, f"tensors do not match the model (missing {missing[:3]}, unknown {unknown[:3]})")
        for n, m in self.items():
            if m.dtype != torch.bool or m.shape != params[n].shape:
                raise ConfigError(
                    source, f"{n} has shape {tuple(m.shape)}/{m.dtype}, model has {tuple(params[n].shape)}"
                )

    def cpu(self) -> Mask:
        """A copy on the CPU (what is written to disk)."""
        return Mask({n: m.detach().cpu().clone() for n, m in self.items()})


def round_half_up(x: float) -> int:
    """Round to the nearest integer, halves up (Python's round() rounds halves to even)."""
    return int(math.floor(x + 0.5))


def removal_count(surviving: int, total: int, rate: float, target: float | None, round_index: int, rounds: int) -> int:
    """How many of ``surviving`` weights (out of ``total``) a round removes.

    With a rate: ``round(rate * surviving)``. With a target sparsity reached after ``rounds`` rounds:
    every round removes the same fraction, and round ``rounds`` lands exactly on the target.
    """
    if target is None:
        return min(surviving, round_half_up(rate * surviving))
    keep = round_half_up(total * (1.0 - target) ** (round_index / rounds))
    return max(0, surviving - keep)


def prune_smallest(
    weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], names: list[str], count: int
) -> dict[str, torch.Tensor]:
    """New masks for ``names`` with the ``count`` smallest-magnitude surviving weights removed.

    One threshold over all the named tensors (a global ranking). Ties at the threshold are broken by
    position (tensor order, then flat index), so exactly ``count`` weights go.
    """
    if count <= 0:
        return {n: mask[n].clone() for n in names}
    scores = torch.cat([weights[n].detach().abs().float().masked_fill(~mask[n], math.inf).flatten() for n in names])
    count = min(count, int(torch.isfinite(scores).count_nonzero()))
    if count == 0:
        return {n: mask[n].clone() for n in names}
    threshold = torch.kthvalue(scores.cpu() if scores.device.type == "mps" else scores, count).values.to(scores.device)
    remove = scores < threshold
    short = count - int(remove.count_nonzero())
    if short > 0:
        ties = torch.nonzero(scores == threshold).flatten()[:short]
        remove[ties] = True
    out, start = {}, 0
    for n in names:
        size = mask[n].numel()
        out[n] = mask[n] & ~remove[start : start + size].view_as(mask[n])
        start += size
    return out


def magnitude(weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """IMP's criterion: the trained weights themselves (:func:`prune` removes the smallest ``|w|``)."""
    return weights


def prune(
    weights: Mapping[str, torch.Tensor],
    mask: Mask,
    rate: float,
    scope: str = "global",
    layer_rates: Mapping[str, float] | None = None,
    target: float | None = None,
    round_index: int = 1,
    rounds: int = 1,
) -> Mask:
    """One round of magnitude pruning: the next mask from trained ``weights`` and the current ``mask``.

    ``scope="global"`` ranks all tensors together; ``scope="layer"`` ranks each tensor alone.
    ``layer_rates`` maps name patterns to a rate of their own: matching tensors are pruned alone at that
    rate (the paper prunes LeNet's output layer at half the rate of the hidden layers). ``target``
    replaces the rate by a sparsity reached exactly after ``rounds`` rounds (``round_index`` counts 1..rounds).
    """
    if scope not in ("global", "layer"):
        raise ConfigError("prune.scope", f"unknown scope {scope!r}; allowed: global, layer")
    layer_rates = dict(layer_rates or {})
    groups: list[tuple[list[str], float]] = []
    pooled: list[str] = []
    for n in mask:
        own = [r for p, r in layer_rates.items() if name_matches(n, p)]
        if own:
            groups.append(([n], own[0]))
        elif scope == "layer":
            groups.append(([n], rate))
        else:
            pooled.append(n)
    if pooled:
        groups.append((pooled, rate))
    new = Mask(mask)
    for names, group_rate in groups:
        surviving = sum(int(mask[n].count_nonzero()) for n in names)
        total = sum(mask[n].numel() for n in names)
        count = removal_count(surviving, total, group_rate, target, round_index, rounds)
        new.update(prune_smallest(weights, mask, names, count))
    return new
