"""Every script answers bad input the same way: exactly one line on stderr, ``error: <argument or file>: <what is
wrong>``, exit code 2, no traceback and no file written; the benchmarks write into docs/ only when asked; and every
script in scripts/ runs here in a tiny form, its output checked."""

from __future__ import annotations

import hashlib
import json
import os
import runpy
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.conftest import train
from tests.test_export import compose_cfg

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ("export", "report", "plot", "instability", "bench_data", "bench_inference", "benchmark")
TINY = (  # LeNet 16-8 on 300 synthetic images, rounds 0 and 1: trained in about a second
    "model.hidden=[16,8]",
    "prune.rounds=1",
    "train.steps=4it",
    "train.eval_every=2it",
    "dataset.source.train_size=300",
    "dataset.source.test_size=100",
    "dataset.val_size=50",
)
_loaded: dict[str, dict] = {}


def script(name: str) -> Callable:
    """``scripts/<name>.py``'s ``main``, run in this process (each script is loaded once)."""
    if name not in _loaded:
        _loaded[name] = runpy.run_path(str(REPO / "scripts" / f"{name}.py"))
    return _loaded[name]["main"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run: config.yaml, rounds.csv (rounds 0 and 1), rewind.pt, round_0X/mask.pt, early_stop.pt."""
    root = tmp_path_factory.mktemp("tiny")
    return Path(train(compose_cfg(root, *TINY), run_dir=root / "run")["run_dir"])


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root``: path -> (size, modification time)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def digest(folder: Path) -> dict[str, str]:
    """The hash of every file under ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.md")}


# -- damaged run folders: each helper copies the run into ``where`` and returns the copy ---------------------


def copy(run: Path, where: Path) -> Path:
    return Path(shutil.copytree(run, where / "run"))


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def damage(run: Path, where: Path, kind: str) -> tuple[Path, Path]:
    """A copy of ``run`` damaged as ``kind`` says; returns the copy and the file at fault."""
    if kind == "missing":
        return where / "nope", where / "nope"
    if kind == "empty":
        (where / "empty").mkdir()
        return where / "empty", where / "empty"
    copied = copy(run, where)
    csv = copied / "rounds.csv"
    lines = csv.read_text().splitlines()
    target = {
        "no rounds.csv": csv,
        "header-only csv": csv,
        "truncated csv": csv,
        "garbled csv": csv,
        "empty csv": csv,
        "no config": copied / "config.yaml",
        "garbled config": copied / "config.yaml",
        "list config": copied / "config.yaml",
        "bad config value": copied / "config.yaml",
        "truncated mask": copied / "round_01" / "mask.pt",
        "mask not tensors": copied / "round_01" / "mask.pt",
        "garbage early_stop": copied / "round_01" / "early_stop.pt",
        "truncated rewind": copied / "rewind.pt",
        "no rewind": copied / "rewind.pt",
    }[kind]
    if kind in ("no rounds.csv", "no config", "no rewind"):
        target.unlink()
    elif kind == "header-only csv":
        csv.write_text(lines[0] + "\n")
    elif kind == "truncated csv":
        csv.write_text("\n".join(lines)[: -len(lines[-1]) // 2])  # the last row cut in the middle
    elif kind == "garbled csv":
        csv.write_text("\n".join([lines[0], lines[1].replace(",", ",oops", 1), *lines[2:]]) + "\n")
    elif kind == "empty csv":
        csv.write_text("")
    elif kind == "garbled config":
        target.write_bytes(b"model: [unclosed\n\x00\xff")
    elif kind == "list config":
        target.write_text("- a\n- b\n")
    elif kind == "bad config value":
        target.write_text(target.read_text().replace("rate: 0.2", "rate: 7", 1))
    elif kind in ("truncated mask", "truncated rewind"):
        truncate(target)
    elif kind == "mask not tensors":
        torch.save(["not", "a", "tensor", "dict"], target)
    elif kind == "garbage early_stop":
        target.write_bytes(os.urandom(512))
    return copied, target


# -- the table: (script, arguments, damage) -> what the one line must name ----------------------------------
# In arguments, RUN is the (possibly damaged) run folder, TMP the test's folder, FILE a file in it.

Row = tuple[str, list[str], str | None, str | None]  # script, argv, damage, the text the line names (None: the file)
ROWS: dict[str, Row] = {
    # export
    "export: negative tolerance": ("export", ["RUN", "--tolerance", "-5"], None, "--tolerance"),
    "export: nan tolerance": ("export", ["RUN", "--tolerance", "nan"], None, "--tolerance"),
    "export: tolerance not a number": ("export", ["RUN", "--tolerance", "abc"], None, "--tolerance"),
    "export: negative round": ("export", ["RUN", "--round", "-1"], None, "--round"),
    "export: unknown round": ("export", ["RUN", "--round", "7"], None, "rounds.csv has rounds 0, 1"),
    "export: zero threads": ("export", ["RUN", "--threads", "0"], None, "--threads"),
    "export: unknown option": ("export", ["RUN", "--bogus"], None, "--bogus"),
    "export: no run folder given": ("export", [], None, "run_dir"),
    "export: missing folder": ("export", ["RUN"], "missing", "run_dir"),
    "export: empty folder": ("export", ["RUN"], "empty", "config.yaml"),
    "export: no rounds.csv": ("export", ["RUN"], "no rounds.csv", None),
    "export: header-only rounds.csv": ("export", ["RUN"], "header-only csv", None),
    "export: truncated rounds.csv": ("export", ["RUN"], "truncated csv", None),
    "export: garbled rounds.csv": ("export", ["RUN"], "garbled csv", None),
    "export: garbled config.yaml": ("export", ["RUN"], "garbled config", None),
    "export: config.yaml a list": ("export", ["RUN"], "list config", None),
    "export: config.yaml bad value": ("export", ["RUN"], "bad config value", None),
    "export: truncated mask.pt": ("export", ["RUN", "--round", "1"], "truncated mask", None),
    "export: mask.pt not tensors": ("export", ["RUN", "--round", "1"], "mask not tensors", None),
    "export: garbage early_stop.pt": ("export", ["RUN", "--round", "1"], "garbage early_stop", None),
    "export: truncated rewind.pt": ("export", ["RUN", "--round", "1"], "truncated rewind", None),
    "export: --out is a file": ("export", ["RUN", "--out", "FILE"], None, "--out"),
    "export: missing --data-dir": ("export", ["RUN", "--data-dir", "TMP/nope"], None, "--data-dir"),
    # report
    "report: sparsity 0": ("report", ["RUN", "--sparsities", "0"], None, "--sparsities"),
    "report: sparsity above 100": ("report", ["RUN", "--sparsities", "50", "150"], None, "--sparsities"),
    "report: negative tolerance": ("report", ["RUN", "--tolerance", "-1"], None, "--tolerance"),
    "report: missing folder": ("report", ["RUN"], "missing", None),
    "report: empty folder": ("report", ["RUN"], "empty", None),
    "report: header-only rounds.csv": ("report", ["RUN"], "header-only csv", None),
    "report: truncated rounds.csv": ("report", ["RUN"], "truncated csv", None),
    "report: garbled config.yaml": ("report", ["RUN"], "garbled config", None),
    "report: --out is a folder": ("report", ["RUN", "--out", "TMP"], None, "--out"),
    "report: no paths": ("report", [], None, "paths"),
    # plot
    "plot: header-only rounds.csv": ("plot", ["RUN", "--out", "TMP/figures"], "header-only csv", None),
    "plot: empty rounds.csv": ("plot", ["RUN", "--out", "TMP/figures"], "empty csv", None),
    "plot: garbled rounds.csv": ("plot", ["RUN", "--out", "TMP/figures"], "garbled csv", None),
    "plot: folder without rounds.csv": ("plot", ["RUN", "--out", "TMP/figures"], "no rounds.csv", "RUN: no run folder"),
    "plot: missing folder": ("plot", ["RUN"], "missing", None),
    "plot: unknown format": ("plot", ["RUN", "--format", "gif"], None, "--format"),
    "plot: unknown spread": ("plot", ["RUN", "--spread", "wide"], None, "--spread"),
    "plot: --out is a file": ("plot", ["RUN", "--out", "FILE"], None, "--out"),
    # instability
    "instability: one alpha": ("instability", ["RUN", "--alphas", "1"], None, "--alphas"),
    "instability: no bn batches": ("instability", ["RUN", "--bn-batches", "0"], None, "--bn-batches"),
    "instability: equal data seeds": ("instability", ["RUN", "--data-seeds", "3", "3"], None, "--data-seeds"),
    "instability: negative data seed": ("instability", ["RUN", "--data-seeds", "-1", "2"], None, "--data-seeds"),
    "instability: one data seed": ("instability", ["RUN", "--data-seeds", "3"], None, "--data-seeds"),
    "instability: zero steps": ("instability", ["RUN", "--steps", "0it"], None, "--steps"),
    "instability: bare number of steps": ("instability", ["RUN", "--steps", "500"], None, "--steps"),
    "instability: unknown round": ("instability", ["RUN", "--rounds", "5"], None, "rounds"),
    "instability: negative round": ("instability", ["RUN", "--rounds", "-2"], None, "--rounds"),
    "instability: missing folder": ("instability", ["RUN"], "missing", "run_dir"),
    "instability: empty folder": ("instability", ["RUN"], "empty", "config.yaml"),
    "instability: no rewind.pt": ("instability", ["RUN"], "no rewind", None),
    "instability: truncated rewind.pt": ("instability", ["RUN"], "truncated rewind", None),
    "instability: truncated mask.pt": ("instability", ["RUN"], "truncated mask", None),
    "instability: mask.pt not tensors": ("instability", ["RUN"], "mask not tensors", None),
    "instability: garbled config.yaml": ("instability", ["RUN"], "garbled config", None),
    "instability: no config.yaml": ("instability", ["RUN"], "no config", None),
    "instability: missing --data-dir": ("instability", ["RUN", "--data-dir", "TMP/nope"], None, "--data-dir"),
    # bench_inference
    "bench_inference: remaining 2": ("bench_inference", ["--run", "RUN", "--remaining", "2"], None, "--remaining"),
    "bench_inference: remaining 0": ("bench_inference", ["--run", "RUN", "--remaining", "0"], None, "--remaining"),
    "bench_inference: zero repeats": ("bench_inference", ["--run", "RUN", "--repeats", "0"], None, "--repeats"),
    "bench_inference: zero window": ("bench_inference", ["--run", "RUN", "--window", "0"], None, "--window"),
    "bench_inference: zero threads": ("bench_inference", ["--run", "RUN", "--threads", "0"], None, "--threads"),
    "bench_inference: no --run": ("bench_inference", ["--models"], None, "--run"),
    "bench_inference: unknown model": ("bench_inference", ["--run", "RUN", "--models", "vgg99"], None, "--models"),
    "bench_inference: missing run": ("bench_inference", ["--run", "RUN"], "missing", "--run"),
    "bench_inference: empty run": ("bench_inference", ["--run", "RUN"], "empty", "config.yaml"),
    "bench_inference: header-only rounds.csv": ("bench_inference", ["--run", "RUN"], "header-only csv", None),
    "bench_inference: garbage early_stop.pt": (
        "bench_inference",
        ["--run", "RUN", "--remaining", "0.8", "--models"],
        "garbage early_stop",
        None,
    ),
    "bench_inference: --out is a folder": ("bench_inference", ["--run", "RUN", "--out", "TMP"], None, "--out"),
    "bench_inference: --out and --write-docs": (
        "bench_inference",
        ["--run", "RUN", "--out", "TMP/x.md", "--write-docs"],
        None,
        "--write-docs",
    ),
    # bench_data
    "bench_data: too few samples": ("bench_data", ["--samples", "10"], None, "--samples"),
    "bench_data: zero batches": ("bench_data", ["--batches", "0"], None, "--batches"),
    "bench_data: zero repeats": ("bench_data", ["--repeats", "0"], None, "--repeats"),
    "bench_data: negative workers": ("bench_data", ["--workers", "0", "-1"], None, "--workers"),
    "bench_data: zero batch size": ("bench_data", ["--batch-size", "0"], None, "--batch-size"),
    "bench_data: zero threads": ("bench_data", ["--threads", "0"], None, "--threads"),
    "bench_data: unknown device": ("bench_data", ["--device", "toaster"], None, "--device"),
    "bench_data: --out is a folder": ("bench_data", ["--out", "TMP"], None, "--out"),
    # benchmark
    "benchmark: one step": ("benchmark", ["--steps", "1"], None, "--steps"),
    "benchmark: zero warmup": ("benchmark", ["--warmup", "0"], None, "--warmup"),
    "benchmark: sparsity 1": ("benchmark", ["--sparsity", "0.5", "1"], None, "--sparsity"),
    "benchmark: sparsity 0": ("benchmark", ["--sparsity", "0"], None, "--sparsity"),
    "benchmark: zero threads": ("benchmark", ["--threads", "0"], None, "--threads"),
    "benchmark: zero repeats": ("benchmark", ["--repeats", "0"], None, "--repeats"),
    "benchmark: short IMP round": ("benchmark", ["--round-steps", "10"], None, "--round-steps"),
    "benchmark: negative help repeats": ("benchmark", ["--help-repeats", "-1"], None, "--help-repeats"),
    "benchmark: unknown model": ("benchmark", ["--model", "vgg99"], None, "--model"),
    "benchmark: --json is a folder": ("benchmark", ["--json", "TMP"], None, "--json"),
}


def prepare(row: Row, run: Path, where: Path) -> tuple[list[str], str]:
    """The arguments of ``row`` with its run folder (damaged as it says) in ``where``, and what the line must name."""
    name, argv, kind, names = row
    run_dir, target = damage(run, where, kind) if kind else (copy(run, where), None)
    (where / "file.txt").write_text("a file, not a folder\n")
    replace = {"RUN": str(run_dir), "FILE": str(where / "file.txt")}
    argv = [replace.get(a, a.replace("TMP", str(where))) for a in argv]
    return argv, str(target) if names is None else names.replace("RUN", str(run_dir))


def check_one_line(code: object, err: str, names: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    assert lines[0].startswith("error: ") and names in lines[0], lines[0]


@pytest.mark.parametrize("case", list(ROWS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    case: str, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv, names = prepare(ROWS[case], run, tmp_path)
    main = script(ROWS[case][0])
    monkeypatch.chdir(tmp_path)  # a file written relative to the working folder would show up in the snapshot
    before = snapshot(tmp_path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    check_one_line(exit_.value.code, capsys.readouterr().err, names)
    assert snapshot(tmp_path) == before


def test_the_table_covers_every_script() -> None:
    assert len(ROWS) >= 40 and {row[0] for row in ROWS.values()} == set(SCRIPTS)


@pytest.mark.parametrize(
    "case", ["export: negative tolerance", "plot: header-only rounds.csv", "instability: equal data seeds"]
)
def test_the_entry_points_answer_the_same_way(case: str, run: Path, tmp_path: Path) -> None:
    argv, names = prepare(ROWS[case], run, tmp_path)
    before = snapshot(tmp_path)
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / f"{ROWS[case][0]}.py"), *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    check_one_line(done.returncode, done.stderr, names)
    assert snapshot(tmp_path) == before


def test_help_still_prints_usage_and_exits_0(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        script("report")(["--help"])
    assert exit_.value.code == 0 and "--sparsities" in capsys.readouterr().out


# -- the benchmarks leave docs/ alone unless asked ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "argv", "doc"),
    [
        ("bench_data", [], "data.md"),
        ("bench_inference", ["--run", "RUN"], "deploy.md"),
        ("benchmark", [], "performance.md"),
    ],
)
def test_the_benchmarks_write_docs_only_when_asked(name: str, argv: list[str], doc: str, run: Path) -> None:
    script(name)
    parser = _loaded[name]
    argv = [str(run) if a == "RUN" else a for a in argv]
    default = parser["parser"]().parse_args(argv)
    assert default.write_docs is False and default.out is None  # by default the table is printed only
    assert parser["DOC"] == REPO / "docs" / doc  # --write-docs rewrites the repository's doc, wherever it runs
    assert parser["parser"]().parse_args([*argv, "--write-docs"]).write_docs is True


def test_bench_runs_print_and_write_only_where_told(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = digest(REPO / "docs")
    monkeypatch.chdir(tmp_path)
    tiny_data = ["--samples", "150", "--batch-size", "16", "--batches", "2", "--repeats", "1", "--workers", "0"]
    script("bench_data")([*tiny_data, "--threads", "1", "--device", "cpu"])
    assert "| MNIST-shaped 1x28x28 | memory (device-resident) |" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # printed only
    tiny_inference = ["--run", str(run), "--remaining", "1.0", "--repeats", "1", "--window", "0.001", "--models"]
    script("bench_inference")([*tiny_inference, "--out", str(tmp_path / "bench.md")])
    written = (tmp_path / "bench.md").read_text()
    assert written.startswith("<!-- bench_inference:start -->\n`python scripts/bench_inference.py --run ")
    assert "| round_00, test acc " in written and "| onnxruntime |" in written
    assert "written to" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["bench.md"]
    for name, argv in [("bench_data", ["--repeats", "0"]), ("bench_inference", ["--run", str(run), "--window", "-1"])]:
        with pytest.raises(SystemExit):
            script(name)([*argv, "--write-docs"])  # a bad run asked to write the docs writes nothing
    capsys.readouterr()
    assert digest(REPO / "docs") == docs


# -- every script runs, in a tiny form -----------------------------------------------------------------------


RUN_HERE = {"export", "report", "plot", "runs", "instability", "bench_data", "bench_inference", "benchmark", "cheaper"}
RUN_HERE |= {"gpu_check"}  # its --cpu form: tests/test_stacked.py


def test_every_script_runs_here_in_a_tiny_form() -> None:
    assert {p.stem for p in (REPO / "scripts").iterdir() if p.suffix in (".py", ".sh")} == RUN_HERE


def script_env() -> dict[str, str]:
    """The environment of a script run as a user would: this checkout's lth and python first, one thread."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PYTHONPATH": str(REPO), "PATH": path, "OMP_NUM_THREADS": "1"}


def test_export_writes_every_format_of_the_round_it_is_given(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert script("export")([str(copy(run, tmp_path)), "--round", "1", "--out", str(tmp_path / "export")]) == 0
    assert "round 1 (--round): 80.0% weights remaining" in capsys.readouterr().out
    written = {p.name for p in (tmp_path / "export").iterdir()}
    assert {"ticket.pt", "model.safetensors", "shrunk.pt", "compressed.lthz", "model.onnx", "export.json"} <= written
    report = json.loads((tmp_path / "export" / "export.json").read_text())
    assert report["round"] == 1 and report["weights_remaining"] == pytest.approx(0.8, abs=1e-3)
    assert report["test"]["matches_rounds_csv"] and report["compressed"]["bit_identical"]


def test_report_plot_and_runs_read_the_tiny_run(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    script("report")([str(run), "--out", str(tmp_path / "report.md")])
    printed = capsys.readouterr().out
    assert printed == (tmp_path / "report.md").read_text()
    accuracy = printed.split("## Test accuracy at early stop (%)")[1].split("##")[0]
    rows = [line for line in accuracy.splitlines() if line.startswith("| ") and "%" in line]
    assert [r.split("|")[1].strip() for r in rows] == ["100.0%", "80.00%"]  # rounds 0 and 1, one column
    script("plot")([str(run), "--out", str(tmp_path / "figures")])
    figures = [Path(line) for line in capsys.readouterr().out.split()]
    assert [f.name for f in figures] == ["test_acc.png", "early_stop_iteration.png"]
    assert all(f.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") for f in figures)
    script("runs")([str(run.parent)])
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["identity", "model", "dataset"]
    assert [line.split() for line in lines] == [["run", "lenet300", "synthetic", "finished", "2", "80.00", "13.00"]]


def test_instability_trains_two_copies_per_round_and_writes_the_barrier(run: Path, tmp_path: Path) -> None:
    copied = copy(run, tmp_path)
    argv = [str(copied), "--rounds", "1", "--steps", "2it", "--alphas", "3", "--bn-batches", "1"]
    result = script("instability")(argv)
    assert json.loads((copied / "instability.json").read_text()) == json.loads(json.dumps(result))
    assert result["alphas"] == [0.0, 0.5, 1.0] and result["trained_steps"] == 2
    (one,) = result["rounds"]
    assert one["round"] == 1 and one["weights_remaining"] == pytest.approx(0.8, abs=1e-3) and len(one["errors"]) == 3
    assert one["barrier"] == pytest.approx(max(one["errors"]) - (one["errors"][0] + one["errors"][-1]) / 2, abs=1e-9)


@pytest.mark.slow
def test_the_benchmark_writes_every_table_to_out(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out, numbers = tmp_path / "performance.md", tmp_path / "performance.json"
    tiny = ["--warmup", "2", "--steps", "2", "--repeats", "1", "--threads", "1", "--sparsity", "0.5"]
    tiny += ["--resnet-rounds", "1", "--round-steps", "100", "--round-repeats", "1", "--help-repeats", "1"]
    docs, threads = digest(REPO / "docs"), torch.get_num_threads()
    try:
        script("benchmark")([*tiny, "--out", str(out), "--json", str(numbers)])
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
    text = out.read_text()
    assert text.startswith(f"<!-- benchmark:start -->\n`python scripts/benchmark.py {' '.join(tiny)} --out ")
    assert text.rstrip().endswith("<!-- benchmark:end -->") and digest(REPO / "docs") == docs
    for heading in ("**Step time, 1 thread(s)**", "**Prune + rewind of ResNet-18", "**An IMP round, 1 thread(s)**"):
        assert heading in text
    variants = ["(a) dense | 100.0%", "(b) ticket, 50% pruned | 50.0%", "(c) ModelPruning, 50% pruned | 50.0%"]
    variants += ["(d) plain loop | 100.0%", "(d) plain loop, 50% pruned | 50.0%"]  # weights remaining after the fits
    assert all(f"| {v} |" in text for v in variants)
    assert "| whole round (100 iterations) |" in text and "| (d) plain loop, same steps and mask |" in text
    targets = [line for line in text.split("**Targets**")[1].splitlines() if line.startswith("| ")][1:]
    assert len(targets) == 7 and all(line.endswith(("| met |", "| **missed** |")) for line in targets)
    saved = json.loads(numbers.read_text())["threads"]["1"]
    (timed,) = saved["round"]["rounds"]
    assert timed["round"] == 1 and timed["steps"] == 100 and timed["evaluations"] == 1  # one validation per 100
    assert timed["wall"] > timed["training_steps"] > 0 and len(saved["load_before"]) == 3
    assert [len(v["seconds"]) for v in saved["steps"]] == [1] * 5


@pytest.mark.slow
def test_cheaper_sh_runs_every_sweep_and_its_tables_on_generated_data(tmp_path: Path) -> None:
    out = tmp_path / "cheaper"
    tiny = ["dataset=synthetic", "train.steps=2it", "train.eval_every=2it", "model.hidden=[16,8]", "logger=none"]
    tiny += ["dataset.source.train_size=300", "dataset.source.test_size=100", "dataset.val_size=50"]
    tiny += ["prune.score_batches=2"]  # of the 5 batches of 60 that these 250 training images make
    env = {**script_env(), "SEEDS": "0", "TARGETS": "0.93,0.981", "FIGURES": str(tmp_path / "figures")}
    command = ["bash", str(REPO / "scripts" / "cheaper.sh"), str(tmp_path / "data"), str(out), *tiny]
    done = subprocess.run(
        [*command, f"paths.output_dir={tmp_path / 'outputs'}"], capture_output=True, text=True, env=env, timeout=1200
    )
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = {sweep: len(list((out / sweep).glob("*/rounds.csv"))) for sweep in ("oneshot", "early_bird", "controls")}
    assert jobs == {"oneshot": 6 * 2, "early_bird": 2 * 2, "controls": 2 * 2 * 3}  # the unshuffled masks too
    assert len(list((out / "imp").glob("*/round_18"))) == 1  # 18 pruned rounds
    methods = (out / "methods.md").read_text().split("## Training iterations")[0]
    header = next(line for line in methods.splitlines() if line.startswith("| weights remaining |"))
    for method in ("grasp", "magnitude", "magnitude_init", "random", "snip", "synflow"):
        assert f"prune.method={method}, prune.rounds=1 (n=1)" in header, method
    assert "prune.method=magnitude, prune.rounds=18 (n=1)" in header  # IMP
    rows = [line.split("|")[1].strip() for line in methods.splitlines() if line.startswith("| ") and line != header]
    assert rows == ["100.0%", "21.1%", "7.0%", "3.6%", "1.9%"]
    controls = (out / "early_bird_controls.md").read_text()
    assert "prune.early_bird.distance=kept" in controls and "prune.control=reinit" in controls
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["test_acc_vs_train_iterations.png"]
