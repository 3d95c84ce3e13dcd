"""A run prints its round lines and its table, and errors stay one line, whatever the machine: a default run
(the CSV logger) and a Hugging Face model loading its weights (transformers' "Loading weights" bars and load report
kept out) print nothing else; with SLURM installed (``srun`` on PATH, as on a cluster's login node) Lightning's
multi-line ``srun`` hint is not shown, and a first run on a machine (matplotlib's font cache not built yet:
torchmetrics, which Lightning imports, imports matplotlib.pyplot) does not say so (conf/hydra/job_logging/lth.yaml).
The last is about the process (its PATH, its environment), so it starts ``python train.py``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAST, REPO, run_main


def run_with_srun(tmp_path: Path, *args: str, **env_vars: str) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="0", **env_vars)
    command = [sys.executable, str(REPO / "train.py"), *FAST, f"paths.output_dir={tmp_path / 'out'}", *args]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_run_and_a_late_error_say_nothing_of_srun(tmp_path: Path) -> None:
    done = run_with_srun(tmp_path, "prune.rounds=1", MPLCONFIGDIR=str(tmp_path / "mpl"))  # a fresh font cache
    assert done.returncode == 0, done.stderr
    assert "srun" not in done.stdout + done.stderr and "fontManager" not in done.stdout + done.stderr
    assert (tmp_path / "mpl").is_dir()  # the font cache was built in this run, silently
    (tmp_path / "mask.pt").write_bytes(b"not a mask")  # refused once the model is built: a late, one-line error
    refused = run_with_srun(tmp_path, f"prune.mask_from={tmp_path / 'mask.pt'}")
    assert refused.returncode == 2 and refused.stderr.startswith("error: prune.mask_from")
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr


def expected_output(stdout: str, rounds: int) -> None:
    """``stdout`` is a run's round lines, its table and where its results are, and nothing else."""
    number = r"[\d.]+"
    lines = stdout.splitlines()
    for k, line in enumerate(lines[: rounds + 1]):
        assert re.fullmatch(
            rf"round {k}/{rounds} \| weights remaining {number}% \| early stop it \d+ \| val acc {number}% \| "
            rf"test acc {number}% \| {number}s",
            line,
        ), lines
    table = lines[rounds + 1 :]
    assert (
        table[0] == "" and table[1].split() == "round weights remaining early stop it val acc test acc seconds".split()
    )
    assert set(table[2]) == {"-"} and [row.split()[0] for row in table[3 : 4 + rounds]] == [
        str(k) for k in range(rounds + 1)
    ]
    assert table[4 + rounds] == "" and table[5 + rounds].startswith("results: ")
    assert len(table) == 7 + rounds and table[6 + rounds].startswith("  (also ")


def test_a_default_run_prints_its_round_lines_and_its_table_only(tmp_path: Path) -> None:
    done = run_main(*FAST, "logger=csv", "prune.rounds=1", "paths.output_dir=out", cwd=tmp_path)  # the default logger
    assert done.returncode == 0 and done.stderr == "", done.stderr
    expected_output(done.stdout, rounds=1)


def test_a_hugging_face_model_loads_its_weights_without_bars_or_reports(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=28,
        patch_size=7, num_channels=1, num_labels=5,
    )  # fmt: skip
    transformers.utils.logging.disable_progress_bar()  # saving it here says nothing either
    try:
        transformers.ViTForImageClassification(config).save_pretrained(tmp_path / "vit")  # 5 classes: a new head
    finally:
        transformers.utils.logging.enable_progress_bar()
    folder = tmp_path / "vit"
    args = ["model=hf", f"model.config={folder}", f"+model.weights={folder}", "prune.rounds=1", "paths.output_dir=out"]
    done = run_main(*FAST, *args, cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr  # was: "Loading weights" bars, a LOAD REPORT
    expected_output(done.stdout, rounds=1)
