"""Masks of other tools: a model pruned by ``torch.nn.utils.prune`` (live or saved) and open_lth's ``mask.pth`` become
our masks, or are refused in one line; ``scripts/export.py --format torch-prune`` writes what a reparametrised model
loads as is (Lightning's ``ModelPruning`` too). The round trip: import -> train a round -> export -> load into the
reparametrised model, masks equal."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, ModelPruning
from torch.nn.utils import prune as torch_prune
from torch.utils.data import DataLoader, TensorDataset

from lth.core.errors import ConfigError
from lth.core.interop import import_pruned, load_torch_prune, mask_from_state
from lth.core.masks import prunable_parameters
from lth.run.build import build_model
from tests.conftest import FAST, REPO, run_folders, run_main, train, typed

LAYERS = ("layers.0", "layers.1", "out")
WEIGHTS_ONLY = {"pruning_fn": "l1_unstructured", "parameter_names": ["weight"], "verbose": 0}
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


def fit_with_model_pruning(
    network: torch.nn.Module, pruning: ModelPruning, checkpoint: Path | None = None
) -> dict[str, torch.Tensor]:
    """One epoch of ``network`` (a LightningModule's ``self.model``) under Lightning's ``ModelPruning`` ``pruning``;
    the masks it held when training ended (before it made pruning permanent, where it does), by tensor name.
    ``checkpoint``: a ``ModelCheckpoint`` writes the epoch's Lightning checkpoint there, as a user's fit does."""

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = network

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(self.model(batch[0]), batch[1])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    masks: dict[str, torch.Tensor] = {}

    class Masks(pl.Callback):  # runs before ModelPruning's own on_train_end
        def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            masks.update({n[:-5]: b.bool().clone() for n, b in network.named_buffers() if n.endswith("_mask")})

    callbacks: list[pl.Callback] = [Masks(), pruning]
    if checkpoint is not None:
        callbacks.append(ModelCheckpoint(dirpath=checkpoint.parent, filename=checkpoint.stem))
    data = DataLoader(TensorDataset(torch.randn(8, 1, 28, 28), torch.randint(10, (8,))), batch_size=8)
    options = {"logger": False, "enable_checkpointing": checkpoint is not None, "enable_progress_bar": False}
    pl.Trainer(max_epochs=1, callbacks=callbacks, accelerator="cpu", enable_model_summary=False, **options).fit(
        Module(), data
    )
    return masks


def pruned_by_model_pruning(network: torch.nn.Module) -> torch.nn.Module:
    """``network`` after one epoch under Lightning's ``ModelPruning`` (weights only, left reparametrised)."""
    fit_with_model_pruning(network, ModelPruning(**WEIGHTS_ONLY, amount=0.3, make_pruning_permanent=False))
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


@pytest.mark.slow
def test_the_torch_prune_export_loads_into_a_plain_module_and_model_pruning_prunes_on(make_cfg, tmp_path: Path):
    result = run_main(*FAST, "prune.rounds=1", f"paths.output_dir={tmp_path / 'out'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = run_folders(tmp_path / "out" / "runs")
    assert export_cli([str(run), "--round", "1", "--format", "torch-prune", "--out", str(tmp_path / "x")]) == 0
    ticket = torch.load(run / "round_01" / "mask.pt")
    network = build_model(typed(make_cfg()))  # a plain module, as a user of ModelPruning builds it
    pairs = load_torch_prune(network, torch.load(tmp_path / "x" / "model.torch_prune.pt"))
    modules = dict(network.named_modules())
    assert pairs == [(modules[name], "weight") for name in LAYERS]
    plain = torch.load(tmp_path / "x" / "model.pt")
    for name in LAYERS:  # the ticket's weights under its mask
        assert torch.equal(modules[name].weight, plain[f"{name}.weight"]), name
        assert torch.equal(modules[name].weight_mask.bool(), ticket[f"model.{name}.weight"]), name
    masks = fit_with_model_pruning(network, ModelPruning("l1_unstructured", parameters_to_prune=pairs, verbose=0))
    remaining = sum(int(ticket[f"model.{name}.weight"].sum()) for name in LAYERS)
    assert sum(int(m.sum()) for m in masks.values()) == remaining - round(0.5 * remaining)  # half of what was left
    for name in LAYERS:
        assert not masks[f"{name}.weight"][~ticket[f"model.{name}.weight"]].any(), name  # the ticket's pruned stay
        weight = modules[name].weight  # made permanent by ModelPruning: a plain parameter, zero where pruned
        assert isinstance(weight, torch.nn.Parameter) and not weight[~masks[f"{name}.weight"]].any(), name


def model_pruning_files(make_cfg, folder: Path, permanent: bool) -> dict[str, torch.Tensor]:
    """A ``ModelPruning`` fit of the run's network as its users save it: its Lightning checkpoint (``pruned.ckpt``)
    and the network's ``state_dict`` (``pruned.pt``) in ``folder``; the masks it found, by tensor name."""
    network = build_model(typed(make_cfg("seed=5")))  # ModelPruning's defaults: weights and biases pruned
    pruning = ModelPruning("l1_unstructured", amount=0.6, make_pruning_permanent=permanent, verbose=0)
    masks = fit_with_model_pruning(network, pruning, checkpoint=folder / "pruned.ckpt")
    torch.save(network.state_dict(), folder / "pruned.pt")
    return masks


def start_mask_of(folder: Path, *overrides: str) -> dict[str, torch.Tensor]:
    """The mask round 0 of ``train.py`` with ``overrides`` starts from, run in ``folder``."""
    folder.mkdir(exist_ok=True)
    result = run_main(*FAST, "prune.rounds=0", *overrides, "paths.output_dir=out", cwd=folder)
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = run_folders(folder / "out" / "runs")
    return torch.load(run / "round_00" / "mask.pt")


def test_a_model_pruning_checkpoint_made_permanent_is_a_mask_when_its_zeros_are_asked_for(make_cfg, tmp_path: Path):
    masks = model_pruning_files(make_cfg, tmp_path, permanent=True)
    assert abs(sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values()) - 0.4) < 1e-3
    refused = run_main(*FAST, f"prune.mask_from={tmp_path / 'pruned.pt'}", "paths.output_dir=out", cwd=tmp_path)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert refused.stderr.startswith("error: prune.mask_from: ") and "is no mask" in refused.stderr
    assert "prune.mask_from_zeros=true" in refused.stderr  # the way out, named
    for file in ("pruned.ckpt", "pruned.pt"):
        start = start_mask_of(tmp_path / file[7:], f"prune.mask_from={tmp_path / file}", "prune.mask_from_zeros=true")
        assert start.keys() == {f"model.{name}.weight" for name in LAYERS}, file  # biases and the rest left out
        for name in LAYERS:
            assert torch.equal(start[f"model.{name}.weight"], masks[f"{name}.weight"]), (file, name)


def test_a_model_pruning_checkpoint_still_reparametrised_is_a_mask(make_cfg, tmp_path: Path):
    masks = model_pruning_files(make_cfg, tmp_path, permanent=False)
    assert set(masks) == {f"{name}.{kind}" for name in LAYERS for kind in ("weight", "bias")}
    mask_from = f"prune.mask_from={tmp_path / 'pruned.ckpt'}"  # weight_orig + weight_mask, bias_orig + bias_mask
    refused = run_main(*FAST, mask_from, "paths.output_dir=out", cwd=tmp_path)  # biases are not pruned here
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "not prunable here: model.layers.0.bias, model.layers.1.bias" in refused.stderr
    assert refused.stderr.strip().endswith("prune.mask_unmatched=dense starts those dense")  # the way out
    start = start_mask_of(tmp_path / "run", mask_from, "prune.mask_unmatched=dense")
    assert start.keys() == {f"model.{name}.weight" for name in LAYERS}
    for name in LAYERS:
        assert torch.equal(start[f"model.{name}.weight"], masks[f"{name}.weight"]), name
