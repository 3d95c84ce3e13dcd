"""The LotteryTicket callback in a plain Lightning project: masks hold under any optimiser, rewinding is exact,
and its state survives a checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from lth.core.steps import Step
from lth.data import TensorBatches
from lth.lightning.callback import LotteryTicket


class Tiny(pl.LightningModule):
    """A small conv net with BatchNorm (buffers to rewind) and a configurable optimiser."""

    def __init__(self, optimizer: str = "sgd") -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)
        )
        self.optimizer = optimizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(self.parameters(), lr=1e-2, weight_decay=1e-2)
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)


def batches(seed: int = 0) -> TensorBatches:
    g = torch.Generator().manual_seed(seed)
    return TensorBatches(torch.randn(64, 1, 8, 8, generator=g), torch.randint(3, (64,), generator=g), 16, shuffle=True)


def fit(model: pl.LightningModule, ticket: LotteryTicket, steps: int, *others: pl.Callback) -> pl.Trainer:
    trainer = pl.Trainer(
        max_steps=steps,
        callbacks=[ticket, *others],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(model, train_dataloaders=batches())
    return trainer


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_pruned_weights_stay_exactly_zero_under_momentum_and_weight_decay(optimizer: str) -> None:
    pl.seed_everything(0)
    model, ticket = Tiny(optimizer), LotteryTicket(rate=0.5)
    fit(model, ticket, 8)
    ticket.advance(model)
    fit(model, ticket, 12)  # momentum/Adam state and weight decay push on the pruned weights every step
    params = ticket.parameters_of(model)
    for name, p in params.items():
        assert torch.count_nonzero(p[~ticket.mask[name]]) == 0
        assert torch.count_nonzero(p[ticket.mask[name]]) == int(ticket.mask[name].sum())
    assert ticket.mask.weights_remaining() == pytest.approx(0.5, abs=1e-3)


def test_rewinding_restores_initial_weights_and_buffers_bit_for_bit() -> None:
    pl.seed_everything(0)
    model, ticket = Tiny(), LotteryTicket(rate=0.3)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, ticket, 10)
    assert not torch.equal(model.state_dict()["net.1.running_mean"], initial["net.1.running_mean"])
    ticket.advance(model)
    state = model.state_dict()
    for key, value in initial.items():
        name = key if key in ticket.mask else None
        expected = value * ticket.mask[name] if name else value
        assert torch.equal(state[key], expected), key
    # the rewind point is a copy, not an alias of the live weights
    assert ticket.rewind_state["net.0.weight"].data_ptr() != model.net[0].weight.data_ptr()


def test_rewind_to_a_step_restores_the_weights_saved_at_that_step() -> None:
    pl.seed_everything(0)
    model, ticket = Tiny(), LotteryTicket(rate=0.3, rewind="5it")
    seen = {}

    class Spy(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: ANN001
            if trainer.global_step == 5:
                seen.update({k: v.clone() for k, v in pl_module.state_dict().items()})

    fit(model, ticket, 10, Spy())
    ticket.advance(model)
    assert ticket.steps_this_round(10) == 5
    for key, value in seen.items():
        expected = value * ticket.mask[key] if key in ticket.mask else value
        assert torch.equal(model.state_dict()[key], expected), key


def test_state_round_trips_through_a_lightning_checkpoint(tmp_path: Path) -> None:
    pl.seed_everything(0)
    model, ticket = Tiny(), LotteryTicket(rate=0.4)
    fit(model, ticket, 6)
    ticket.advance(model)
    trainer = fit(model, ticket, 4)
    path = tmp_path / "round1.ckpt"
    trainer.save_checkpoint(path)

    restored = LotteryTicket(rate=0.4)
    checkpoint = torch.load(path, weights_only=False)
    restored.load_state_dict(next(v for k, v in checkpoint["callbacks"].items() if "LotteryTicket" in k))
    assert restored.round_index == 1
    assert all(torch.equal(restored.mask[n], ticket.mask[n].cpu()) for n in ticket.mask)
    assert all(torch.equal(restored.rewind_state[k], ticket.rewind_state[k]) for k in ticket.rewind_state)


def test_steps_this_round_and_schedule_offsets_per_rewind_mode() -> None:
    for rewind, offset in [("init", 0), ("lr", 0), ("none", 100), (Step(0, 30), 30)]:
        ticket = LotteryTicket(rewind=rewind)
        ticket.round0_steps, ticket.round_index, ticket.iterations_per_epoch = 100, 1, 10
        assert ticket.schedule_offset() == offset
        assert ticket.steps_this_round(100) == (70 if isinstance(rewind, Step) else 100)


def test_the_readme_example_runs_verbatim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The README's example (a real LightningModule and LightningDataModule), extracted and run as written."""
    import re

    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    (code,) = [block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "LotteryTicket(" in block]
    monkeypatch.chdir(tmp_path)  # anything Lightning writes lands here, not in the repository
    pl.seed_everything(0)
    scope: dict = {"__name__": "readme"}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    ticket, model = scope["ticket"], scope["model"]
    assert ticket.round_index == 3
    assert capsys.readouterr().out.strip().endswith("51.2% weights remaining")
    for name, p in ticket.parameters_of(model).items():
        assert torch.count_nonzero(p[~ticket.mask[name]]) == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"rate": 5}, "rate=5: allowed a number in (0, 1)"),
        ({"scope": "local"}, "scope='local': allowed 'global' or 'layer'"),
        ({"rewind": "sometimes"}, "rewind='sometimes': allowed 'init', 'lr', 'none' or a Step"),
        ({"target_sparsity": 0.9}, "rounds=None: allowed an int >= 1 with target_sparsity"),
        ({"layer_rates": {"out": 1.5}}, "layer_rates['out']=1.5: allowed a number in (0, 1)"),
        ({"exclude": "out"}, "exclude='out': allowed a list of name patterns"),
    ],
)
def test_bad_arguments_are_value_errors_naming_the_argument(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        LotteryTicket(**arguments)
    assert str(error.value).startswith(message) and "prune." not in str(error.value)


def test_a_trainer_reused_for_the_next_round_is_refused() -> None:
    pl.seed_everything(0)
    model, ticket = Tiny(), LotteryTicket(rate=0.5)
    trainer = fit(model, ticket, 4)
    ticket.advance(model)
    with pytest.raises(RuntimeError, match="round 1 is fit with the Trainer of round 0.*build a new Trainer per round"):
        trainer.fit(model, train_dataloaders=batches())


def test_max_epochs_works_for_rewinds_from_the_start_and_a_step_rewind_is_refused_before_round_0() -> None:
    def fit_epochs(model: pl.LightningModule, ticket: LotteryTicket) -> None:
        options = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
        pl.Trainer(max_epochs=1, callbacks=[ticket], accelerator="cpu", **options).fit(model, batches())

    pl.seed_everything(0)
    model, ticket = Tiny(), LotteryTicket(rate=0.5, rewind="none")
    fit_epochs(model, ticket)
    assert ticket.round0_steps == 4  # 64 samples in batches of 16: the epoch's steps, not -1
    ticket.advance(model)
    fit_epochs(model, ticket)
    model, ticket = Tiny(), LotteryTicket(rate=0.5, rewind="2it")
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    refused = r"rewind=2it\): every round after round 0 trains from iteration 2.*max_steps"
    with pytest.raises(RuntimeError, match=refused):
        fit_epochs(model, ticket)  # refused before round 0 trains, not after it
    assert all(torch.equal(v, initial[k]) for k, v in model.state_dict().items())
    assert ticket.round0_steps is None and ticket.rewind_state is None


def test_channel_granularity_traces_the_modules_example_input_array() -> None:
    pl.seed_everything(0)
    model = Tiny()
    model.example_input_array = torch.zeros(1, 1, 8, 8)  # what Lightning modules declare for their summaries
    ticket = LotteryTicket(rate=0.5, granularity="channel")
    fit(model, ticket, 4)
    ticket.advance(model)
    kept = ticket.mask["net.0.weight"].flatten(1).all(1)
    assert bool((ticket.mask["net.0.weight"].flatten(1).any(1) == kept).all())  # whole output channels
    assert int(kept.sum()) == 2  # half of the 4 channels
    assert torch.count_nonzero(model.net[1].weight[~kept]) == 0  # their BatchNorm entries go with them
    with pytest.raises(ValueError, match=r"example_input=None: allowed an input batch.*example_input_array"):
        fit(Tiny(), LotteryTicket(rate=0.5, granularity="channel"), 4)
