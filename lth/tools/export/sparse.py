"""Sparse inference paths: Linear layers as ``torch.sparse`` CSR matrices, and the choice, layer by layer and
measured on the layer's own input, between the dense and the CSR form (:func:`pick_paths`).
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings
from collections.abc import Callable, Mapping

import torch
from torch import nn

BENCH_BATCHES = (1, 64)  # the batch sizes the runtime paths are picked and timed at


class CsrLinear(nn.Module):
    """A Linear layer whose weight is a ``torch.sparse`` CSR matrix: only the surviving weights are stored."""

    def __init__(self, layer: nn.Linear) -> None:
        super().__init__()
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            self.weight = layer.weight.detach().to_sparse_csr()
        self.bias = None if layer.bias is None else layer.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.sparse.mm(self.weight, x.t()).t()
        return y if self.bias is None else y + self.bias


def time_calls(
    calls: Mapping[str, Callable[[], object]],
    repeats: int = 5,
    min_seconds: float = 0.005,
    reduce: Callable[[list[float]], float] = statistics.median,
) -> dict[str, float]:
    """Seconds per call of each function over ``repeats`` windows of at least ``min_seconds``: their median, or
    ``reduce`` of them (``min``: the least disturbed window, on a machine busy with other work).

    The functions take turns window by window, so a burst of load on a shared machine hits all of them alike.
    """
    with torch.inference_mode():
        numbers = {}
        for name, fn in calls.items():
            fn()  # warm-up
            number = 1
            while True:
                start = time.perf_counter()
                for _ in range(number):
                    fn()
                if time.perf_counter() - start >= min_seconds:
                    break
                number *= 2
            numbers[name] = number
        windows: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(repeats):
            for name, fn in calls.items():
                start = time.perf_counter()
                for _ in range(numbers[name]):
                    fn()
                windows[name].append((time.perf_counter() - start) / numbers[name])
    return {name: reduce(w) for name, w in windows.items()}


def linear_inputs(model: nn.Module, example: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input of every Linear layer whose ``forward`` runs on a batch of vectors (N, features) for ``example``."""
    seen: dict[str, torch.Tensor] = {}

    def record(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            seen.setdefault(name, args[0])

        return hook

    hooks = [m.register_forward_pre_hook(record(n)) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    return {name: x for name, x in seen.items() if x.dim() == 2}


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)


def with_csr(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """A copy of ``model`` with every Linear layer that sees vectors for ``example`` in CSR form."""
    model = copy.deepcopy(model).eval()
    for name in linear_inputs(model, example):
        _replace(model, name, CsrLinear(model.get_submodule(name)))
    return model


def pick_paths(model: nn.Module, example: torch.Tensor, repeats: int = 5) -> tuple[nn.Module, list[dict]]:
    """A copy of ``model`` with each Linear layer dense or CSR, whichever ran faster on its input for ``example``.

    Returns the model and one ``{"layer", "dense_us", "csr_us", "path"}`` per layer considered.
    """
    model = copy.deepcopy(model).eval()
    choices = []
    for name, x in linear_inputs(model, example).items():
        dense = model.get_submodule(name)
        sparse = CsrLinear(dense)
        times = time_calls({"dense": lambda m=dense, x=x: m(x), "csr": lambda m=sparse, x=x: m(x)}, repeats)
        path = min(times, key=times.__getitem__)
        choices.append({"layer": name, "dense_us": 1e6 * times["dense"], "csr_us": 1e6 * times["csr"], "path": path})
        if path == "csr":
            _replace(model, name, sparse)
    return model, choices
