"""Models from torchvision, timm and transformers, and a user's own nn.Module, through ``python train.py`` and export.

Every model is tiny and built locally (no download); the data is generated. ``model=torchvision`` gets 3-channel
images (torchvision's models take no other), ``model=timm`` and ``model=hf`` the 1-channel 28x28 ones, through the
library's own arguments (``in_chans``, ``num_channels``, ``image_size``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lth.state.artifacts import read_rounds
from lth.tools.export import ExportOptions, export, load_exported
from tests.conftest import FAST, run_folders, run_main, typed

RGB = ["dataset.channels=3", "dataset.mean=[0.5,0.5,0.5]", "dataset.std=[0.25,0.25,0.25]"]
SMALL = ["dataset.source.train_size=300", "dataset.source.test_size=100", "dataset.val_size=50", "train.steps=20it"]
LIBRARIES = {
    "torchvision": ["model=torchvision", "model.arch=squeezenet1_1", *RGB],
    "timm": [
        "model=timm",
        "model.arch=vit_tiny_patch16_224",
        "+model.patch_size=7",
        "+model.embed_dim=16",
        "+model.depth=1",
        "+model.num_heads=2",
    ],
    "hf": ["model=hf", "model.config.hidden_size=16", "model.config.intermediate_size=32", "model.config.patch_size=7"],
}


class TinyNet(nn.Module):
    """A user's own model: it takes the classes (not the channels or image size) and an argument of its own."""

    def __init__(self, num_classes: int, width: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def two_rounds(tmp_path: Path, *overrides: str) -> Path:
    """Run ``python train.py`` (in this process) for 2 rounds with ``overrides``; the run folder."""
    result = run_main(*FAST, *SMALL, f"paths.output_dir={tmp_path / 'out'}", *overrides, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_folders(tmp_path / "out" / "runs")
    return run


@pytest.mark.slow
@pytest.mark.parametrize("library", list(LIBRARIES))
def test_a_tiny_model_of_each_library_runs_two_rounds_and_exports(tmp_path: Path, library: str) -> None:
    pytest.importorskip(library if library != "hf" else "transformers")
    run = two_rounds(tmp_path, *LIBRARIES[library])
    rows = read_rounds(run / "rounds.csv")
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert rows[2]["weights_remaining"] == pytest.approx(0.64, abs=1e-3)
    report = export(run, ExportOptions(round_index=2, out_dir=tmp_path / "export"))
    assert report["test"]["matches_rounds_csv"], report["test"]  # the exported model computes what the run measured
    assert report["compressed"]["bit_identical"]
    assert "skipped" in report["shrunk"]  # not a plain chain: said, not guessed
    model = load_exported(tmp_path / "export")
    mask = torch.load(run / "round_02" / "mask.pt")
    state = model.state_dict()
    for name, keep in mask.items():
        assert bool((state[name.removeprefix("model.")][~keep] == 0).all()), name


@pytest.mark.slow
def test_hf_attention_projections_are_pruned_and_the_head_excluded_by_name(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    run = two_rounds(tmp_path, *LIBRARIES["hf"], "prune.rounds=1", "prune.exclude=[model.net.classifier]")
    mask = torch.load(run / "round_01" / "mask.pt")
    assert "model.net.classifier.weight" not in mask
    attention = [n for n in mask if ".attention." in n]
    assert len(attention) == 2 * 4, list(mask)  # q, k, v and output projections of both layers
    assert not any(n.endswith("bias") or "norm" in n for n in mask)


def test_a_users_own_module_with_its_own_arguments(tmp_path: Path) -> None:
    run = two_rounds(tmp_path, "model=custom", "model._target_=tests.test_ecosystem.TinyNet", "+model.width=6")
    mask = torch.load(run / "round_02" / "mask.pt")
    assert list(mask) == ["model.features.0.weight", "model.head.weight"]
    assert mask["model.features.0.weight"].shape == (6, 1, 3, 3)  # its own argument reached it
    config = json.loads(json.dumps(export(run, ExportOptions(round_index=2, out_dir=tmp_path / "export"))["test"]))
    assert config["matches_rounds_csv"]


@pytest.mark.slow
def test_lth_imports_and_runs_without_the_optional_libraries_and_names_the_missing_one() -> None:
    """In a fresh process: nothing of lth imports timm or safetensors before it is asked for."""
    import subprocess

    from tests.conftest import REPO, subprocess_env

    code = (
        "import sys\n"
        "for name in ('timm', 'safetensors'): sys.modules[name] = None\n"  # (torchmetrics imports transformers)
        "import lth, lth.models, lth.run.loop, lth.tools.export\n"
        "from lth.core.errors import ConfigError\n"
        "from lth.models import timm_model\n"
        "try:\n"
        "    timm_model('resnet18', 1, 28, 10)\n"
        "except ConfigError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    expected = "model: needs the timm package, which is not installed: pip install 'lth[ecosystem]'"
    assert result.stdout.strip() == expected


def test_a_missing_optional_library_is_named_with_the_extra_that_installs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The quick lane's check of the message above (here, with timm made unimportable in this process)."""
    from lth.core.errors import ConfigError
    from lth.models import timm_model

    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ConfigError) as error:
        timm_model("resnet18", 1, 28, 10)
    assert str(error.value) == "model: needs the timm package, which is not installed: pip install 'lth[ecosystem]'"


def test_a_transformers_folder_gives_the_config_and_the_pretrained_weights(make_cfg, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    from lth.run.build import build_model

    config = transformers.ViTConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=28,
        patch_size=7, num_channels=1, num_labels=5,
    )  # fmt: skip
    torch.manual_seed(3)
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path / "vit")  # 5 classes: another head
    saved = transformers.ViTForImageClassification.from_pretrained(tmp_path / "vit").state_dict()
    folder = str(tmp_path / "vit")
    model = build_model(typed(make_cfg("model=hf", f"model.config={folder}", f"model.weights={folder}")))
    state = model.state_dict()
    assert state["net.classifier.weight"].shape == (10, 16)  # the dataset's 10 classes: a fresh head
    body = [k for k in saved if not k.startswith("classifier.")]
    assert body and all(torch.equal(state[f"net.{k}"], saved[k]) for k in body)
