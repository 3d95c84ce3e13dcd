"""The ``trainer`` and ``callbacks`` config groups: Lightning's Trainer arguments and any Lightning callback, set
from ``train.py``, with the masks still exact and the clipping norm counting surviving weights only."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from lth.config.identity import run_id
from lth.data import TensorBatches
from lth.lightning.callback import LotteryTicket
from tests.conftest import FAST, run_folders, run_main
from tests.test_callback import Tiny, batches


class FitLog(pl.Callback):
    """A user's callback added by config: appends each fit's optimiser steps and clipping value to ``path``."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        line = {"steps": trainer.global_step, "clip": trainer.gradient_clip_val}
        line["accumulate"] = trainer.accumulate_grad_batches
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")


def test_clipping_accumulation_and_a_callback_by_config_keep_masks_exact(tmp_path: Path) -> None:
    log = tmp_path / "fits.jsonl"
    args = [
        *FAST,
        "prune.rounds=2",
        "paths.output_dir=out",
        "trainer.gradient_clip_val=0.5",
        "trainer.accumulate_grad_batches=2",
        "+callbacks.fits._target_=tests.test_trainer.FitLog",
        f"+callbacks.fits.path={log}",
    ]
    result = run_main(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    fits = [json.loads(line) for line in log.read_text().splitlines()]
    assert fits == [{"steps": 30, "clip": 0.5, "accumulate": 2}] * 3  # one fresh callback per round, every round
    (run,) = run_folders(tmp_path / "out" / "runs")
    for k in (1, 2):
        mask = torch.load(run / f"round_{k:02d}" / "mask.pt")
        weights = torch.load(run / f"round_{k:02d}" / "early_stop.pt")
        for name, m in mask.items():
            assert torch.count_nonzero(weights[name][~m]) == 0 and torch.count_nonzero(weights[name][m]) == m.sum()


def test_trainer_arguments_are_part_of_the_identity(make_cfg) -> None:
    default = run_id(make_cfg())
    assert run_id(make_cfg("trainer.gradient_clip_val=null")) == default  # unset: Lightning's default, no trace
    assert run_id(make_cfg("trainer.gradient_clip_val=1.0")) != default
    assert run_id(make_cfg("trainer.accumulate_grad_batches=2")) != default
    assert run_id(make_cfg("+trainer.benchmark=true")) != default


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+trainer.max_steps=5", "error: trainer.max_steps: is set by the IMP loop for every round; set train.steps"),
        ("+trainer.val_check_interval=3", "error: trainer.val_check_interval: is set by the IMP loop"),
        ("+trainer.devices=2", "error: trainer.devices: is set by the IMP loop for every round; set hardware.devices"),
        ("+trainer.nonsense=1", "error: trainer.nonsense: "),
        ("trainer.gradient_clip_val=-1", "error: trainer.gradient_clip_val: "),
        ("+callbacks.x.foo=1", "error: callbacks.x: needs a _target_"),
        (
            "+callbacks.ckpt._target_=pytorch_lightning.callbacks.ModelCheckpoint",
            "error: callbacks.ckpt: ModelCheckpoint is not allowed",
        ),
        (  # two pruners on the same weights
            "+callbacks.p._target_=pytorch_lightning.callbacks.ModelPruning",
            "error: callbacks.p: ModelPruning is not allowed: the run prunes the weights itself (prune.*)",
        ),
    ],
)
def test_what_the_loop_owns_is_refused_in_one_line(tmp_path: Path, override: str, message: str) -> None:
    result = run_main(*FAST, override, "paths.output_dir=out", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.csv"))


def test_the_clipping_norm_counts_the_surviving_weights_only() -> None:
    torch.manual_seed(0)
    model, ticket = Tiny(), LotteryTicket(rate=0.5, rewind="none")
    ticket.advance(model)  # half the weights pruned (and zeroed)
    x, y = next(iter(batches()))
    clip = 0.01  # far below the gradient's norm, so clipping acts

    expected = copy.deepcopy(model)
    expected.zero_grad()
    nn.functional.cross_entropy(expected(x), y).backward()
    params = dict(expected.named_parameters())
    for name, m in ticket.mask.items():
        params[name].grad.mul_(m)  # pruned weights take no part in the norm
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params.values()]))
    scale = min(1.0, clip / (float(norm) + 1e-6))
    want = {n: (p - 0.1 * scale * p.grad).detach() for n, p in params.items()}  # SGD lr 0.1, first step

    class OneBatch(Tiny):
        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trained = OneBatch()
    trained.load_state_dict(model.state_dict())
    trainer = pl.Trainer(
        max_steps=1,
        callbacks=[ticket],
        gradient_clip_val=clip,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(trained, train_dataloaders=TensorBatches(x, y, len(x)))  # exactly the batch above
    got = dict(trained.named_parameters())
    for name in want:
        m = ticket.mask.get(name)
        expect = want[name] * m if m is not None else want[name]
        assert torch.allclose(got[name], expect, atol=1e-7), name


def test_validation_counts_iterations_as_optimiser_steps_under_accumulation(make_cfg) -> None:
    from lth.config.validate import validate
    from lth.core.errors import ConfigError

    # 1000 training images at batch 60: 17 batches, 9 optimiser steps an epoch when two batches make one step
    steps = ("train.steps=1ep", "train.eval_every=1it", "trainer.accumulate_grad_batches=2")
    validate(make_cfg(*steps, "prune.rewind=8it"))
    with pytest.raises(ConfigError, match=r"^prune\.rewind: "):
        validate(make_cfg(*steps, "prune.rewind=12it"))
