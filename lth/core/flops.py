"""What a training iteration costs in floating-point operations, dense and as a mask allows.

The count is torch's own (:class:`torch.utils.flop_counter.FlopCounterMode`) over one forward and backward pass of
a training batch through a copy of the network on the ``meta`` device, so nothing is computed, no random number is
drawn and the network itself is not touched. A pruned weight saves its share of the operations of the layer that
holds it: a Linear or Conv layer (or Hugging Face's Conv1D) whose weight keeps a fraction d of its entries is
counted at d times its own operations (forward and backward), as sparse-training papers count them (e.g. Evci et al.
2020). Tensors that no
such layer holds alone (an attention's input projection) are counted dense. The optimiser's update is not counted.

Pure torch: no Lightning.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lth.core.anatomy import PRUNABLE_MODULES, is_hf_conv1d
from lth.core.masks import Mask


@dataclass(frozen=True)
class IterationFlops:
    """The operations of one training iteration: in all (``dense``), and those of each prunable weight's layer."""

    dense: int
    layers: dict[str, int]  # prunable parameter name -> the operations of the layer that holds it

    def masked(self, mask: Mask) -> int:
        """The operations left when each layer runs only the weights ``mask`` keeps."""
        saved = 0.0
        for name, flops in self.layers.items():
            if name in mask:
                saved += flops * (1.0 - int(mask[name].count_nonzero()) / mask[name].numel())
        return round(self.dense - saved)


def iteration_flops(
    network: nn.Module, input_shape: tuple[int, ...], batch_size: int, prefix: str = ""
) -> IterationFlops:
    """Count a training iteration of ``network`` on a batch of ``batch_size`` images of ``input_shape`` (C, H, W)
    with a cross-entropy loss. ``prefix`` is prepended to parameter names (``model.`` for a Classifier's)."""
    meta = copy.deepcopy(network).to("meta").train()
    x = torch.zeros((batch_size, *input_shape), device="meta")
    y = torch.zeros(batch_size, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(meta(x), y).backward()
    counts = counter.get_flop_counts()
    root = type(meta).__name__
    layers = {}
    for path, module in meta.named_modules():
        if path and (isinstance(module, PRUNABLE_MODULES) or is_hf_conv1d(module)):
            layers[f"{prefix}{path}.weight"] = int(sum(counts.get(f"{root}.{path}", {}).values()))
    return IterationFlops(dense=int(counter.get_total_flops()), layers=layers)
