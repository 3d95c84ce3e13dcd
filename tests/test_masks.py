"""Mask math: exact counts, global vs layer-wise, ties, masks only shrink, what is prunable."""

import math

import pytest
import torch
from torch import nn

from lth.core.errors import ConfigError
from lth.core.masks import Mask, prunable_parameters, prune, removal_count


def weights_and_mask(*shapes: tuple[int, ...], seed: int = 0) -> tuple[dict, Mask]:
    g = torch.Generator().manual_seed(seed)
    weights = {f"l{i}.weight": torch.randn(*s, generator=g) for i, s in enumerate(shapes)}
    return weights, Mask.ones_like(weights)


def test_global_removes_exactly_round_rate_times_surviving_by_magnitude() -> None:
    weights, mask = weights_and_mask((30, 20), (10, 7))
    new = prune(weights, mask, rate=0.2)
    assert mask.remaining() - new.remaining() == round(0.2 * 670)
    kept = torch.cat([weights[n].abs()[new[n]] for n in new])
    gone = torch.cat([weights[n].abs()[~new[n]] for n in new])
    assert gone.max() <= kept.min()


def test_layer_scope_prunes_each_tensor_at_the_rate() -> None:
    weights, mask = weights_and_mask((30, 20), (10, 7))
    weights["l1.weight"] = weights["l1.weight"] * 100  # global would spare this layer entirely
    new = prune(weights, mask, rate=0.2, scope="layer")
    assert new.report()["layers"]["l0.weight"]["remaining"] == 600 - 120
    assert new.report()["layers"]["l1.weight"]["remaining"] == 70 - 14
    glob = prune(weights, mask, rate=0.2, scope="global")
    assert glob.report()["layers"]["l1.weight"]["remaining"] == 70


def test_layer_rates_prune_matching_tensors_alone() -> None:
    weights, mask = weights_and_mask((300, 784), (100, 300), (10, 100))
    new = prune(weights, mask, rate=0.2, scope="layer", layer_rates={"l2": 0.1})
    layers = new.report()["layers"]
    assert layers["l2.weight"]["remaining"] == 1000 - 100
    assert layers["l0.weight"]["remaining"] == 235200 - 47040


def test_ties_are_broken_by_position_so_the_count_is_exact() -> None:
    weights = {"a.weight": torch.ones(4, 5), "b.weight": torch.ones(3, 5)}
    mask = Mask.ones_like(weights)
    new = prune(weights, mask, rate=0.3)
    assert mask.remaining() - new.remaining() == 11  # 0.3 * 35 = 10.5, halves round up
    assert not new["a.weight"].flatten()[:11].any() and new["a.weight"].flatten()[11:].all()
    assert torch.equal(prune(weights, mask, rate=0.3)["a.weight"], new["a.weight"])


def test_masks_only_shrink_and_negative_weights_are_ranked_by_magnitude() -> None:
    weights, mask = weights_and_mask((40, 40))
    weights["l0.weight"][0, :5] = -50.0  # large negative weights must survive
    for _ in range(7):
        new = prune(weights, mask, rate=0.2)
        assert not (new["l0.weight"] & ~mask["l0.weight"]).any()
        assert new["l0.weight"][0, :5].all()
        mask = new
        weights = {n: w * torch.rand_like(w) for n, w in weights.items()}
        weights["l0.weight"][0, :5] = -50.0


def test_weights_remaining_follows_one_minus_rate_to_the_k() -> None:
    weights, mask = weights_and_mask((100, 100), (50, 40))
    for k in range(1, 11):
        mask = prune(weights, mask, rate=0.2)
        assert mask.weights_remaining() == pytest.approx(0.8**k, abs=2e-4)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_target_sparsity_is_reached_exactly_in_equal_fractions(scope: str) -> None:
    weights, mask = weights_and_mask((100, 100), (50, 40))
    fractions = []
    for k in range(1, 5):
        before = mask.remaining()
        mask = prune(weights, mask, rate=0.5, scope=scope, target=0.9, round_index=k, rounds=4)
        fractions.append(mask.remaining() / before)
    assert mask.remaining() == 1200  # 10% of 12,000, also layer by layer (1,000 + 200)
    assert max(fractions) - min(fractions) < 1e-3
    assert fractions[0] == pytest.approx(0.1**0.25, abs=1e-3)


def test_one_shot_target_in_one_round() -> None:
    weights, mask = weights_and_mask((64, 64))
    assert prune(weights, mask, rate=0.2, target=0.9, round_index=1, rounds=1).remaining() == round(4096 * 0.1)


def test_removal_count_rounds_halves_up() -> None:
    assert removal_count(surviving=5, total=10, rate=0.5, target=None, round_index=1, rounds=1) == 3
    assert removal_count(surviving=10, total=10, rate=0.2, target=None, round_index=1, rounds=1) == 2
    assert removal_count(surviving=1000, total=1000, rate=0.0, target=0.5, round_index=1, rounds=2) == 1000 - round(
        1000 * math.sqrt(0.5)
    )


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.attn = nn.MultiheadAttention(8, 2)
        self.head = nn.Linear(8, 10)


def test_prunable_are_linear_conv_and_attention_weights_never_biases_or_norms() -> None:
    names = list(prunable_parameters(Net()))
    assert names == ["conv.weight", "attn.in_proj_weight", "attn.out_proj.weight", "head.weight"]


def test_include_exclude_and_extra_patterns() -> None:
    net = Net()
    assert list(prunable_parameters(net, include=["conv"])) == ["conv.weight"]
    assert "head.weight" not in prunable_parameters(net, exclude=["head"])
    with pytest.raises(ConfigError, match=r"^prune\.include: pattern 'nope'"):
        prunable_parameters(net, include=["nope"])
    with pytest.raises(ConfigError, match=r"^prune\.extra: .*never pruned"):
        prunable_parameters(net, extra=["bn.weight"])


def test_mask_report_counts_from_the_mask() -> None:
    weights, mask = weights_and_mask((10, 10), (5, 4))
    mask = prune(weights, mask, rate=0.5, scope="layer")
    report = mask.report()
    assert report["total"] == 120 and report["remaining"] == 60
    assert report["layers"]["l1.weight"] == {"total": 20, "remaining": 10, "weights_remaining": 0.5}


def test_mask_refuses_a_mismatched_model() -> None:
    weights, mask = weights_and_mask((10, 10))
    with pytest.raises(ConfigError, match="^mask: "):
        mask.check_against({"l0.weight": torch.zeros(10, 11)})
