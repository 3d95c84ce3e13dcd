"""Cheaper tickets: each method's defining property on small inputs, and every method through ``train.py``.

SNIP's scores are |g * w| and GraSP's -w * Hg with g and H written out here; SynFlow's are the closed form of a
two-layer linear network and it never reads data; every method keeps exactly the number of weights its target
asks for, overall or per layer; the early-bird ticket is drawn at the first evaluation where the criterion holds;
rounds.csv counts what each network cost, its FLOPs as torch's counter gives them.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from lth.core.earlybird import EarlyBirdWindow, mask_distance
from lth.core.flops import iteration_flops
from lth.core.masks import Mask, round_half_up
from lth.core.scores import PRUNING_AT_INIT, Scoring, grasp_scores, mask_at_init, snip_scores, synflow_scores
from lth.run.build import build_model
from lth.state.artifacts import read_rounds
from tests.conftest import REPO, run_folders, run_main, run_train, typed


def two_layers(seed: int = 0) -> tuple[nn.Module, dict[str, nn.Parameter]]:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 5, bias=False), nn.Linear(5, 3, bias=False))
    return net, {"0.weight": net[0].weight, "1.weight": net[1].weight}


def batch(seed: int = 1, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_snip_scores_are_the_magnitude_of_gradient_times_weight() -> None:
    net, params = two_layers()
    x, y = batch()
    w1, w2 = net[0].weight.detach(), net[1].weight.detach()
    h = x @ w1.T
    p = torch.softmax(h @ w2.T, dim=1)
    d_logits = (p - F.one_hot(y, 3).float()) / len(y)  # d(mean cross-entropy)/d(logits)
    g2 = d_logits.T @ h
    g1 = (d_logits @ w2).T @ x
    scores = snip_scores(net, params, [(x, y)], F.cross_entropy)
    torch.testing.assert_close(scores["0.weight"], (g1 * w1).abs())
    torch.testing.assert_close(scores["1.weight"], (g2 * w2).abs())


def test_grasp_scores_are_minus_weight_times_hessian_gradient_product() -> None:
    net, params = two_layers()
    x, y = batch()
    shapes = [p.shape for p in params.values()]
    flat = torch.cat([p.detach().flatten() for p in params.values()])

    def loss(theta: torch.Tensor) -> torch.Tensor:
        w1 = theta[: shapes[0].numel()].view(shapes[0])
        w2 = theta[shapes[0].numel() :].view(shapes[1])
        return F.cross_entropy((x @ w1.T) @ w2.T / 200.0, y)  # GraSP's temperature

    g = torch.autograd.functional.jacobian(loss, flat)
    hessian = torch.autograd.functional.hessian(loss, flat)
    expected = -flat * (hessian @ g)
    scores = grasp_scores(net, params, [(x, y)], F.cross_entropy)
    torch.testing.assert_close(torch.cat([s.flatten() for s in scores.values()]), expected, rtol=1e-4, atol=1e-12)


class Exploding:
    """Data that must not be read."""

    def __iter__(self):
        raise AssertionError("SynFlow read data")


def test_synflow_is_the_closed_form_of_a_linear_network_and_reads_no_data() -> None:
    net, params = two_layers()
    w1, w2 = net[0].weight.detach().clone(), net[1].weight.detach().clone()
    scores = synflow_scores(net, params, (6,), Mask.ones_like(params))
    # R = 1' |W2| |W1| 1: dR/dW1[i, j] = sum_k |W2[k, i]|, dR/dW2[k, i] = sum_j |W1[i, j]|
    torch.testing.assert_close(scores["0.weight"], (w1.abs() * w2.abs().sum(0)[:, None]).float())
    torch.testing.assert_close(scores["1.weight"], (w2.abs() * w1.abs().sum(1)[None, :]).float())
    assert torch.equal(net[0].weight, w1) and torch.equal(net[1].weight, w2)  # the network is left as it was
    mask = mask_at_init("synflow", Scoring(net, params, 0.5, batches=Exploding(), input_shape=(6,), iterations=10))
    assert mask.remaining() == round_half_up(45 * 0.5)


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("method", PRUNING_AT_INIT)
def test_every_method_keeps_exactly_the_weights_its_target_asks_for(method: str, scope: str) -> None:
    net, params = two_layers()
    mask = mask_at_init(
        method,
        Scoring(
            net,
            params,
            0.7,
            scope,
            batches=[batch()],
            loss_fn=F.cross_entropy,
            input_shape=(6,),
            generator=torch.Generator().manual_seed(0),
            iterations=7,
        ),
    )
    if scope == "global":
        assert mask.remaining() == round_half_up(45 * 0.3)
    else:
        assert [int(m.sum()) for m in mask.values()] == [round_half_up(30 * 0.3), round_half_up(15 * 0.3)]


def test_the_lowest_grasp_scores_are_kept() -> None:
    net, params = two_layers()
    scores = grasp_scores(net, params, [batch()], F.cross_entropy)
    mask = mask_at_init("grasp", Scoring(net, params, 0.8, batches=[batch()], loss_fn=F.cross_entropy))
    kept = torch.cat([scores[n][mask[n]] for n in params])
    dropped = torch.cat([scores[n][~mask[n]] for n in params])
    assert kept.max() <= dropped.min()


def test_the_early_bird_window_draws_at_the_first_full_window_within_epsilon() -> None:
    def mask(*alive: int) -> Mask:
        m = torch.zeros(10, dtype=torch.bool)
        m[list(alive)] = True
        return Mask({"w": m})

    assert mask_distance(mask(0, 1), mask(0, 1)) == 0.0
    assert mask_distance(mask(0, 1), mask(2, 3)) == 0.4  # 4 of 10 positions differ
    assert mask_distance(mask(0, 1), mask(2, 3), over="kept") == 1.0  # disjoint
    window = EarlyBirdWindow(window=3, epsilon=0.25)
    drawn = [window.add(m) for m in (mask(0, 1), mask(0, 2), mask(0, 2), mask(0, 2), mask(0, 2))]
    # full at the 3rd mask: distances to the newest 0.2 and 0 (< 0.25)
    assert drawn == [False, False, True, True, True]
    kept = EarlyBirdWindow(window=3, epsilon=0.25, distance="kept")
    drawn = [kept.add(m) for m in (mask(0, 1), mask(0, 2), mask(0, 2), mask(0, 2))]
    assert drawn == [False, False, False, True] and kept.distances == [0.5, 0.0]


def test_flops_of_a_linear_layer_are_torchs_count_and_scale_with_its_mask() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 4))
    flops = iteration_flops(net, (3, 2, 2), batch_size=5, prefix="model.")
    # forward 2*B*in*out per layer; backward: the weight gradient, and the input gradient but for the first layer
    assert flops.layers == {"model.1.weight": 2 * 2 * 5 * 12 * 8, "model.3.weight": 3 * 2 * 5 * 8 * 4}
    assert flops.dense == sum(flops.layers.values())
    half = Mask({"model.1.weight": torch.rand(8, 12) < 2, "model.3.weight": torch.arange(32).view(4, 8) < 16})
    assert flops.masked(half) == flops.dense - flops.layers["model.3.weight"] // 2


SETUP = ["dataset=synthetic", "train.steps=40it", "train.eval_every=5it", "logger=none", "hardware.threads=1"]


@pytest.mark.slow
def test_every_method_runs_from_train_py_in_one_sweep_and_counts_its_cost(tmp_path: Path) -> None:
    methods = "magnitude,early_bird,snip,grasp,synflow,magnitude_init,random"
    result = run_main(
        "-m",
        *SETUP,
        "prune.rounds=1",
        "prune.target_sparsity=0.9",
        f"prune.method={methods}",
        "prune.early_bird.window=2",
        "prune.early_bird.epsilon=0.2",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = {OmegaConf.load(r / "config.yaml").prune.method: r for r in run_folders(tmp_path / "sweep")}
    assert set(found) == set(methods.split(","))
    for name, run in found.items():
        cfg = OmegaConf.load(run / "config.yaml")
        shape = (cfg.dataset.channels, cfg.dataset.image_size, cfg.dataset.image_size)
        flops = iteration_flops(build_model(typed(cfg)), shape, cfg.train.batch_size, prefix="model.")
        rows = read_rounds(run / "rounds.csv")
        mask = Mask(torch.load(run / "round_01" / "mask.pt"))
        assert mask.remaining() == round_half_up(mask.total() * 0.1), name
        assert rows[0]["train_flops"] == rows[0]["train_flops_dense"] == rows[0]["train_iterations"] * flops.dense
        if name in PRUNING_AT_INIT:  # a mask found at initialisation cost no training
            spent = {"train_iterations": 0, "train_flops": 0, "train_flops_dense": 0}
        else:  # round 0, the round the mask came from, counts
            spent = rows[0]
        assert rows[1]["train_iterations"] == spent["train_iterations"] + 40, name
        assert rows[1]["train_flops"] == spent["train_flops"] + 40 * flops.masked(mask), name
        assert rows[1]["train_flops_dense"] == spent["train_flops_dense"] + 40 * flops.dense, name
    bird = json.loads((found["early_bird"] / "round_00" / "early_bird.json").read_text())
    distances = bird["distances"]
    # drawn at the first evaluation where the criterion holds, and round 0 stopped there
    assert distances[-1] < 0.2 and all(d >= 0.2 for d in distances[:-1])
    assert bird["drawn_iteration"] == 5 * (len(distances) + 1) < 40
    assert read_rounds(found["early_bird"] / "rounds.csv")[0]["train_iterations"] == bird["drawn_iteration"]

    # accuracy against cost: a series per method, the cost of each point its rows' train_iterations
    plot = runpy.run_path(str(REPO / "scripts" / "plot.py"))["main"]
    plot([str(tmp_path / "sweep"), "--x", "train_iterations", "--metric", "test_acc", "--out", str(tmp_path / "f")])
    assert (tmp_path / "f" / "test_acc_vs_train_iterations.png").is_file()
    report = runpy.run_path(str(REPO / "scripts" / "report.py"))["main"]
    report([str(tmp_path / "sweep"), "--metric", "train_iterations", "--out", str(tmp_path / "cost.md")])
    table = (tmp_path / "cost.md").read_text()
    ten = next(line for line in table.splitlines() if line.startswith("| 10.0%"))
    header = next(line for line in table.splitlines() if line.startswith("| weights remaining"))
    cells = dict(zip(header.split(" | ")[1:], ten.split(" | ")[1:], strict=True))
    for label, cell in cells.items():
        method = label.removeprefix("prune.method=").split(" ")[0]
        assert cell.strip(" |") == str(read_rounds(found[method] / "rounds.csv")[1]["train_iterations"]), label


def test_the_mask_of_a_pruning_at_init_method_is_the_one_its_scores_give_at_the_runs_initial_weights(
    tmp_path: Path,
) -> None:
    result = run_main(
        *SETUP, "prune.rounds=1", "prune.target_sparsity=0.8", "prune.method=magnitude_init", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_folders(tmp_path / "outputs" / "runs")
    init = torch.load(run / "rewind.pt")
    mask = torch.load(run / "round_01" / "mask.pt")
    scores = torch.cat([init[n].abs().flatten() for n in mask])
    kept = torch.cat([init[n].abs()[mask[n]] for n in mask])
    assert len(kept) == round_half_up(len(scores) * 0.2)
    assert kept.min() >= scores.kthvalue(len(scores) - len(kept)).values  # the largest initial magnitudes


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["prune.method=snip"], "prune.target_sparsity: prune.method=snip prunes once to a target sparsity"),
        (["prune.method=grasp", "prune.target_sparsity=0.9"], "prune.rounds: prune.method=grasp prunes once"),
        (
            ["prune.method=synflow", "prune.target_sparsity=0.9", "prune.rounds=1", "prune.rewind=6it"],
            "prune.rewind: prune.method=synflow trains from the initial weights it scored; allowed: init",
        ),
        (["prune.method=obd"], "prune.method"),
        (["prune.method=early_bird", "prune.early_bird.window=1"], "prune.early_bird.window"),
        (["prune.method=early_bird", "prune.early_bird.distance=some"], "prune.early_bird.distance"),
        (["prune.score_batches=0"], "prune.score_batches"),
        (
            ["prune.method=snip", "prune.target_sparsity=0.9", "prune.rounds=1", "prune.granularity=channel"],
            "prune.granularity: prune.method=snip finds masks of single weights; allowed: weight",
        ),
    ],
)
def test_a_method_that_cannot_take_an_option_is_one_line_and_writes_nothing(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    result = run_main(*SETUP, *args, cwd=tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "outputs").exists()


def test_an_early_bird_drawn_before_the_rewind_step_is_one_line_and_keeps_round_0(tmp_path: Path) -> None:
    early = ["prune.early_bird.window=2", "prune.early_bird.epsilon=0.99", "train.eval_every=2it"]
    args = [*SETUP, *early, "prune.rounds=1", "prune.target_sparsity=0.8", "prune.method=early_bird"]
    result = run_main(*args, "prune.rewind=10it", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: prune.rewind: 10it is past the end of round 0, where the early-bird ticket was drawn (iteration 4); "
        "allowed: init or an earlier Step"
    ]
    (run,) = run_folders(tmp_path / "outputs" / "runs")
    assert [row["train_iterations"] for row in read_rounds(run / "rounds.csv")] == [4]


@pytest.mark.slow
def test_an_early_bird_ticket_is_drawn_at_the_same_iteration_on_every_ddp_rank(tmp_path: Path) -> None:
    early = ["prune.early_bird.window=2", "prune.early_bird.epsilon=0.2", "hardware=ddp_cpu"]
    args = [*SETUP, *early, "prune.rounds=1", "prune.target_sparsity=0.8", "prune.method=early_bird"]
    result = run_train(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_folders(tmp_path / "outputs" / "runs")
    drawn = json.loads((run / "round_00" / "early_bird.json").read_text())["drawn_iteration"]
    rows = read_rounds(run / "rounds.csv")
    assert 0 < drawn < 40 and rows[0]["train_iterations"] == drawn and rows[1]["train_iterations"] == drawn + 40
