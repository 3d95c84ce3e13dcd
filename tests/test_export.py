"""Shipping a ticket: what the exported files hold, that they compute what the run measured, and bad files."""

from __future__ import annotations

import errno
import os
import runpy
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch import nn

from lth.config.identity import register_resolvers
from lth.models import CifarResNet, ConvNet, LeNet5, LeNet300100, ViT
from lth.state.artifacts import read_rounds
from lth.state.locks import locked
from lth.tools.export import (
    MAGIC,
    CsrLinear,
    ExportError,
    ExportOptions,
    NotShrinkable,
    as_chain,
    choose_round,
    compress,
    correct,
    decompress,
    encode_tensor,
    encoded_sizes,
    export,
    load_exported,
    load_shrunk,
    pick_paths,
    predict,
    read_test_split,
    shrink,
)
from tests.conftest import FAST, REPO, subprocess_env, train, typed

CONV2 = [  # Conv-2 on CIFAR-shaped images; narrower fc layers and less data keep the run to seconds
    "model=conv2",
    "model.hidden=[64,64]",
    "dataset.channels=3",
    "dataset.image_size=32",
    "dataset.mean=[0.5,0.5,0.5]",
    "dataset.std=[0.25,0.25,0.25]",
    "dataset.source.train_size=300",
    "dataset.source.test_size=100",
    "dataset.val_size=50",
    "train.steps=4it",
    "train.eval_every=2it",
]
STEEP = ["prune.scope=layer", "prune.rate=0.8"]  # two rounds to 4%: the output layer keeps 40 of 10 x 100 weights
cli = runpy.run_path(str(REPO / "scripts" / "export.py"))["main"]  # scripts/export.py's main, run in this process


def compose_cfg(output_dir: Path, *overrides: str) -> DictConfig:
    """The real config with the FAST overrides (as tests/conftest.py's make_cfg, for module-scoped runs)."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=[*FAST, f"paths.output_dir={output_dir}", "hardware.threads=1", *overrides])


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished LeNet-300-100 run on synthetic data: rounds 0, 1, 2 at 100%, 20%, 4% weights remaining."""
    root = tmp_path_factory.mktemp("lenet")
    return Path(train(compose_cfg(root, *STEEP), run_dir=root / "run")["run_dir"])


@pytest.fixture(scope="module")
def lenet_export(lenet_run: Path) -> dict:
    """The export of the LeNet run's sparsest round."""
    return export(lenet_run, ExportOptions(round_index=2))


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished Conv-2 run on CIFAR-shaped synthetic data, pruned layer-wise to 4% in two rounds."""
    root = tmp_path_factory.mktemp("conv2")
    return Path(train(compose_cfg(root, *CONV2, *STEEP), run_dir=root / "run")["run_dir"])


def test_the_sparse_model_loads_strictly_into_the_plain_class_with_pruned_weights_zero(
    lenet_run: Path, lenet_export: dict
) -> None:
    out = Path(lenet_export["out_dir"])
    assert out == lenet_run / "export" / "round_02"
    state = torch.load(out / "model.pt")
    assert not any(k.startswith("model.") or k.endswith(("_orig", "_mask")) for k in state)
    LeNet300100(in_channels=1, image_size=28, num_classes=10).load_state_dict(state, strict=True)
    mask = torch.load(lenet_run / "round_02" / "mask.pt")
    trained = torch.load(lenet_run / "round_02" / "early_stop.pt")
    for name, keep in mask.items():
        plain = name.removeprefix("model.")
        assert torch.equal(state[plain][keep], trained[name][keep])
        assert (state[plain][~keep] == 0).all() and not torch.signbit(state[plain][~keep]).any()
    assert isinstance(load_exported(out), LeNet300100)


def test_the_ticket_is_the_mask_and_the_masked_rewind_weights(lenet_run: Path, lenet_export: dict) -> None:
    ticket = torch.load(Path(lenet_export["out_dir"]) / "ticket.pt")
    mask = torch.load(lenet_run / "round_02" / "mask.pt")
    rewind = torch.load(lenet_run / "rewind.pt")
    assert ticket["round"] == 2 and ticket["rewind"] == "init"
    assert ticket["mask"].keys() == {k.removeprefix("model.") for k in mask}
    for name, keep in mask.items():
        plain = name.removeprefix("model.")
        assert torch.equal(ticket["mask"][plain], keep)
        assert torch.equal(ticket["weights"][plain], rewind[name] * keep)
    model = LeNet300100(1, 28, 10)
    model.load_state_dict(ticket["weights"], strict=True)  # ready to retrain elsewhere


def test_the_reported_accuracy_is_a_fresh_evaluation_and_matches_rounds_csv(
    lenet_run: Path, lenet_export: dict
) -> None:
    out = Path(lenet_export["out_dir"])
    x, y = read_test_split(typed(compose_cfg(lenet_run.parent, *STEEP)))
    fresh = correct(load_exported(out), x, y) / len(y)
    recorded = read_rounds(lenet_run / "rounds.csv")[2]["test_acc"]
    assert lenet_export["test"]["acc"] == fresh
    assert lenet_export["test"]["matches_rounds_csv"] and fresh == pytest.approx(recorded, abs=0.5 / len(y))
    assert lenet_export["compressed"]["test_acc"] == fresh


def test_the_compressed_file_round_trips_bit_for_bit(lenet_export: dict) -> None:
    out = Path(lenet_export["out_dir"])
    state, restored = torch.load(out / "model.pt"), decompress(out / "compressed.lthz")
    assert restored.keys() == state.keys()
    for name, tensor in state.items():
        assert restored[name].dtype == tensor.dtype == torch.float32
        assert torch.equal(restored[name].view(torch.int32), tensor.view(torch.int32))
    packed = lenet_export["compressed"]
    assert packed["bit_identical"] and packed["file_bytes"] == (out / "compressed.lthz").stat().st_size
    assert packed["file_bytes"] < packed["dense_bytes"] / 5  # 4% of the weights remain
    assert packed["tensors"]["layers.0.weight"]["encoding"] == "bitmap"


def test_fp16_values_round_trip_to_their_fp16_value(lenet_run: Path, tmp_path: Path) -> None:
    report = export(lenet_run, ExportOptions(round_index=1, out_dir=tmp_path / "fp16", fp16=True))
    state, restored = torch.load(tmp_path / "fp16" / "model.pt"), decompress(tmp_path / "fp16" / "compressed.lthz")
    assert all(torch.equal(restored[k], v.half().float()) for k, v in state.items())
    assert report["compressed"]["fp16"] and not report["compressed"]["bit_identical"]


def test_both_encodings_cost_exactly_the_bytes_the_arithmetic_gives() -> None:
    weights = torch.randn(10, 30)
    keep = torch.zeros(10, 30, dtype=torch.bool)
    keep.view(-1)[torch.tensor([0, 7, 8, 9, 100, 255, 299])] = True
    # 300 entries: indices need 2 bytes; the bitmap is ceil(300 / 8) = 38 bytes
    assert encoded_sizes(300, 7, 4) == {"dense": 1200, "bitmap": 38 + 7 * 4, "index": 7 * (2 + 4)}
    assert encoded_sizes(300, 100, 4) == {"dense": 1200, "bitmap": 38 + 400, "index": 600}
    assert encoded_sizes(256, 10, 2)["index"] == 10 * (1 + 2) and encoded_sizes(70_000, 10, 4)["index"] == 80
    entry, payload = encode_tensor(weights, keep)
    assert (entry["encoding"], len(payload)) == ("index", 42)
    dense_keep = torch.rand(10, 30, generator=torch.Generator().manual_seed(0)) < 0.5
    entry, payload = encode_tensor(weights, dense_keep)
    assert (entry["encoding"], len(payload)) == ("bitmap", 38 + 4 * int(dense_keep.sum()))
    blob, entries = compress({"w": weights, "b": torch.ones(10)}, {"w": keep})
    header = len(blob) - len(MAGIC) - 4 - 42 - 40
    assert entries["b"]["encoding"] == "dense" and int.from_bytes(blob[len(MAGIC) : len(MAGIC) + 4], "little") == header


def test_the_shrunk_lenet_computes_the_masked_function_with_fewer_units(lenet_run: Path, lenet_export: dict) -> None:
    out = Path(lenet_export["out_dir"])
    x, _ = read_test_split(typed(compose_cfg(lenet_run.parent, *STEEP)))
    small = load_shrunk(out / "shrunk.pt")
    torch.testing.assert_close(predict(small, x), predict(load_exported(out), x), rtol=1e-4, atol=1e-5)
    assert small.layers_1.out_features < 100  # the output layer reads at most 40 of the 100 units
    units = lenet_export["shrunk"]["units"]
    assert units["layers_1"] == [100, small.layers_1.out_features] and units["out"] == [10, 10]


@pytest.mark.slow
def test_the_shrunk_conv2_computes_the_masked_function(conv_run: Path) -> None:
    report = export(conv_run, ExportOptions(round_index=2))
    out = Path(report["out_dir"])
    x, _ = read_test_split(typed(compose_cfg(conv_run.parent, *CONV2, *STEEP)))
    small = load_shrunk(out / "shrunk.pt")
    torch.testing.assert_close(predict(small, x), predict(load_exported(out), x), rtol=1e-4, atol=1e-5)
    assert sum(before - after for before, after in report["shrunk"]["units"].values()) > 0
    assert report["test"]["matches_rounds_csv"] and report["onnx"]["max_abs_diff"] < 1e-4
    assert report["onnx"]["test_acc"] == report["shrunk"]["test_acc"]  # onnxruntime runs the shrunk model


def test_dead_units_of_conv_chains_go_and_their_constants_move_into_the_next_bias() -> None:
    torch.manual_seed(0)
    for model, x in (
        (ConvNet(3, 32, 10, depth=4, hidden=(32, 32)), torch.randn(4, 3, 32, 32)),
        (LeNet5(1, 28, 10), torch.randn(4, 1, 28, 28)),
    ):
        with torch.no_grad():
            for layer in model.modules():
                if isinstance(layer, nn.Linear | nn.Conv2d):
                    layer.weight[::3] = 0  # dead incoming: the unit outputs relu(bias)
                    layer.weight[:, 1::4] = 0  # dead outgoing for the layer before
                    layer.bias.uniform_(-1, 1)  # some constants are positive
        small, units = shrink(as_chain(model))
        torch.testing.assert_close(small.eval()(x), model.eval()(x), rtol=1e-4, atol=1e-5)
        assert all(after < before for name, (before, after) in units.items() if name != "out")


def test_residual_nets_and_vit_are_not_shrunk_and_say_why() -> None:
    with pytest.raises(NotShrinkable, match="residual connections"):
        as_chain(CifarResNet(3, 32, 10, depth=8))
    with pytest.raises(NotShrinkable, match="residual stream"):
        as_chain(ViT(3, 32, 10, dim=16, depth=1, heads=2, mlp_dim=16))


def test_the_runtime_path_picks_dense_or_csr_per_layer_and_computes_the_same() -> None:
    model = LeNet300100(1, 28, 10).eval()
    with torch.no_grad():
        for layer in (*model.layers, model.out):
            layer.weight.mul_(torch.rand_like(layer.weight) < 0.05)
    x = torch.randn(64, 1, 28, 28)
    hidden = torch.randn(3, 100)
    torch.testing.assert_close(CsrLinear(model.out)(hidden), model.out(hidden), rtol=1e-5, atol=1e-6)
    picked, choices = pick_paths(model, x, repeats=1)
    assert [c["layer"] for c in choices] == ["layers.0", "layers.1", "out"]
    assert all(c["path"] in ("dense", "csr") and c["dense_us"] > 0 and c["csr_us"] > 0 for c in choices)
    torch.testing.assert_close(picked(x), model(x), rtol=1e-4, atol=1e-5)


def test_the_default_round_is_the_sparsest_within_the_tolerance_of_round_0(
    lenet_run: Path, capsys: pytest.CaptureFixture
) -> None:
    rows = [
        {"round": 0, "weights_remaining": 1.0, "val_acc": 0.9800},
        {"round": 1, "weights_remaining": 0.8, "val_acc": 0.9760},
        {"round": 2, "weights_remaining": 0.64, "val_acc": 0.9749},  # 0.51 points below: out at 0.5
        {"round": 3, "weights_remaining": 0.51, "val_acc": 0.9700},
    ]
    assert choose_round(rows) == 1
    assert choose_round(rows, tolerance=0.6) == 2 and choose_round(rows, tolerance=1.0) == 3
    assert choose_round(rows, tolerance=0.0) == 0
    assert cli([str(lenet_run), "--out", str(lenet_run / "default")]) == 0
    expected = choose_round(read_rounds(lenet_run / "rounds.csv"))
    assert capsys.readouterr().out.startswith(f"round {expected} (sparsest round")


@pytest.mark.parametrize("damage", ["truncated mask", "mask of another model", "weights of another model"])
def test_a_corrupt_or_mismatched_file_is_one_line_naming_it(
    damage: str, lenet_run: Path, conv_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    shutil.copytree(lenet_run, run, ignore=shutil.ignore_patterns("export", "default"))
    target = run / "round_01" / ("early_stop.pt" if damage.startswith("weights") else "mask.pt")
    if damage == "truncated mask":
        target.write_bytes(target.read_bytes()[:1000])
    else:
        shutil.copy(conv_run / "round_01" / target.name, target)
    with pytest.raises(ExportError) as error:
        export(run, ExportOptions(round_index=1))
    message = str(error.value)
    assert message.startswith(f"{target}: ") and "\n" not in message
    assert {"truncated mask": "cannot be read", "mask of another model": "do not match"}.get(damage, "LeNet300100") in (
        message
    )
    with pytest.raises(SystemExit) as exit_:
        cli([str(run), "--round", "1"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"error: {message}\n"


def test_a_truncated_compressed_file_is_one_line_naming_it(lenet_export: dict, tmp_path: Path) -> None:
    broken = tmp_path / "compressed.lthz"
    broken.write_bytes((Path(lenet_export["out_dir"]) / "compressed.lthz").read_bytes()[:-10])
    with pytest.raises(ExportError, match=r"compressed.lthz: cannot be read \(ValueError: payload is"):
        decompress(broken)


def test_a_full_disk_is_one_line_naming_the_export_file_and_leaves_no_temporary(
    lenet_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    assert cli([str(lenet_run), "--round", "1", "--out", str(tmp_path / "out")]) == 4
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert err == f"error: disk full writing {tmp_path / 'out' / 'ticket.pt'}; free space, then export again\n"
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.slow
def test_a_second_export_of_one_folder_waits_for_the_first_and_clears_what_a_killed_one_left(
    lenet_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / ".ticket.pt.k1ll3d.tmp").write_bytes(b"half a ticket")  # what an export killed mid-write leaves
    with locked(out / ".export.lock"):  # as the first export holds it while it writes
        second = subprocess.Popen(
            [sys.executable, str(REPO / "scripts" / "export.py"), str(lenet_run), "--round", "1", "--out", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_env(PYTHONPATH=str(REPO)),
        )
        try:
            line = second.stderr.readline()
            assert line.startswith(f"waiting for {out}: another export (pid {os.getpid()} on "), line
            time.sleep(0.5)
            assert second.poll() is None and not (out / "export.json").exists()
        except BaseException:
            second.kill()
            raise
    stdout, stderr = second.communicate(timeout=300)
    assert second.returncode == 0, stderr
    assert f"written to {out}" in stdout and (out / "export.json").is_file()
    assert sorted(p.name for p in out.glob(".*tmp*")) == []
    assert load_exported(out) is not None
