"""Instability analysis: the path between two networks, its barrier, BatchNorm statistics, and the script end to end."""

from __future__ import annotations

import csv
import json
import math
import runpy
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from lth.config.lengths import check_lengths
from lth.core.masks import Mask, prunable_parameters
from lth.run.build import build_classifier, build_data, iterations_per_epoch
from lth.tools import connectivity
from lth.tools.connectivity import (
    alphas,
    barrier,
    error_curve,
    error_rate,
    has_batchnorm,
    interpolate,
    recompute_batchnorm,
)
from lth.tools.stability import StabilityOptions, analyse, train_copy
from tests.conftest import train, typed

REPO = Path(__file__).resolve().parents[1]
TINY = ("prune.rounds=1", "train.steps=10it", "train.eval_every=10it", "hardware.threads=1")


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32)


def _masked_pair() -> tuple[dict, dict, dict]:
    gen = torch.Generator().manual_seed(0)
    mask = {"w": torch.rand(4, 5, generator=gen) > 0.5, "v": torch.rand(7, generator=gen) > 0.3}
    a = {n: torch.randn(m.shape, generator=gen) * m for n, m in mask.items()}  # negative weights give -0.0
    b = {n: torch.randn(m.shape, generator=gen) * m for n, m in mask.items()}
    a["count"], b["count"] = torch.tensor(3), torch.tensor(3)
    return a, b, mask


def test_the_ends_of_the_path_are_the_two_networks_bit_for_bit() -> None:
    a, b, _ = _masked_pair()
    start, end = interpolate(a, b, 0.0), interpolate(a, b, 1.0)
    for n in ("w", "v"):
        assert torch.equal(_bits(start[n]), _bits(a[n])) and torch.equal(_bits(end[n]), _bits(b[n]))
    assert start["w"] is not a["w"]  # copies, not aliases
    assert alphas(11) == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def test_masked_weights_stay_exactly_zero_along_the_path() -> None:
    a, b, mask = _masked_pair()
    for alpha in alphas(11):
        mid = interpolate(a, b, alpha)
        for n, m in mask.items():
            assert torch.all(mid[n][~m] == 0)
            assert torch.allclose(mid[n], (1 - alpha) * a[n] + alpha * b[n])
        assert mid["count"].item() == 3 and mid["count"].dtype == torch.int64
    with pytest.raises(ValueError, match="keys"):
        interpolate(a, {"w": b["w"]}, 0.5)


def test_the_barrier_is_the_peak_above_the_mean_of_the_ends() -> None:
    assert barrier([0.10, 0.15, 0.30, 0.20, 0.12]) == pytest.approx(0.30 - 0.11)
    assert barrier([0.2, 0.2, 0.2]) == 0.0
    assert barrier([0.10, 0.05, 0.20]) == pytest.approx(0.20 - 0.15)  # the higher end is the peak
    with pytest.raises(ValueError):
        barrier([0.1])


def test_batchnorm_recomputation_sets_the_running_stats_to_the_datas() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Dropout(0.5))
    nn.init.eye_(model[0].weight)
    nn.init.zeros_(model[0].bias)
    model.eval()
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(64, 3, generator=gen) * 2.0 + 5.0, None) for _ in range(4)]
    assert has_batchnorm(model)
    assert recompute_batchnorm(model, batches)
    bn = model[1]
    means = torch.stack([x.mean(0) for x, _ in batches])
    variances = torch.stack([x.var(0) for x, _ in batches])  # unbiased, as BatchNorm keeps them
    assert torch.allclose(bn.running_mean, means.mean(0), atol=1e-5)  # the plain average, not a moving one
    assert torch.allclose(bn.running_var, variances.mean(0), atol=1e-4)
    assert (bn.running_mean - 5.0).abs().max() < 0.5  # far from the initial 0
    assert bn.momentum == 0.1 and int(bn.num_batches_tracked) == 4
    assert not model.training and not bn.training and not model[2].training
    assert not recompute_batchnorm(nn.Linear(3, 2), batches) and not has_batchnorm(nn.Linear(3, 2))


def test_the_test_error_along_a_path_between_a_network_and_itself_is_flat() -> None:
    model = nn.Linear(4, 3)
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(1))
    y = model(x).argmax(1)
    y[:20] = (y[:20] + 1) % 3  # 20 of the 50 labels disagree with the model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    errors = error_curve(model, state, state, alphas(5), [(x[:30], y[:30]), (x[30:], y[30:])])
    assert errors == [0.4] * 5 and error_rate(model, [(x, y)]) == 0.4
    assert barrier(errors) == 0.0


def test_two_copies_share_the_start_and_differ_only_by_their_data_order(make_cfg, tmp_path: Path) -> None:
    cfg = typed(make_cfg(*TINY))
    data = build_data(cfg)
    data.setup()
    ipe = iterations_per_epoch(cfg, data)
    total = check_lengths(cfg.train, cfg.prune.rewind, cfg.optim.schedule, ipe).total
    start = build_classifier(cfg, total, ipe).state_dict()
    untouched = {k: v.clone() for k, v in start.items()}
    params = prunable_parameters(build_classifier(cfg, total, ipe))
    mask = Mask({n: torch.rand(p.shape, generator=torch.Generator().manual_seed(3)) > 0.5 for n, p in params.items()})
    a, again, b = (train_copy(cfg, data, start, mask, seed, tmp_path) for seed in (1, 1, 2))
    assert all(torch.equal(start[k], untouched[k]) for k in start)  # the start point is not trained in place
    assert all(torch.equal(a[k], again[k]) for k in a)  # the same data order gives the same network ...
    assert any(not torch.equal(a[k], b[k]) for k in a)  # ... another order a different one
    for n, m in mask.items():
        assert not torch.equal(a[n], start[n])
        assert torch.all(a[n][~m] == 0) and torch.all(b[n][~m] == 0)  # the mask held during training


def test_a_run_without_a_rewind_point_is_refused(make_cfg, tmp_path: Path) -> None:
    cfg = typed(make_cfg("prune.rewind=lr"))
    (tmp_path / "round_00").mkdir()
    with pytest.raises(FileNotFoundError, match="rewind.pt"):
        analyse(tmp_path, cfg)


def test_the_script_writes_one_row_per_round(make_cfg, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = Path(train(make_cfg(*TINY), run_dir=tmp_path / "run")["run_dir"])
    main = runpy.run_path(str(REPO / "scripts" / "instability.py"))["main"]
    result = main([str(run_dir), "--data-seeds", "3", "4", "--plot"])
    with open(run_dir / "instability.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["round"]) for r in rows] == [0, 1]
    assert list(rows[0]) == ["round", "weights_remaining", "test_error_0", "test_error_1", "barrier", "stable"]
    for row in rows:
        errors = float(row["test_error_0"]), float(row["test_error_1"])
        assert all(0.0 <= e <= 1.0 for e in errors)
        assert math.isfinite(float(row["barrier"])) and float(row["barrier"]) >= 0
        assert row["stable"] == str(float(row["barrier"]) < 0.02)
    saved = json.loads((run_dir / "instability.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["data_seeds"] == [3, 4] and saved["trained_steps"] == 10
    for r in saved["rounds"]:
        assert len(r["errors"]) == 11 and r["relative_distance"] > 0  # the two copies ended apart
    assert saved["rounds"][1]["weights_remaining"] == pytest.approx(0.8, abs=1e-4)
    assert "none in the model" in capsys.readouterr().out  # LeNet-300-100 has no BatchNorm
    assert (run_dir / "instability.png").stat().st_size > 0
    assert OmegaConf.load(run_dir / "config.yaml").train.steps == "10it"  # the run's config is left as it was


@pytest.mark.slow
def test_a_batchnorm_model_gets_its_statistics_recomputed_at_every_alpha(
    make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_cfg("model=resnet20", "model.width=0.25", "prune.rounds=0", "train.steps=4it", "train.eval_every=4it")
    run_dir = Path(train(cfg, run_dir=tmp_path / "run")["run_dir"])
    calls = []
    recompute = connectivity.recompute_batchnorm
    monkeypatch.setattr(
        connectivity,
        "recompute_batchnorm",
        lambda model, batches: calls.append(len(batches)) or recompute(model, batches),
    )
    result = analyse(run_dir, typed(cfg), StabilityOptions(bn_batches=2, num_alphas=3))
    assert calls == [2, 2, 2]
    assert result["batchnorm"] == "recomputed at every α on 2 training batches"
    assert all(0.0 <= e <= 1.0 for e in result["rounds"][0]["errors"])
