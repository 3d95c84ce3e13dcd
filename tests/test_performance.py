"""The speed-ups keep the method exact: a compiled network holds its masks under its own parameter names, and
logging only the steps a logger writes leaves the logged values unchanged. scripts/benchmark.py's round callback
trains beside the run's own, and its report judges the targets on the numbers it is given."""

from __future__ import annotations

import csv
import runpy
from functools import partial
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger

from lth.data import TensorBatches
from lth.lightning.callback import LotteryTicket
from lth.lightning.module import Classifier
from lth.models import LeNet300100
from lth.state.checkpoints import RoundClock

BENCHMARK = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"


def classifier(compile: bool = False) -> Classifier:
    torch.manual_seed(0)
    optimizer = partial(torch.optim.Adam, lr=1e-2, weight_decay=1e-2)
    return Classifier(LeNet300100(1, 8, 3, hidden=(16, 8)), 3, optimizer, compile=compile)


def fit(module: Classifier, steps: int, callbacks: list[pl.Callback], logger: CSVLogger | bool = False) -> None:
    g = torch.Generator().manual_seed(0)
    data = TensorBatches(torch.randn(64, 1, 8, 8, generator=g), torch.randint(3, (64,), generator=g), 16, shuffle=True)
    pl.Trainer(
        max_steps=steps,
        callbacks=callbacks,
        logger=logger,
        log_every_n_steps=3,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    ).fit(module, train_dataloaders=data)


@pytest.mark.slow  # torch.compile: 40 s on 2 busy cores
def test_a_compiled_network_keeps_its_parameter_names_and_pruned_weights_stay_exactly_zero() -> None:
    compiled = classifier(compile=True)
    assert list(compiled.state_dict()) == list(classifier().state_dict())
    ticket = LotteryTicket(rate=0.5, rewind="none")
    ticket.advance(compiled)
    fit(compiled, 6, [ticket])  # Adam's moments and weight decay push on the pruned weights every step
    for name, p in ticket.parameters_of(compiled).items():
        assert torch.count_nonzero(p[~ticket.mask[name]]) == 0
        assert torch.count_nonzero(p[ticket.mask[name]]) == int(ticket.mask[name].sum())


def test_the_train_loss_a_logger_writes_is_every_log_interval_step_of_the_unthrottled_run(tmp_path: Path) -> None:
    losses: dict[int, float] = {}

    class EveryStep(pl.Callback):
        """Records every step's loss (the value ``training_step`` returns) next to the logger."""

        def on_train_batch_end(
            self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: dict, batch: object, batch_idx: int
        ) -> None:
            losses[trainer.global_step - 1] = float(outputs["loss"])

    fit(classifier(), 10, [EveryStep()], CSVLogger(tmp_path, name="", version=""))
    with open(tmp_path / "metrics.csv") as f:
        logged = {int(row["step"]): float(row["train_loss"]) for row in csv.DictReader(f) if row["train_loss"]}
    assert logged == {step: losses[step] for step in (2, 5, 8)}


@pytest.mark.slow  # torch.compile: 40 s on 2 busy cores
def test_train_compile_through_the_config_keeps_masks_and_identity(make_cfg, tmp_path: Path) -> None:
    from lth.config.identity import run_id
    from tests.conftest import train

    assert run_id(make_cfg("train.compile=true")) == run_id(make_cfg())  # run-only: renames no result
    rows = train(make_cfg("train.compile=true", "prune.rounds=1", "train.share_dense=false"), run_dir=tmp_path / "run")
    mask = torch.load(tmp_path / "run" / "round_01" / "mask.pt")
    weights = torch.load(tmp_path / "run" / "round_01" / "early_stop.pt")
    assert rows["rounds"][1]["weights_remaining"] == pytest.approx(0.8, abs=1e-3)
    for name, m in mask.items():
        assert torch.count_nonzero(weights[name][~m]) == 0


def test_the_benchmarks_round_callback_trains_beside_the_runs_round_clock() -> None:
    # Lightning keys callback state by class name: a second class named RoundClock was refused in every round
    bench = runpy.run_path(str(BENCHMARK))
    timed = bench["TimedTicket"](rate=0.5, rewind="none")
    assert timed.state_key != RoundClock().state_key
    module = classifier()
    timed.advance(module)
    fit(module, 6, [RoundClock(), timed])
    assert len(timed.step_ends) == 6 and timed.training_seconds() > 0
    for name, p in timed.parameters_of(module).items():
        assert torch.count_nonzero(p[~timed.mask[name]]) == 0


def test_the_benchmark_report_judges_the_targets_on_its_numbers() -> None:
    bench = runpy.run_path(str(BENCHMARK))
    args = bench["parser"]().parse_args(["--threads", "1", "--sparsity", "0.5", "--repeats", "3"])

    def ms(*values: float) -> dict:
        return {"seconds": [v / 1e3 for v in values], "weights_remaining": 0.5}

    steps = {  # (c) measured faster than (a): a ratio of the extra costs would be negative, and read as met
        ("dense", 0.0): {**ms(2.0, 4.0, 5.0), "weights_remaining": 1.0},
        ("ticket", 0.5): ms(2.2, 4.4, 5.2),
        ("ModelPruning", 0.5): ms(1.9, 3.8, 4.9),
        ("plain loop", 0.0): {**ms(1.5, 3.0, 4.0), "weights_remaining": 1.0},
        ("plain loop", 0.5): ms(1.5, 3.0, 4.0),
    }
    rewind = {
        "weights": 1000,
        "advance_seconds": [0.3, 1.2],
        "prune_seconds": [0.1, 0.2],
        "weights_remaining": [0.8, 0.64],
    }
    results = {
        1: {"load_before": (3.5, 2.25, 1.0), "steps": steps, "prune_rewind": rewind},
        "load_after": (4.0, 2.5, 1.125),
        "help": [0.6, 0.7, 0.8],
        "bad_value": [2.5, 2.5, 2.5],
    }
    text = bench["report"](args, results, "python scripts/benchmark.py")
    assert "1 thread(s): 3.50, 2.25, 1.00; after: 4.00, 2.50, 1.12" in text  # uptime's three load averages
    assert "| (b) ticket, 50% pruned | 50.0% | 4.40 (2.20–5.20) | 1.100 (1.040–1.100)x |" in text
    targets = text.split("**Targets**")[1]
    assert "| (b)/(a) <= 1.05 at 50% | 1 | 1.100 | **missed** |" in targets  # the median of the paired ratios
    assert "| (b)-(a) <= 0.2 x ((c)-(a)) at 50% | 1 | 0.200 ms vs -0.100 ms: (c) no slower than (a) | **missed** |" in (
        targets
    )
    assert "| ResNet-18 prune + rewind < 1 s | 1 | 1.200 s (slowest) | **missed** |" in targets
    assert "| `python train.py --help` < 5 s | - | 0.70 (0.60–0.80) s | met |" in targets
    assert "refused < 2 s | - | 2.50 (2.50–2.50) s | **missed** |" in targets
