"""Pruning at initialisation: the score of every prunable weight before any training, and the mask they give.

Each method scores the weights of an untrained network; :func:`mask_from_scores` keeps the highest-scoring ones,
exactly ``round(total * (1 - target))`` of them over all tensors (``scope="global"``) or of each tensor alone
(``scope="layer"``), ties broken by position. The methods are those Frankle et al. (ICLR 2021, "Pruning Neural
Networks at Initialization: Why are We Missing the Mark?") compare:

- ``snip`` (Lee et al. 2019): ``|g * w|``, ``g`` the gradient of the training loss summed over the batches given.
- ``grasp`` (Wang et al. 2020): ``-w * Hg``, ``H`` the Hessian and ``g`` the gradient of the loss with the logits
  divided by a temperature (200, as in the paper); the weights whose removal least reduces the gradient flow go
  first, so the *lowest* scores are kept.
- ``synflow`` (Tanaka et al. 2020): ``|w * dR/dw|`` with ``R`` the sum of the outputs of the network with every
  parameter made positive on an all-ones input (no data is read), pruned in ``iterations`` steps to the target on
  an exponential schedule, re-scoring under the mask of the previous step.
- ``magnitude_init``: ``|w|`` at initialisation; ``random``: a uniform random score (a random mask of the size).

Each is a function of a :class:`Scoring`, an entry of :data:`lth.core.catalog.METHODS`. Here too is ``lamp``
(Lee et al. 2021), a criterion for the trained weights of every IMP round rather than for the initial ones.

Pure torch: no Lightning, no files. The network is changed only as the methods need (SynFlow's sign flip, undone).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from lth.core.catalog import METHODS, SCORES_INITIAL_WEIGHTS
from lth.core.errors import ConfigError
from lth.core.masks import Mask, prune

PRUNING_AT_INIT = METHODS.with_trait(SCORES_INITIAL_WEIGHTS)
GRASP_TEMPERATURE = 200.0

Batch = tuple[torch.Tensor, torch.Tensor]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ranks(scores: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each score replaced by its rank among all of them (0 = lowest), ties in position order.

    Ranks are non-negative and keep the order, so :func:`~lth.core.masks.prune` (which removes the smallest
    magnitudes) removes the lowest scores whatever their sign or scale.
    """
    flat = torch.cat([s.detach().flatten().double().cpu() for s in scores.values()])
    order = torch.argsort(flat, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    out, start = {}, 0
    for name, s in scores.items():
        out[name] = rank[start : start + s.numel()].view(s.shape).double()
        start += s.numel()
    return out


def mask_from_scores(
    scores: Mapping[str, torch.Tensor],
    target: float,
    scope: str = "global",
    mask: Mask | None = None,
    step: int = 1,
    steps: int = 1,
) -> Mask:
    """The mask that keeps the highest ``scores`` at sparsity ``target`` (after ``step`` of ``steps``).

    ``mask``: the weights already pruned (never revived); ``step``/``steps`` place the keep fraction on the
    exponential schedule ``(1 - target) ** (step / steps)`` that ends exactly at the target.
    """
    mask = mask if mask is not None else Mask.ones_like(scores)
    return prune(ranks(scores), mask, rate=0.0, scope=scope, target=target, round_index=step, rounds=steps)


def magnitude_scores(params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``|w|``: magnitude pruning at initialisation."""
    return {n: p.detach().abs() for n, p in params.items()}


def random_scores(params: Mapping[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A uniform random score per weight, drawn from ``generator`` (a random mask at the target's size)."""
    return {n: torch.rand(p.shape, generator=generator) for n, p in params.items()}


def _gradients(
    model: nn.Module, params: Mapping[str, nn.Parameter], batches: Iterable[Batch], loss_fn: Loss, scale: float = 1.0
) -> list[torch.Tensor]:
    grads = [torch.zeros_like(p) for p in params.values()]
    for x, y in batches:
        loss = loss_fn(model(x) / scale, y)
        for total, g in zip(grads, torch.autograd.grad(loss, list(params.values())), strict=True):
            total.add_(g)
    return grads


def snip_scores(
    model: nn.Module, params: Mapping[str, nn.Parameter], batches: Iterable[Batch], loss_fn: Loss
) -> dict[str, torch.Tensor]:
    """SNIP's connection sensitivity ``|g * w|``, ``g`` the loss gradient summed over ``batches``."""
    grads = _gradients(model, params, batches, loss_fn)
    return {n: (g * p).detach().abs() for (n, p), g in zip(params.items(), grads, strict=True)}


def grasp_scores(
    model: nn.Module, params: Mapping[str, nn.Parameter], batches: Iterable[Batch], loss_fn: Loss
) -> dict[str, torch.Tensor]:
    """GraSP's ``-w * Hg``: ``g`` the gradient summed over ``batches``, ``Hg`` the Hessian-gradient product.

    Low scores are kept (:func:`mask_at_init` flips the sign before ranking)."""
    batches = list(batches)
    weights = list(params.values())
    g = [v.detach() for v in _gradients(model, params, batches, loss_fn, GRASP_TEMPERATURE)]
    hg = [torch.zeros_like(p) for p in weights]
    for x, y in batches:
        loss = loss_fn(model(x) / GRASP_TEMPERATURE, y)
        grad = torch.autograd.grad(loss, weights, create_graph=True)
        z = sum((a * b).sum() for a, b in zip(grad, g, strict=True))
        for total, h in zip(hg, torch.autograd.grad(z, weights), strict=True):
            total.add_(h)
    return {n: (-p * h).detach() for (n, p), h in zip(params.items(), hg, strict=True)}


@contextmanager
def _linearised(model: nn.Module) -> Iterator[None]:
    """Within: ``model`` in eval mode, in double precision, every parameter and buffer made positive (SynFlow's
    linearised network); on exit it is as it was, bit for bit (signs restored, precision converted back)."""
    training, dtype = model.training, next(model.parameters()).dtype
    model.eval()
    model.double()
    signs = {}
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                signs[name] = torch.sign(tensor)
                tensor.abs_()
    try:
        yield
    finally:
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                if name in signs:
                    tensor.mul_(signs[name])
        model.to(dtype)
        model.train(training)


def _synflow(
    model: nn.Module, params: Mapping[str, nn.Parameter], input_shape: tuple[int, ...], mask: Mask
) -> dict[str, torch.Tensor]:
    """SynFlow's scores of a :func:`_linearised` ``model`` under ``mask`` (its weights are put back after)."""
    weights = list(params.values())
    with torch.no_grad():
        kept = [p.detach().clone() for p in weights]
        for p, n in zip(weights, params, strict=True):
            p.mul_(mask[n].to(p.device))
    ones = torch.ones((1, *input_shape), dtype=torch.float64, device=weights[0].device)
    grads = torch.autograd.grad(model(ones).sum(), weights)
    scores = {n: (g * p).detach().abs().float() for (n, p), g in zip(params.items(), grads, strict=True)}
    with torch.no_grad():
        for p, k in zip(weights, kept, strict=True):
            p.copy_(k)
    return scores


def synflow_scores(
    model: nn.Module, params: Mapping[str, nn.Parameter], input_shape: tuple[int, ...], mask: Mask
) -> dict[str, torch.Tensor]:
    """SynFlow's ``|w * dR/dw|`` of the network under ``mask``, every parameter and buffer made positive, on one
    all-ones input of ``input_shape`` (C, H, W); in eval mode, in double precision. Reads no data."""
    with _linearised(model):
        return _synflow(model, params, input_shape, mask)


@dataclass(frozen=True)
class Scoring:
    """What a pruning-at-initialisation method may read: the untrained ``model``, its prunable ``params`` by name, the
    sparsity ``target`` and ``scope``; SNIP and GraSP the training ``batches`` and ``loss_fn``, SynFlow the
    ``input_shape`` (C, H, W) and its ``iterations``, random its ``generator``."""

    model: nn.Module
    params: Mapping[str, nn.Parameter]
    target: float
    scope: str = "global"
    batches: Iterable[Batch] = ()
    loss_fn: Loss | None = None
    input_shape: tuple[int, ...] = ()
    generator: torch.Generator | None = None
    iterations: int = 100


def magnitude_init(s: Scoring) -> Mask:
    """The largest ``|w|`` of the initial weights."""
    return mask_from_scores(magnitude_scores(s.params), s.target, s.scope)


def random(s: Scoring) -> Mask:
    """A random mask at the target sparsity."""
    return mask_from_scores(random_scores(s.params, s.generator or torch.Generator()), s.target, s.scope)


def snip(s: Scoring) -> Mask:
    """The highest SNIP scores."""
    return mask_from_scores(snip_scores(s.model, s.params, s.batches, s.loss_fn), s.target, s.scope)


def grasp(s: Scoring) -> Mask:
    """The lowest GraSP scores."""
    flipped = {n: -v for n, v in grasp_scores(s.model, s.params, s.batches, s.loss_fn).items()}
    return mask_from_scores(flipped, s.target, s.scope)


def synflow(s: Scoring) -> Mask:
    """SynFlow's iterative pruning to the target in ``iterations`` steps."""
    mask = Mask.ones_like(s.params)
    with _linearised(s.model):  # once for all the steps
        for step in range(1, s.iterations + 1):
            scores = _synflow(s.model, s.params, s.input_shape, mask)
            mask = mask_from_scores(scores, s.target, s.scope, mask, step, s.iterations)
    return mask


def mask_at_init(method: str, scoring: Scoring) -> Mask:
    """The mask the pruning-at-initialisation ``method`` (an entry of :data:`lth.core.catalog.METHODS` that scores
    the initial weights) gives the untrained network of ``scoring``."""
    entry = METHODS.entry(method)
    if not entry.has(SCORES_INITIAL_WEIGHTS):
        raise ConfigError("prune.method", f"{method!r} does not prune at initialisation; allowed: {PRUNING_AT_INIT}")
    return entry.load()(scoring)


def lamp_scores(weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """LAMP (Lee et al., ICLR 2021): within each tensor, a surviving weight ``u`` scores
    ``w_u^2 / sum_{v >= u} w_v^2``, the sum over the surviving weights of the tensor at least as large as ``u``
    (ascending ``|w|``, ties in position order); pruned weights score 0. The scores compare across layers, so
    ranked globally they prune each layer in proportion to how much of its own mass a weight carries. Returned as
    global ranks (:func:`ranks`): magnitude pruning of them removes the lowest scores, ties by position."""
    scores = {}
    for name, w in weights.items():
        alive = mask[name].flatten().to(w.device)
        squares = w.detach().flatten().double().pow(2).masked_fill(~alive, 0.0)
        order = torch.argsort(squares, stable=True)
        ascending = squares[order]
        behind = ascending.flip(0).cumsum(0).flip(0)  # sum of this weight and every larger one
        score = torch.zeros_like(squares)
        score[order] = torch.where(behind > 0, ascending / behind, torch.zeros_like(behind))
        scores[name] = score.masked_fill(~alive, 0.0).view_as(w)
    return ranks(scores)
