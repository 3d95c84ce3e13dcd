"""Every experiment preset composes with its paper settings and runs a 2-round smoke run, shrunk by overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from lth.run import train
from lth.steps import Step
from tests.test_data import make_cifar10

PRESETS = {
    # preset: (expected settings, shrinking overrides)
    "lenet_mnist": ({"train.steps": "50000it", "train.batch_size": 60, "optim.optimizer.lr": 1.2e-3}, []),
    "conv2_cifar10": ({"train.steps": "20000it", "optim.optimizer.lr": 2e-4, "prune.scope": "layer"}, []),
    "conv4_cifar10": ({"train.steps": "25000it", "optim.optimizer.lr": 3e-4}, []),
    "conv6_cifar10": ({"train.steps": "30000it", "prune.rate": 0.2}, []),
    "vgg16_cifar10": ({"train.steps": "160ep", "prune.rewind": "1000it"}, ["model.depth=11"]),
    "vgg19_cifar10": ({"train.steps": "112000it", "optim.schedule.warmup": "10000it"}, ["model.depth=11"]),
    "resnet20_cifar10": ({"train.steps": "160ep", "prune.rewind": "500it", "optim.optimizer.weight_decay": 1e-4}, []),
    "resnet18_cifar10": ({"train.steps": "100ep", "optim.schedule.name": "cosine"}, ["model.width=0.125"]),
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_cifar10(root, per_batch=40, n_test=40)
    from tests.test_data import make_idx_dataset

    make_idx_dataset(root, "MNIST", n_train=200, n_test=40)
    return root


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_has_the_paper_settings_and_runs(make_cfg, tmp_path: Path, data_root: Path, preset: str) -> None:
    from omegaconf import OmegaConf

    expected, shrink = PRESETS[preset]
    paper = make_cfg(f"experiment={preset}", fast=False)
    for key, value in expected.items():
        assert OmegaConf.select(paper, key) == value, key
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
    rows = train(cfg, run_dir=tmp_path / "run")["rounds"]
    assert [r["round"] for r in rows] == [0, 1]
    assert rows[1]["weights_remaining"] < 0.9
    Step.parse(paper.train.steps)
    if preset.startswith("conv"):
        assert paper.prune.layer_rates["model.out"] == 0.1
