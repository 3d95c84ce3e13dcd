"""Masks of other tools: a model pruned by ``torch.nn.utils.prune`` (live or saved) and open_lth's ``mask.pth`` become
our masks, or are refused in one line; ``scripts/export.py --format torch-prune`` writes what a reparametrised model
loads as is (Lightning's ``ModelPruning`` too). The round trip: import -> train a round -> export -> load into the
reparametrised model, masks equal."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import torch
from torch.nn.utils import prune as torch_prune

from lth.core.errors import ConfigError
from lth.core.interop import import_pruned, mask_from_state
from lth.core.masks import prunable_parameters
from lth.run.build import build_model
from tests.conftest import FAST, REPO, run_folders, run_main, train, typed

LAYERS = ("layers.0", "layers.1", "out")
export_cli = runpy.run_path(str(REPO / "scripts" / "export.py"))["main"]


def pruned_by_torch(model: torch.nn.Module, amount: float = 0.5) -> torch.nn.Module:
    """``model`` with the weights of LeNet-300-100's layers reparametrised by a global L1 prune of ``amount``."""
    modules = dict(model.named_modules())
    targets = [(modules[name], "weight") for name in LAYERS]
    torch_prune.global_unstructured(targets, pruning_method=torch_prune.L1Unstructured, amount=amount)
    return model


def reparametrised_like(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` reparametrised as torch.nn.utils.prune does, masks all ones (what loads a torch-prune state_dict)."""
    modules = dict(model.named_modules())
    for name in LAYERS:
        torch_prune.identity(modules[name], "weight")
    return model


def pruned_by_model_pruning(network: torch.nn.Module) -> torch.nn.Module:
    """``network`` after one epoch under Lightning's ``ModelPruning`` (weights only, left reparametrised)."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelPruning
    from torch.utils.data import DataLoader, TensorDataset

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = network

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(self.model(batch[0]), batch[1])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    pruning = ModelPruning(
        "l1_unstructured", parameter_names=["weight"], amount=0.3, make_pruning_permanent=False, verbose=0
    )
    data = DataLoader(TensorDataset(torch.randn(8, 1, 28, 28), torch.randint(10, (8,))), batch_size=8)
    options = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    pl.Trainer(max_epochs=1, callbacks=[pruning], accelerator="cpu", **options).fit(Module(), data)
    return network


def test_a_live_pruned_model_is_imported_and_never_skipped(make_cfg):
    model = pruned_by_torch(build_model(typed(make_cfg())))
    expected = {f"{n}.weight": dict(model.named_modules())[n].weight_mask.bool().clone() for n in LAYERS}
    effective = {n: dict(model.named_modules())[n].weight.detach().clone() for n in LAYERS}
    mask = import_pruned(model)
    assert mask.keys() == expected.keys() and all(torch.equal(mask[n], expected[n]) for n in mask)
    assert list(prunable_parameters(model)) == list(expected)  # plain parameters again, none skipped
    for name in LAYERS:
        assert torch.equal(dict(model.named_modules())[name].weight, effective[name])


def test_import_train_export_and_load_into_the_reparametrised_model(make_cfg, tmp_path: Path):
    original = pruned_by_torch(build_model(typed(make_cfg(seed := "seed=3"))))
    saved = tmp_path / "pruned_state.pt"
    torch.save(original.state_dict(), saved)
    imported = mask_from_state(torch.load(saved))
    assert abs(imported.weights_remaining() - 0.5) < 1e-3
    out = tmp_path / "out"
    args = [*FAST, seed, f"+model.weights={saved}", f"prune.mask_from={saved}", "prune.rounds=0"]
    result = run_main(*args, f"paths.output_dir={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = run_folders(out / "runs")
    rewind = torch.load(run / "rewind.pt")
    for name in LAYERS:  # the run starts from the imported weights under the imported mask
        module = dict(original.named_modules())[name]
        assert torch.equal(rewind[f"model.{name}.weight"], module.weight.detach()), name
    assert export_cli([str(run), "--round", "0", "--format", "torch-prune", "--out", str(tmp_path / "x")]) == 0
    loaded = reparametrised_like(build_model(typed(make_cfg())))
    loaded.load_state_dict(torch.load(tmp_path / "x" / "model.torch_prune.pt"), strict=True)
    plain = torch.load(tmp_path / "x" / "model.pt")
    for name in LAYERS:
        module = dict(loaded.named_modules())[name]
        assert torch.equal(module.weight_mask.bool(), imported[f"{name}.weight"]), name  # masks equal
        effective = module.weight_orig * module.weight_mask  # what its forward pre-hook computes
        assert torch.equal(effective, plain[f"{name}.weight"]), name  # and the weights the run trained
    by_lightning = pruned_by_model_pruning(
        build_model(typed(make_cfg()))
    )  # Lightning's ModelPruning, as it leaves a model
    by_lightning.load_state_dict(torch.load(tmp_path / "x" / "model.torch_prune.pt"), strict=True)
    for name in LAYERS:
        assert torch.equal(dict(by_lightning.named_modules())[name].weight_mask.bool(), imported[f"{name}.weight"])
    from safetensors.torch import load_file

    beside = load_file(str(tmp_path / "x" / "model.safetensors"))
    assert beside.keys() == plain.keys() and all(torch.equal(beside[k], plain[k]) for k in plain)


def test_open_lth_masks_are_ours_by_name_or_refused_naming_what_does_not_fit(make_cfg, tmp_path: Path):
    model = build_model(typed(make_cfg()))
    draws = torch.Generator().manual_seed(0)
    ints = {
        f"{n}.weight": (torch.rand(dict(model.named_modules())[n].weight.shape, generator=draws) < 0.7).int()
        for n in LAYERS
    }
    torch.save(ints, tmp_path / "mask.pth")  # open_lth writes 0/1 integers by parameter name
    run = Path(
        train(make_cfg(f"prune.mask_from={tmp_path / 'mask.pth'}", "prune.rounds=0"), tmp_path / "run")["run_dir"]
    )
    start = torch.load(run / "round_00" / "mask.pt")
    for name, values in ints.items():
        assert torch.equal(start[f"model.{name}"], values.bool()), name
    open_lth_names = {"fc_layers.0.weight": ints["layers.0.weight"], "fc.weight": ints["out.weight"]}
    torch.save(open_lth_names, tmp_path / "foreign.pth")
    with pytest.raises(
        ConfigError, match=r"not in the mask: model.layers.0.weight.*not prunable here: model.fc_layers"
    ):
        train(make_cfg(f"prune.mask_from={tmp_path / 'foreign.pth'}"), tmp_path / "refused")
    torch.save({"layers.0.weight": torch.full((300, 784), 0.5)}, tmp_path / "weights.pth")
    with pytest.raises(ConfigError, match=r"prune.mask_from: layers.0.weight is no mask"):
        train(make_cfg(f"prune.mask_from={tmp_path / 'weights.pth'}"), tmp_path / "refused")
