"""``python train.py --help`` is a page that fits the terminal: the usage, the config groups, the keys set most (as
the command's overrides set them) and where the rest is (``--help keys``: every key), wrapped to the terminal's width.
(That ``--help`` imports no torch: tests/test_bad_input.py, in a fresh process.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from lth.config.help import COMMON_KEYS, rows
from lth.config.schema import KEYS
from tests.conftest import run_main


def help_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, columns: int, *args: str) -> list[str]:
    monkeypatch.setenv("COLUMNS", str(columns))  # what shutil.get_terminal_size reads first
    done = run_main(*args, cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return done.stdout.splitlines()


@pytest.mark.parametrize("columns", [80, 120, 50])
def test_help_is_a_page_as_wide_as_the_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, columns: int) -> None:
    lines = help_output(tmp_path, monkeypatch, columns, "--help")
    assert max(len(line) for line in lines) <= columns
    assert len(lines) <= {50: 100, 80: 60, 120: 45}[columns]  # was 216 lines, the first ones 349 characters long
    text = "\n".join(lines)
    assert lines[0].startswith("usage: python train.py")
    for group in ("model=", "dataset=", "prune=", "hardware=", "logger=", "experiment=", "hydra/launcher="):
        assert f"  {group}" in text, group
    assert "lenet300*" in text and "mnist*" in text  # the options this command chooses
    for key in COMMON_KEYS:
        assert f"  {key}=" in text, key
    words = text.split()
    assert "prune.rate=0.2" in words and "train.steps=8000it" in words
    assert "--help keys" in text and "README.md" in text
    assert "== Config ==" not in text and "|---" not in text  # neither Hydra's config dump nor a Markdown table


def test_help_shows_the_values_the_command_sets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "\n".join(help_output(tmp_path, monkeypatch, 80, "experiment=lenet_mnist", "prune.rate=0.3", "--help"))
    assert {"prune.rate=0.3", "train.steps=50000it"} <= set(text.split())  # the experiment's length
    assert "lenet_mnist*" in text
    sweep = "\n".join(help_output(tmp_path, monkeypatch, 80, "-m", "prune.rate=0.1,0.3", "--help"))
    assert "prune.rate=0.1" in sweep.split()  # a sweep: its first job's values
    refused = run_main("model=nope", "--help", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.startswith("error: model: no option 'nope'")


def test_help_keys_lists_every_key_wrapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = help_output(tmp_path, monkeypatch, 80, "--help", "keys")
    assert max(len(line) for line in lines) <= 80
    starts = {line.partition(":")[0] for line in lines if line and not line.startswith(" ")}
    assert {entry.key for entry in KEYS} <= starts
    text = "\n".join(lines)
    assert "train.steps: 8000it" in text and "optim.optimizer.momentum: 0.9 under optim=sgd" in text


def test_two_columns_wrap_and_fall_back_to_one_when_narrow() -> None:
    pairs = [("short", "word " * 30), ("a.rather.long.key.name.that.does.not.fit=1", "what it does")]
    wide = rows(pairs, 80)
    assert all(len(line) <= 80 for line in wide)
    assert wide[0].startswith("  short" + " " * 27 + "word") and wide[1].startswith(" " * 34 + "word")  # a column
    assert any(line == "      what it does" for line in wide)  # the long left text: its right text below it
    narrow = rows(pairs, 40)
    assert all(len(line) <= 40 for line in narrow) and narrow[0] == "  short"
