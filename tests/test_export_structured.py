"""Structured tickets shipped: a channel ticket of ResNet-20 becomes a smaller dense model (fewer channels, cut through
the dependency graph) that loads without this project and computes what the masked model computes, in torch and in
onnxruntime; a 2:4 ticket says where its semi-structured kernels are not available."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lth.core.masks import Mask
from lth.tools.export import load_exported, predict, read_test_split
from tests.conftest import REPO, train, typed
from tests.test_export import cli, compose_cfg
from tests.test_structured import CIFAR_SHAPED, groups_of

RESNET = ["model=resnet20", "prune.granularity=channel", "prune.scope=layer", "prune.rate=0.5", *CIFAR_SHAPED]
# Loads the exported files in a fresh interpreter and says which of this project's modules it needed (none).
LOAD_ALONE = """
import sys, numpy, onnxruntime, torch
x = torch.load(sys.argv[2])
program = torch.export.load(sys.argv[1] + "/shrunk.pt2").module()
session = onnxruntime.InferenceSession(sys.argv[1] + "/model.onnx", providers=["CPUExecutionProvider"])
torch.save({"pt2": program(x), "onnx": torch.from_numpy(session.run(None, {"images": x.numpy()})[0]),
            "lth": sorted(m for m in sys.modules if m == "lth" or m.startswith("lth."))}, sys.argv[3])
"""


@pytest.fixture(scope="module")
def resnet_channel_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ResNet-20 channel tickets on CIFAR-shaped synthetic data: each group halves its channels per round."""
    root = tmp_path_factory.mktemp("resnet_channel")
    return Path(train(compose_cfg(root, *RESNET), run_dir=root / "run")["run_dir"])


@pytest.mark.slow
def test_a_resnet20_channel_ticket_ships_as_a_smaller_model_equal_to_the_masked_one(
    resnet_channel_run: Path, tmp_path: Path, capsys
) -> None:
    assert cli([str(resnet_channel_run), "--round", "2", "--out", str(tmp_path / "out"), "--threads", "1"]) == 0
    assert "shrunk (shrunk.pt2)" in capsys.readouterr().out
    out = tmp_path / "out"
    report = json.loads((out / "export.json").read_text())
    units = report["shrunk"]["units"]
    assert units["stem.0"] == [16, 4] and units["stages.2.1.conv1"] == [64, 16]  # two halvings of every group
    assert units["stages.0.1.conv2"] == units["stem.0"]  # tied through the skip connections
    assert units["out"] == [10, 10]
    assert report["shrunk"]["parameters"][1] < report["shrunk"]["parameters"][0] / 8

    x, _ = read_test_split(typed(compose_cfg(resnet_channel_run.parent, *RESNET)))
    masked = predict(load_exported(out), x)  # the masked ResNet-20 from model.pt + model.yaml
    torch.save(x, tmp_path / "x.pt")
    done = subprocess.run(
        [sys.executable, "-c", LOAD_ALONE, str(out), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = torch.load(tmp_path / "y.pt")
    assert loaded["lth"] == []
    torch.testing.assert_close(loaded["pt2"], masked, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(loaded["onnx"], masked, rtol=1e-4, atol=1e-4)
    assert report["onnx"]["max_abs_diff"] < 1e-4 and report["test"]["matches_rounds_csv"]


@pytest.mark.slow
def test_the_shipped_channel_ticket_has_its_removed_channels_zero_in_the_rewind_weights(
    resnet_channel_run: Path, tmp_path: Path
) -> None:
    assert cli([str(resnet_channel_run), "--round", "1", "--out", str(tmp_path / "out"), "--threads", "1"]) == 0
    ticket = torch.load(tmp_path / "out" / "ticket.pt")
    mask = Mask({f"model.{n}": m for n, m in ticket["mask"].items()})
    from lth.core.structured import alive_channels
    from lth.models import CifarResNet

    for group in groups_of(CifarResNet(3, 32, 10), (3, 32, 32)):
        dead = ~alive_channels(group, mask)
        assert dead.sum() == group.channels // 2
        for s in group.coupled:  # BatchNorm weight and bias of removed channels: zero, as training keeps them
            name = s.name.removeprefix("model.")
            assert (ticket["weights"][name][s.index[dead[s.channel]]] == 0).all(), name


def test_a_2_4_ticket_exports_the_masked_dense_model_and_says_why_on_this_machine(make_cfg, tmp_path: Path) -> None:
    run = Path(train(make_cfg("prune.granularity=2:4", "prune.rounds=1"), run_dir=tmp_path / "run")["run_dir"])
    assert cli([str(run), "--round", "1", "--threads", "1"]) == 0
    report = json.loads((run / "export" / "round_01" / "export.json").read_text())
    if not torch.cuda.is_available():
        assert report["semi_structured"].startswith("not used: ") and "GPU" in report["semi_structured"]
    state = torch.load(run / "export" / "round_01" / "model.pt")
    assert ((state["layers.0.weight"].reshape(300, -1, 4) != 0).sum(-1) <= 2).all()
    assert report["onnx"]["max_abs_diff"] < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("granularity", ["channel", "2:4"])
def test_a_structured_run_started_from_a_weight_mask_says_what_the_export_did_with_it(
    granularity: str, make_cfg, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    weight = Path(train(make_cfg("prune.rounds=1"), run_dir=tmp_path / "weight")["run_dir"])
    cfg = make_cfg(f"prune.granularity={granularity}", f"prune.mask_from={weight / 'round_01' / 'mask.pt'}")
    cfg.prune.rounds = 0
    run = Path(train(cfg, run_dir=tmp_path / "run")["run_dir"])
    assert cli([str(run), "--round", "0", "--out", str(tmp_path / "out"), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "export.json").read_text())
    (line,) = [line for line in out.splitlines() if line.startswith("structure: ")]
    assert line == f"structure: {report['structure']}"
    source = f"round 0 started from prune.mask_from={weight / 'round_01' / 'mask.pt'}"
    if granularity == "channel":
        assert report["structure"].startswith("not channel throughout: ")
        assert f"weights are pruned inside the channels it keeps; {source}; shrunk.pt2 removes whole channels" in line
    else:
        assert report["structure"].startswith("not 2:4 throughout: ")
        assert f"groups of 4 weights keep more than 2; {source}; the 2:4 kernels are not used for it" in line
        assert report["semi_structured"].startswith("not used: the mask is not 2:4 (")


@pytest.mark.slow
def test_the_inference_benchmark_times_the_files_the_export_wrote_loaded_as_the_docs_say(
    make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lth.tools.export

    run = Path(train(make_cfg("prune.granularity=channel", "prune.rounds=1"), run_dir=tmp_path / "run")["run_dir"])
    loaded: set[tuple[str, str, bool]] = set()  # (folder, file, written by the export: its export.json beside it)

    def spy(load, file=Path):  # noqa: ANN001, ANN202
        def loading(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            shipped = file(path)
            loaded.add((shipped.parent.name, shipped.name, (shipped.parent / "export.json").is_file()))
            return load(path, *args, **kwargs)

        return loading

    monkeypatch.setattr(torch.export, "load", spy(torch.export.load))
    monkeypatch.setattr(lth.tools.export, "onnx_session", spy(lth.tools.export.onnx_session))
    model_pt = spy(lth.tools.export.load_exported, lambda folder: folder / "model.pt")
    monkeypatch.setattr(lth.tools.export, "load_exported", model_pt)
    bench = runpy.run_path(str(REPO / "scripts" / "bench_inference.py"))["main"]
    argv = ["--run", str(run), "--remaining", "0.8", "--repeats", "1", "--window", "0.001"]
    bench([*argv, "--out", str(tmp_path / "t.md")])

    timed = {(f"{run.name}_{r}", f, True) for r in (0, 1) for f in ("model.pt", "shrunk.pt2", "model.onnx")}
    assert {shipped for shipped in loaded if shipped[2]} == timed
    checked_by_the_export = {(f"{run.name}_{r}", "shrunk.pt2", False) for r in (0, 1)}  # before its export.json
    assert {shipped for shipped in loaded if not shipped[2]} == checked_by_the_export
    rows = [line for line in (tmp_path / "t.md").read_text().splitlines() if line.startswith("| lenet300")]
    assert [row.split(" | ")[3:5] for row in rows if "round_01" in row] == [
        ["`model.pt`", "torch (load_state_dict)"],
        ["`shrunk.pt2`", "torch.export.load().module()"],
        ["`model.onnx`", "onnxruntime"],
    ]
    assert "load average (1 min)" in (tmp_path / "t.md").read_text()
