"""Where a run's numbers come from: the settings of this machine that change them, and what made them.

The same seed moves by a few tenths of a point between machines (floating-point order differs), and on a CPU
the number of threads changes the order of sums. So a run records the machine it trained on; a resume or a
shared round 0 never mixes two of them, and ``summary.json`` names the commit, library versions and processor.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

LIBRARIES = ("torch", "torchvision", "pytorch-lightning", "torchmetrics", "hydra-core", "omegaconf", "numpy")


def machine(accelerator: str) -> dict:
    """The settings of this process that change the trained weights: the device kind and torch's CPU threads."""
    import torch

    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    kind = "gpu" if gpu else "cpu" if accelerator == "auto" else accelerator
    return {"accelerator": kind, "threads": torch.get_num_threads()}


def _processor() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _commit() -> str | None:
    repo = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}{'+changes' if dirty else ''}"


def provenance(accelerator: str) -> dict:
    """The commit, library versions, processor and :func:`machine` settings of this process (no host names)."""
    import torch

    versions = {"python": sys.version.split()[0]}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "commit": _commit(),
        "versions": versions,
        "processor": _processor(),
        "gpu": device,
        "machine": machine(accelerator),
    }
