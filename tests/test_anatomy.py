"""What the framework needs from a model, found or declared (lth.core.anatomy): tensors, output layer, chain."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from lth.core.anatomy import NotShrinkable, as_chain, output_layer, prunable_candidates
from lth.core.errors import ConfigError
from lth.core.masks import prunable_parameters


def test_hugging_face_conv1d_weights_are_prunable_by_default():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        n_embd=16, n_layer=1, n_head=2, vocab_size=11, n_positions=8, bos_token_id=0, eos_token_id=0
    )
    model = transformers.GPT2LMHeadModel(config)
    names = list(prunable_parameters(model))
    assert "transformer.h.0.attn.c_attn.weight" in names  # Conv1D (weight stored transposed)
    assert "transformer.h.0.mlp.c_fc.weight" in names
    assert not any(n.endswith("bias") for n in names)


class Declares(nn.Module):
    """A model that names its own prunable tensors and its output layer."""

    lth_output = "head"

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.gate = nn.Parameter(torch.ones(4, 4))
        self.head = nn.Linear(4, 2)
        self.aux = nn.Linear(2, 2)

    def lth_prunable(self) -> list[str]:
        return ["gate", "body.weight"]


def test_a_model_declares_its_prunable_tensors_and_output_layer():
    model = nn.Sequential(Declares())
    assert list(prunable_candidates(model)) == ["0.gate", "0.body.weight"]
    assert output_layer(model[0]) == "head"
    assert output_layer(nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))) == "2"  # found: the last Linear


def test_chains_are_declared_or_sequential():
    chain = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    assert isinstance(as_chain(chain), nn.Sequential) and as_chain(chain) is not chain
    with pytest.raises(NotShrinkable, match="declares no lth_chain"):
        as_chain(Declares())


def test_a_module_pruned_by_torch_is_refused_in_one_line_not_skipped():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    torch_prune.l1_unstructured(model[0], "weight", amount=0.5)
    with pytest.raises(ConfigError, match=r"0.weight is reparametrised by torch.nn.utils.prune") as error:
        prunable_parameters(model)
    assert "\n" not in str(error.value)
