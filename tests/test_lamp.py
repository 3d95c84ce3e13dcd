"""LAMP (Lee et al., ICLR 2021) as an IMP criterion: its scores are the paper's formula, ranked globally, and
``prune.method=lamp`` runs through ``train.py`` round after round."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lth.core.masks import Mask, prune
from lth.core.scores import lamp_scores, ranks
from lth.lightning.callback import ArgumentError, LotteryTicket
from lth.state.artifacts import read_rounds
from tests.conftest import FAST, run_folders, run_main


def paper_lamp(w: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """Equation (1) of the paper, written out: the weights of the tensor sorted by ascending |w| (ties in position
    order), score(u) = w_u^2 / sum_{v >= u} w_v^2 over the surviving ones; pruned weights score 0."""
    flat, keep = w.flatten().double(), alive.flatten()
    order = sorted((i for i in range(len(flat)) if keep[i]), key=lambda i: (float(flat[i] ** 2), i))
    score = torch.zeros_like(flat)
    for position, u in enumerate(order):
        score[u] = flat[u] ** 2 / sum(flat[v] ** 2 for v in order[position:])
    return score.view_as(w)


def test_lamp_scores_are_the_papers_formula_ranked_globally() -> None:
    g = torch.Generator().manual_seed(0)
    weights = {"a": torch.randn(6, 5, generator=g), "b": 10 * torch.randn(4, 3, generator=g)}
    mask = Mask({"a": torch.rand(6, 5, generator=g) > 0.3, "b": torch.ones(4, 3, dtype=torch.bool)})
    expected = ranks({n: paper_lamp(w, mask[n]) for n, w in weights.items()})
    got = lamp_scores(weights, mask)
    assert all(torch.equal(got[n], expected[n]) for n in weights)


def test_a_hand_worked_tensor() -> None:
    w = torch.tensor([3.0, -1.0, 2.0])  # squares 9, 1, 4: scores 9/9, 1/14, 4/13
    assert paper_lamp(w, torch.ones(3, dtype=torch.bool)).tolist() == pytest.approx([1.0, 1 / 14, 4 / 13])
    assert lamp_scores({"w": w}, {"w": torch.ones(3, dtype=torch.bool)})["w"].tolist() == [2.0, 0.0, 1.0]


def test_global_lamp_keeps_every_layers_largest_weight_where_magnitude_empties_a_small_layer() -> None:
    g = torch.Generator().manual_seed(1)
    weights = {"big": 100 * torch.randn(20, 20, generator=g), "small": torch.randn(10, 10, generator=g)}
    mask = Mask.ones_like(weights)
    by_magnitude = prune(weights, mask, rate=0.75)
    by_lamp = prune(lamp_scores(weights, mask), mask, rate=0.75)
    assert by_magnitude.remaining() == by_lamp.remaining() == 125
    assert int(by_magnitude["small"].sum()) == 0  # magnitude ranks the small layer away
    assert int(by_lamp["small"].sum()) > 0 and bool(by_lamp["small"].flatten()[weights["small"].abs().argmax()])


def test_the_callback_takes_lamp_and_refuses_it_where_it_cannot_rank_globally() -> None:
    ticket = LotteryTicket(rate=0.5, criterion="lamp")
    net = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.Linear(6, 3))
    ticket._record_rewind_point(net)
    params = ticket.parameters_of(net)
    before = {n: p.detach().clone() for n, p in params.items()}
    mask = ticket.advance(net)
    expected = prune(lamp_scores(before, Mask.ones_like(before)), Mask.ones_like(before), rate=0.5)
    assert all(torch.equal(mask[n], expected[n]) for n in expected)
    for kwargs, argument in (
        ({"scope": "layer"}, "scope"),
        ({"layer_rates": {"1": 0.1}}, "scope"),
        ({"granularity": "2:4"}, "granularity"),
        ({"criterion": "snip"}, "criterion"),
    ):
        with pytest.raises(ArgumentError) as error:
            LotteryTicket(**{"criterion": "lamp", **kwargs})
        assert error.value.argument == argument


def test_prune_method_lamp_through_train_py(tmp_path: Path) -> None:
    common = [*FAST, "prune.rate=0.5", "model.hidden=[40,20]", f"paths.output_dir={tmp_path}"]
    lamp, magnitude = run_main(*common, "prune.method=lamp", cwd=tmp_path), run_main(*common, cwd=tmp_path)
    assert lamp.returncode == magnitude.returncode == 0, lamp.stderr + magnitude.stderr
    runs = run_folders(tmp_path / "runs")
    (lamp_run,) = [r for r in runs if "method: lamp" in (r / "config.yaml").read_text()]
    (magnitude_run,) = [r for r in runs if r != lamp_run]  # the method is part of the identity: two folders
    for k in (1, 2):
        mask = Mask(torch.load(lamp_run / f"round_{k:02d}" / "mask.pt"))
        assert mask.remaining() == mask.total() - round(0.5 * mask.total()) if k == 1 else mask.total() / 2
        assert all(int(m.sum()) > 0 for m in mask.values())  # LAMP keeps every layer alive
    layers = [
        [int(m.sum()) for m in torch.load(r / "round_02" / "mask.pt").values()] for r in (lamp_run, magnitude_run)
    ]
    assert layers[0] != layers[1]  # another ranking, another mask
    assert [row["round"] for row in read_rounds(lamp_run / "rounds.csv")] == [0, 1, 2]
    refused = run_main(*common, "prune.method=lamp", "prune.scope=layer", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        "error: prune.scope: prune.method=lamp ranks globally; allowed: global, without layer_rates"
    ]


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["prune.scope=layer"], "prune.scope"),
        (["prune.layer_rates=null", "+prune.layer_rates={model.out: 0.1}"], "prune.scope"),
        (["prune.granularity=channel"], "prune.granularity"),
    ],
)
def test_lamp_where_it_cannot_rank_globally_is_one_line(make_cfg, overrides, key) -> None:
    from lth.config.validate import validate
    from lth.core.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        validate(make_cfg("prune.method=lamp", *overrides))
    assert error.value.key == key and "\n" not in str(error.value)
