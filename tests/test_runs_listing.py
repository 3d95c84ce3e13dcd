"""``scripts/runs.py``: run folders found, their status and numbers, filters, JSON, readable aliases, bad input.

The run folders are written by hand (config.yaml from the composed config, rounds.csv, summary.json): no training.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from lth.config.identity import identity, run_id
from lth.state.artifacts import ROUND_COLUMNS
from lth.state.labels import flatten, label
from lth.tools import listing
from tests.conftest import FAST, run_folders, run_main

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import runs as runs_script  # noqa: E402


def write_run(root: Path, cfg: DictConfig, rows: int, finished: bool) -> Path:
    """A run folder as train.py leaves it: config.yaml, ``rows`` rows of rounds.csv, summary.json if finished."""
    run_dir = root / "runs" / run_id(cfg)
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if rows >= 0:
        lines = [",".join(ROUND_COLUMNS)]
        for r in range(rows):
            lines.append(f"{r},{0.8**r},{10 * r},0.5,0.9,{0.90 + 0.01 * r},0.9,1.0,{100 * (r + 1)},{r},{r}")
        (run_dir / "rounds.csv").write_text("\n".join(lines) + "\n")
    if finished:
        (run_dir / "summary.json").write_text(json.dumps({"rounds": []}))
    return run_dir


@pytest.fixture
def outputs(tmp_path: Path, make_cfg: Callable[..., DictConfig]) -> dict[str, Path]:
    """Four runs: finished (rate 0.2, seed 0), interrupted after 2 rounds (rate 0.3, seed 0), finished (rate 0.2,
    seed 1), empty (rate 0.3, seed 1); and a shared round-0 store that is not a run."""
    root = tmp_path / "outputs"
    made = {
        "done": write_run(root, make_cfg("prune.rate=0.2", "seed=0"), 3, True),
        "cut": write_run(root, make_cfg("prune.rate=0.3", "seed=0"), 2, False),
        "seed1": write_run(root, make_cfg("prune.rate=0.2", "seed=1"), 3, True),
        "empty": write_run(root, make_cfg("prune.rate=0.3", "seed=1"), -1, False),
    }
    (root / "dense" / "x").mkdir(parents=True)
    (root / "dense" / "x" / "config.yaml").write_text("seed: 0\n")
    (root / "dense" / ".x.lock").write_text("")
    return made


def runs_py(capsys: pytest.CaptureFixture, *argv: str) -> str:
    runs_script.main(list(argv))
    return capsys.readouterr().out


def test_table(outputs: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    root = outputs["done"].parents[1]
    text = runs_py(capsys, str(root))
    header, *lines = text.strip().splitlines()
    assert len(lines) == 4
    columns = header.split("  ")
    columns = [c.strip() for c in columns if c.strip()]
    assert columns[-2:] == ["seed", "prune.rate"] or columns[-2:] == ["prune.rate", "seed"]
    assert "best test acc at early stop (%)" in header and "weights remaining (%)" in header
    by_id = {line.split()[0]: line for line in lines}
    assert set(by_id) == {p.name for p in outputs.values()}
    done, cut, empty = by_id[outputs["done"].name], by_id[outputs["cut"].name], by_id[outputs["empty"].name]
    assert "finished" in done and " 3 " in done and "64.00" in done and "92.00" in done
    assert "interrupted at round 2" in cut and "80.00" in cut and "91.00" in cut
    assert "empty" in empty and "—" in empty
    # only differing keys: nothing of the config the four share
    assert "train.steps" not in header and "dataset.name" not in header


def test_running(outputs: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    code = (
        "import sys, time; from pathlib import Path; from lth.state.locks import locked\n"
        "with locked(Path(sys.argv[1]) / '.lock', wait=False):\n"
        "    print('held', flush=True); time.sleep(30)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(outputs["cut"])], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        (entry,) = [e for e in runs_script_json(capsys, outputs) if e["identity"] == outputs["cut"].name]
        assert entry["status"] == f"running (pid {holder.pid})"
    finally:
        holder.kill()
        holder.wait()
    # the lock file is left behind by a killed process: not running any more
    deadline = time.time() + 5
    while listing.lock_holder(outputs["cut"]) is not None and time.time() < deadline:
        time.sleep(0.05)
    assert listing.read_entry(outputs["cut"]).status == "interrupted at round 2"


def runs_script_json(capsys: pytest.CaptureFixture, outputs: dict[str, Path], *filters: str) -> list[dict]:
    return json.loads(runs_py(capsys, str(outputs["done"].parents[1]), *filters, "--json"))


def test_filters_and_json(outputs: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    every = runs_script_json(capsys, outputs)
    assert {e["status"] for e in every} == {"finished", "interrupted at round 2", "empty"}
    assert all(set(e["config"]) == {"seed", "prune.rate"} for e in every)
    (one,) = runs_script_json(capsys, outputs, "prune.rate=0.2", "seed=0")
    assert one["identity"] == outputs["done"].name and one["rounds"] == 3
    assert one["weights_remaining"] == pytest.approx(64.0) and one["best_test_acc_at_early_stop"] == pytest.approx(92)
    assert {e["identity"] for e in runs_script_json(capsys, outputs, "prune.rate=0.3")} == {
        outputs["cut"].name,
        outputs["empty"].name,
    }
    # run-only keys filter too (the resolved config), and values compare as written
    assert len(runs_script_json(capsys, outputs, "train.save_weights=true", "dataset.name=synthetic")) == 4
    assert runs_script_json(capsys, outputs, "seed=7") == []
    # one run left: no key differs
    text = runs_py(capsys, str(outputs["done"].parents[1]), "prune.rate=0.2", "seed=1")
    assert text.splitlines()[0].rstrip().endswith("best test acc at early stop (%)")


def test_aliases(outputs: dict[str, Path], capsys: pytest.CaptureFixture, make_cfg: Callable) -> None:
    root = outputs["done"].parents[1]
    text = runs_py(capsys, str(root), "--aliases")
    aliases = root / "runs" / "by-label"
    links = {p.name: os.readlink(p) for p in aliases.iterdir()}
    assert len(links) == 4 and len(text.strip().splitlines()) == 4
    fast = "dataset=synthetic,prune.rounds=2,train.steps=30it,train.eval_every=10it"
    name = next(n for n, t in links.items() if t == f"../{outputs['cut'].name}")
    assert set(name.split(",")) == set(f"{fast},prune.rate=0.3".split(","))
    name = next(n for n, t in links.items() if t == f"../{outputs['seed1'].name}")
    assert set(name.split(",")) == set(f"{fast},seed=1".split(","))
    assert (aliases / name / "config.yaml").is_file()  # the link leads to the run
    # again: the same links, nothing new; the aliases are never listed as runs
    runs_py(capsys, str(root), "--aliases")
    assert len(list(aliases.iterdir())) == 4
    assert len(runs_script_json(capsys, outputs)) == 4
    # the default config is "default"; another model is named by its group
    assert label(flatten(_identity(make_cfg(fast=False)))) == "default"
    assert label(flatten(_identity(make_cfg("model=conv2", "seed=3", fast=False)))) == "model=conv2,seed=3"


def _identity(cfg: DictConfig) -> dict:
    from lth.config.identity import identity

    return identity(cfg)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["{missing}"], "no such folder"),
        (["{root}", "prune.rate"], "prune.rate: a filter is key=value"),
        (["{root}", "prune.nope=1"], "prune.nope: no listed run's config has this key"),
        (["{root}", "--bogus"], "--bogus: unrecognized argument"),
        (["{garbled}"], "config.yaml: cannot be read"),
    ],
)
def test_one_line_errors(
    outputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], expected: str
) -> None:
    garbled = tmp_path / "garbled" / "run"
    garbled.mkdir(parents=True)
    (garbled / "config.yaml").write_text("a: [unclosed\n")
    where = {"missing": tmp_path / "nope", "root": outputs["done"].parents[1], "garbled": garbled.parent}
    with pytest.raises(SystemExit) as stop:
        runs_script.main([a.format(**where) for a in argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and len(err.strip().splitlines()) == 1


def test_one_broken_folder_is_skipped_in_one_line_and_the_rest_are_listed(
    outputs: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    root = outputs["done"].parents[1]
    garbled, cut = root / "runs" / "garbled", root / "runs" / "cut_short"
    garbled.mkdir()
    (garbled / "config.yaml").write_text("a: [unclosed\n")
    cut.mkdir()
    (cut / "config.yaml").write_text((outputs["done"] / "config.yaml").read_text())
    (cut / "rounds.csv").write_text((outputs["done"] / "rounds.csv").read_text()[:-12])  # its last row cut short
    runs_script.main([str(root)])  # returns: exit code 0
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 1 + 4  # the header and the four readable runs
    first, second = sorted(err.splitlines())
    assert first == f"skipped {cut}: rounds.csv: row 3 has 8 values for 11 columns (cut short?)"
    assert second.startswith(f"skipped {garbled}: config.yaml: cannot be read (")
    assert [e["identity"] for e in runs_script_json(capsys, outputs)] == sorted(p.name for p in outputs.values())


def test_a_finished_run_gets_its_readable_alias_through_train_py(tmp_path: Path) -> None:
    result = run_main(*FAST, "prune.rounds=0", "prune.rate=0.3", "paths.output_dir=out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = run_folders(tmp_path / "out" / "runs")
    aliases = list((tmp_path / "out" / "runs" / "by-label").iterdir())
    assert [a.name for a in aliases] == [label(flatten(identity(OmegaConf.load(run / "config.yaml"))))]
    assert "prune.rate=0.3" in aliases[0].name and "dataset=synthetic" in aliases[0].name
    assert aliases[0].resolve() == run.resolve() and f"(also {aliases[0]}" in result.stdout.replace("\n", " ")
