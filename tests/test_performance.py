"""The speed-ups keep the method exact: a compiled network holds its masks under its own parameter names, and
logging only the steps a logger writes leaves the logged values unchanged."""

from __future__ import annotations

import csv
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
