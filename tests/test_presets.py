"""Every experiment preset composes with its source's settings and runs a 2-round smoke run, shrunk by overrides.

The table pins what each preset's header cites: the paper's or open_lth's optimiser, lengths, pruning scope and
rates, which layers are left unpruned, and the BatchNorm initialisation.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from lth.core.steps import Step
from lth.run.build import build_model
from lth.state.artifacts import round_dir
from tests.conftest import train, typed
from tests.test_data import make_cifar10, make_idx_dataset

OPEN_LTH_EPOCH = 391  # iterations of an open_lth epoch: 50K CIFAR-10 images at batch 128, the last batch partial
OPEN_LTH_NORM = {"dataset.mean": [0.485, 0.456, 0.406], "dataset.std": [0.229, 0.224, 0.225]}
OPEN_LTH = {  # open_lth's cifar_vgg_* and cifar_resnet_* defaults, lengths in iterations of its 50K-image epochs
    "train.steps": f"{160 * OPEN_LTH_EPOCH}it",
    "train.eval_every": f"{OPEN_LTH_EPOCH}it",
    "train.batch_size": 128,
    "optim.optimizer.lr": 0.1,
    "optim.optimizer.momentum": 0.9,
    "optim.optimizer.weight_decay": 1e-4,
    "optim.schedule.name": "step",
    "optim.schedule.milestones": [f"{80 * OPEN_LTH_EPOCH}it", f"{120 * OPEN_LTH_EPOCH}it"],
    "optim.schedule.gamma": 0.1,
    "optim.schedule.warmup": "0it",
    "prune.scope": "global",
    "prune.rate": 0.2,
    "model.batchnorm_init": "uniform",
    **OPEN_LTH_NORM,
}
FC2019_LAYERWISE = {"train.batch_size": 60, "train.eval_every": "100it", "prune.scope": "layer", "prune.rate": 0.2}

PRESETS = {
    # preset: (expected settings, shrinking overrides)
    "lenet_mnist": (
        {
            **FC2019_LAYERWISE,
            "model.name": "lenet300",
            "train.steps": "50000it",
            "optim.optimizer.lr": 1.2e-3,
            "prune.layer_rates": {"model.out": 0.1},
        },
        [],
    ),
    "conv2_cifar10": (
        {
            **FC2019_LAYERWISE,
            "train.steps": "20000it",
            "optim.optimizer.lr": 2e-4,
            "prune.layer_rates": {"model.convs.*": 0.1, "model.out": 0.1},
            "dataset.augment": None,
        },
        [],
    ),
    "conv4_cifar10": (
        {
            **FC2019_LAYERWISE,
            "train.steps": "25000it",
            "optim.optimizer.lr": 3e-4,
            "prune.layer_rates": {"model.convs.*": 0.1, "model.out": 0.1},
        },
        [],
    ),
    "conv6_cifar10": (
        {
            **FC2019_LAYERWISE,
            "train.steps": "30000it",
            "optim.optimizer.lr": 3e-4,
            "prune.layer_rates": {"model.convs.*": 0.15, "model.out": 0.1},
        },
        [],
    ),
    "vgg16_cifar10": (
        {**OPEN_LTH, "model.depth": 16, "prune.exclude": ["model.out"], "prune.rewind": "1000it"},
        ["model.depth=11"],
    ),
    "vgg19_cifar10": (
        {
            "model.depth": 19,
            "train.steps": "112000it",
            "train.batch_size": 64,
            "optim.optimizer.lr": 0.1,
            "optim.optimizer.momentum": 0.9,
            "optim.schedule.milestones": ["56000it", "84000it"],
            "optim.schedule.warmup": "10000it",
            "prune.scope": "global",
            "prune.rate": 0.2,
            "prune.exclude": ["model.out"],
            "prune.rewind": "init",
            "model.batchnorm_init": None,
        },
        ["model.depth=11"],
    ),
    "resnet20_cifar10": (
        {**OPEN_LTH, "model.depth": 20, "model.shortcut": "B", "prune.exclude": [], "prune.rewind": "500it"},
        [],
    ),
    "resnet20_fc2019_cifar10": (
        {
            "model.name": "resnet20",
            "model.shortcut": "B",
            "model.batchnorm_init": None,
            "train.steps": "30000it",
            "train.batch_size": 128,
            "optim.optimizer.lr": 0.03,
            "optim.optimizer.momentum": 0.9,
            "optim.optimizer.weight_decay": 1e-4,
            "optim.schedule.name": "step",
            "optim.schedule.milestones": ["20000it", "25000it"],
            "optim.schedule.gamma": 0.1,
            "optim.schedule.warmup": "20000it",
            "prune.scope": "global",
            "prune.rate": 0.2,
            "prune.exclude": ["model.out"],
            "prune.rewind": "init",
        },
        [],
    ),
    "resnet18_cifar10": ({"train.steps": "100ep", "optim.schedule.name": "cosine"}, ["model.width=0.125"]),
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_cifar10(root, per_batch=40, n_test=40)
    make_idx_dataset(root, "MNIST", n_train=200, n_test=40)
    return root


def test_every_preset_is_in_the_table():
    presets = {p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "experiment").glob("*.yaml")}
    assert presets == set(PRESETS)


def batchnorm_weights(model: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """The weight of every BatchNorm layer of ``model``, by parameter name (with ``prefix``)."""
    return {f"{prefix}{n}.weight": m.weight for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}


QUICK_PRESETS = ("lenet_mnist", "resnet20_cifar10")  # a fully connected and a residual one; the rest are slow


@pytest.mark.parametrize(
    "preset", [p if p in QUICK_PRESETS else pytest.param(p, marks=pytest.mark.slow) for p in sorted(PRESETS)]
)
def test_preset_has_the_paper_settings_and_runs(make_cfg, tmp_path: Path, data_root: Path, preset: str) -> None:
    expected, shrink = PRESETS[preset]
    paper = make_cfg(f"experiment={preset}", fast=False)
    for key, value in expected.items():
        got = OmegaConf.select(paper, key)
        got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
        assert got == value, key
    Step.parse(paper.train.steps)
    cfg = make_cfg(
        f"experiment={preset}",
        *shrink,
        f"paths.data_dir={data_root}",
        "dataset.source.download=false",
        "dataset.val_size=20",
        "train.steps=4it",
        "train.eval_every=2it",
        "train.batch_size=8",
        "prune.rounds=1",
        "logger=none",
        "train.checkpoint_every=null",
        "optim.schedule.milestones=[]",
        "optim.schedule.warmup=0it",
        "prune.rewind=init",
        fast=False,
    )
    run_dir = tmp_path / "run"
    rows = train(cfg, run_dir=run_dir)["rounds"]
    assert [r["round"] for r in rows] == [0, 1]
    assert rows[1]["weights_remaining"] < 0.9
    # the output layer is pruned unless the source leaves it out, and then it is neither pruned nor counted
    layers = json.loads((round_dir(run_dir, 1) / "sparsity.json").read_text())["layers"]
    assert ("model.out.weight" in layers) == ("model.out" not in (paper.prune.exclude or [])), preset
    # BatchNorm weights as the source initialises them: drawn from U[0, 1) for open_lth's, else all 1
    bn = batchnorm_weights(build_model(typed(cfg)), prefix="model.")
    if bn:
        rewind = torch.load(run_dir / "rewind.pt", map_location="cpu", weights_only=True)
        for name, weight in bn.items():
            assert torch.equal(rewind[name], weight.detach()), name  # the run drew what build_model draws
        weights = torch.cat([w.detach().flatten() for w in bn.values()])
        if paper.model.get("batchnorm_init") == "uniform":
            assert 0 <= weights.min() and weights.max() < 1 and weights.std() > 0.1
        else:
            assert torch.equal(weights, torch.ones_like(weights))


@pytest.mark.parametrize("preset", ["vgg16_cifar10", "resnet20_cifar10"])
def test_open_lth_lengths_are_its_iterations_not_our_epochs(make_cfg, preset: str) -> None:
    """160ep on our 45K training split would be 56,320 iterations; open_lth's 160ep on 50K is 62,560."""
    cfg = make_cfg(f"experiment={preset}", fast=False)
    lengths = [cfg.train.steps, cfg.train.eval_every, *cfg.optim.schedule.milestones]
    assert all(Step.parse(s).epochs == 0 for s in lengths), lengths
    assert [Step.parse(s).to_iterations(OPEN_LTH_EPOCH) for s in lengths] == [62_560, 391, 31_280, 46_920]
