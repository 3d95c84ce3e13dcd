"""The ``hardware`` keys, checked without importing torch or Lightning: what Lightning accepts, and what can work here.

:func:`check_values` refuses values Lightning would refuse with a traceback (devices, precision, strategy,
accelerator, nodes, threads) and, with ``machine=True``, a GPU that this machine lacks. :func:`check_hardware`
refuses the multi-process setups that cannot work (it needs to know how the job is launched). Only the branches
that ask about GPUs import torch, and only when this machine could have one.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lth.core.errors import ConfigError

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
# Lightning's precision inputs (lightning_fabric.plugins.precision.precision._PRECISION_INPUT_STR, then its aliases)
PRECISIONS = (
    "64-true",
    "32-true",
    "16-mixed",
    "bf16-mixed",
    "16-true",
    "bf16-true",
    "transformer-engine",
    "transformer-engine-float16",
)
PRECISION_ALIASES = ("64", "32", "16", "bf16", 64, 32, 16)
# Lightning strategies under which the callback's masks and rewind point stay in this process
STRATEGIES = ("auto", "single_device", "ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false")
_SEPARATE_PROCESSES = ("spawn", "fork", "notebook")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def has_gpu() -> bool:
    """Whether Lightning's ``gpu`` accelerator finds a device (CUDA or Apple's MPS).

    On Linux without NVIDIA or AMD device files the answer is no without importing torch.
    """
    if sys.platform.startswith("linux") and not (any(Path("/dev").glob("nvidia[0-9]*")) or Path("/dev/kfd").exists()):
        return False
    import torch

    return torch.cuda.is_available() or (sys.platform == "darwin" and torch.backends.mps.is_available())


def gpu_count() -> int:
    """CUDA devices of this machine (0 without importing torch where there can be none)."""
    if not has_gpu():
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 1  # MPS: one device


def _devices(value: Any, gpu: bool) -> int | None:
    """Devices per node that ``hardware.devices`` asks for: a count, or None for all of them ('auto', -1)."""
    allowed = "a positive integer, -1 or auto (every device), or a list of GPU indices such as [0,1]"
    if value == "auto":
        return None
    if _is_int(value) and (value >= 1 or value == -1 and gpu):
        return None if value == -1 else value
    if gpu and isinstance(value, Sequence) and not isinstance(value, str) and value:
        if all(_is_int(v) and v >= 0 for v in value) and len(set(value)) == len(value):
            return len(value)
    if gpu and isinstance(value, str) and value.replace(",", " ").split():
        indices = value.replace(",", " ").split()
        if all(v.isdigit() for v in indices):
            return len(indices)
    if not gpu:
        allowed = "a positive integer or auto (a CPU run has no device indices)"
    raise ConfigError("hardware.devices", f"got {value!r}; allowed: {allowed}")


def check_values(cfg: DictConfig, machine: bool = True) -> None:
    """Refuse ``hardware`` values that Lightning would refuse; with ``machine``, also devices this machine lacks."""
    hw = cfg.get("hardware")
    if not isinstance(hw, DictConfig):
        raise ConfigError("hardware", f"got {hw!r}; allowed: one of the hardware presets (hardware=cpu, gpu, ...)")
    accelerator = hw.get("accelerator", "auto")
    if accelerator not in ACCELERATORS:
        raise ConfigError("hardware.accelerator", f"got {accelerator!r}; allowed: {', '.join(ACCELERATORS)}")
    devices = hw.get("devices", 1)
    gpu = accelerator in ("gpu", "cuda", "mps")
    if accelerator == "auto":  # -1 or GPU indices mean something only if auto picks a GPU here
        plain = devices == "auto" or _is_int(devices) and devices >= 1
        gpu = has_gpu() if machine and not plain else True
    per_node = _devices(devices, gpu)
    for key in ("num_nodes", "threads"):
        value = hw.get(key, 1 if key == "num_nodes" else None)
        if value is not None or key == "num_nodes":
            if not _is_int(value) or value < 1:
                extra = " or null (torch's default)" if key == "threads" else ""
                raise ConfigError(f"hardware.{key}", f"got {value!r}; allowed: an integer >= 1{extra}")
    precision = hw.get("precision", "32-true")
    if precision not in PRECISIONS + PRECISION_ALIASES or isinstance(precision, bool):
        raise ConfigError("hardware.precision", f"got {precision!r}; allowed: {', '.join(PRECISIONS)}")
    if str(precision).startswith("transformer-engine") and importlib.util.find_spec("transformer_engine") is None:
        raise ConfigError(
            "hardware.precision",
            f"{precision} needs the transformer_engine package; allowed here: "
            + ", ".join(p for p in PRECISIONS if not p.startswith("transformer")),
        )
    strategy = hw.get("strategy", "auto")
    if not isinstance(strategy, str) or (
        strategy not in STRATEGIES and not any(w in strategy for w in _SEPARATE_PROCESSES)
    ):
        raise ConfigError("hardware.strategy", f"got {strategy!r}; allowed: {', '.join(STRATEGIES)}")
    if "rank_report" in hw and not isinstance(hw.rank_report, bool):
        raise ConfigError("hardware.rank_report", f"got {hw.rank_report!r}; allowed: true or false")
    if not machine:
        return
    if accelerator in ("gpu", "cuda") and not has_gpu():
        raise ConfigError(
            "hardware.accelerator", f"{accelerator} requested but this machine has no GPU; use hardware=cpu"
        )
    if accelerator == "mps" and not (sys.platform == "darwin" and has_gpu()):
        raise ConfigError("hardware.accelerator", "mps requested but this machine has no Apple GPU; use hardware=cpu")
    if accelerator in ("gpu", "cuda") and per_node is not None:
        count = gpu_count()
        wanted = max(devices) + 1 if isinstance(devices, Sequence) and not isinstance(devices, str) else per_node
        if wanted > count:
            raise ConfigError(
                "hardware.devices", f"got {devices!r} but this machine has {count} GPU{'s' if count != 1 else ''}"
            )


def ddp_processes(hw: Any) -> int:
    """Processes that ``hardware`` trains with, over all its machines: one per device (1 for a single device)."""
    devices = hw.devices
    if isinstance(devices, Sequence) and not isinstance(devices, str):
        per_node = len(devices)
    elif _is_int(devices) and devices > 0:
        per_node = devices
    elif isinstance(devices, str) and devices != "auto":  # "0,1": GPU indices
        per_node = len(devices.replace(",", " ").split())
    else:  # "auto" or -1: every GPU of the machine
        per_node = gpu_count() if hw.accelerator in ("auto", "gpu", "cuda") else 1
    return max(per_node, 1) * int(hw.num_nodes)


@dataclass(frozen=True)
class Launch:
    """How a job is started, for :func:`check_hardware`: by a multirun or not, and Hydra's launcher config."""

    multirun: bool = False
    launcher: Mapping = field(default_factory=dict)


def check_hardware(cfg: DictConfig, launch: Launch | None = None) -> None:
    """Refuse the multi-process setups that cannot work, before any process is started.

    ``ddp_spawn`` (and fork/notebook) train each round in new processes whose callbacks' state (masks, rewind
    point, early-stop point) never comes back. Several devices need ``ddp`` (``auto`` picks it). Lightning
    starts the other ranks by running the script again with the same arguments: inside a Hydra multirun that
    would run the sweep again for every rank, so a multirun needs a launcher that starts one process per device
    itself (submitit, ``tasks_per_node`` = ``hardware.devices``, ``nodes`` = ``hardware.num_nodes``).
    ``launch`` says how the job is started; None: not by Hydra (in-process, ``train(load_run(cfg))``).
    """
    hw = cfg.hardware
    strategy = str(hw.strategy)
    if any(word in strategy for word in _SEPARATE_PROCESSES):
        raise ConfigError(
            "hardware.strategy",
            f"{strategy} trains each round in new processes whose masks and rewind point never come back; use ddp",
        )
    processes = ddp_processes(hw)
    if processes == 1:
        return
    if strategy != "auto" and not strategy.startswith("ddp"):
        raise ConfigError("hardware.strategy", f"got {strategy!r} for {processes} devices; allowed: ddp")
    if launch is None:
        if "LOCAL_RANK" not in os.environ:  # no script to run again: only processes started by torchrun or SLURM
            raise ConfigError(
                "hardware", f"{processes} DDP processes need python train.py or torchrun, not an in-process train()"
            )
        return
    if not launch.multirun:
        return
    launcher = str(launch.launcher.get("_target_", ""))
    if "submitit" not in launcher:
        raise ConfigError(
            "hardware",
            f"{processes} DDP processes per job cannot run under the {launcher.rsplit('.', 1)[-1]} of a multirun "
            "(Lightning would rerun the sweep for each rank); use hydra/launcher=slurm or one python train.py per job",
        )
    tasks = launch.launcher.get("tasks_per_node", 1) * launch.launcher.get("nodes", 1)
    if tasks != processes:
        raise ConfigError(
            "hardware", f"{processes} DDP processes but the launcher starts {tasks} tasks; start one task per device"
        )
