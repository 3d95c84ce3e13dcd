"""A run prints its round lines and its table, and errors stay one line, whatever the machine: with SLURM installed
(``srun`` on PATH, as on a cluster's login node) Lightning's multi-line ``srun`` hint is not shown, and a first run
on a machine (matplotlib's font cache not built yet) does not say so. The process is the point (its PATH, its
environment), so these start ``python train.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAST, REPO


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
