"""Several processes training together (DDP): which setups work, starting the ranks, and rank 0's decisions.

Under DDP every rank runs :func:`lth.run.train` and its loop. Rank 0 makes each decision that reads files and
hands it to the others (:func:`shared`); only rank 0 writes outputs and logs results (:func:`is_rank_zero`).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_only

from lth.errors import ConfigError

T = TypeVar("T")


def ddp_processes(hw: DictConfig) -> int:
    """Processes that ``hardware`` trains with, over all its machines: one per device (1 for a single device)."""
    devices = hw.devices
    if isinstance(devices, Sequence) and not isinstance(devices, str):
        per_node = len(devices)
    elif isinstance(devices, int) and devices > 0:
        per_node = devices
    else:  # "auto" or -1: every GPU of the machine
        per_node = torch.cuda.device_count() if hw.accelerator in ("auto", "gpu", "cuda") else 1
    return max(per_node, 1) * int(hw.get("num_nodes", 1))


def check_hardware(cfg: DictConfig) -> None:
    """Refuse the multi-process setups that cannot work, before any process is started.

    ``ddp_spawn`` (and fork/notebook) train each round in new processes whose callbacks' state (masks, rewind
    point, early-stop point) never comes back. Several devices need ``ddp`` (``auto`` picks it). Lightning
    starts the other ranks by running the script again with the same arguments: inside a Hydra multirun that
    would run the sweep again for every rank, so a multirun needs a launcher that starts one process per device
    itself (submitit, ``tasks_per_node`` = ``hardware.devices``, ``nodes`` = ``hardware.num_nodes``).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hw = cfg.hardware
    strategy = str(hw.strategy)
    if any(word in strategy for word in ("spawn", "fork", "notebook")):
        raise ConfigError(
            "hardware.strategy",
            f"{strategy} trains each round in new processes whose masks and rewind point never come back; use ddp",
        )
    processes = ddp_processes(hw)
    if processes == 1:
        return
    if strategy != "auto" and not strategy.startswith("ddp"):
        raise ConfigError("hardware.strategy", f"got {strategy!r} for {processes} devices; allowed: ddp")
    if not HydraConfig.initialized():
        if "LOCAL_RANK" not in os.environ:  # no script to run again: only processes started by torchrun or SLURM
            raise ConfigError("hardware", f"{processes} DDP processes need python train.py or torchrun, not train(cfg)")
        return
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return
    launcher = str(hydra_cfg.launcher.get("_target_", ""))
    if "submitit" not in launcher:
        raise ConfigError(
            "hardware",
            f"{processes} DDP processes per job cannot run under the {launcher.rsplit('.', 1)[-1]} of a multirun "
            "(Lightning would rerun the sweep for each rank); use hydra/launcher=slurm or one python train.py per job",
        )
    tasks = hydra_cfg.launcher.get("tasks_per_node", 1) * hydra_cfg.launcher.get("nodes", 1)
    if tasks != processes:
        raise ConfigError(
            "hardware", f"{processes} DDP processes but the launcher starts {tasks} tasks; start one task per device"
        )


def start_ranks(cfg: DictConfig) -> None:
    """Under DDP, start this machine's other ranks now and join all ranks in one process group.

    Lightning's launcher runs the whole script again for each other rank (with Hydra's run folder), so every
    rank runs :func:`train` from the top. Starting them before anything is read lets rank 0 make each decision
    that depends on files and hand it on (:func:`shared`); every later Trainer reuses the group. Processes
    started by torchrun or SLURM only join the group; those of submitit's local executor are given torch's
    variables first (Lightning reads SLURM's itself).
    """
    hw = cfg.hardware
    if torch.distributed.is_initialized() or not (str(hw.strategy).startswith("ddp") or ddp_processes(hw) > 1):
        return
    if os.environ.get("SUBMITIT_EXECUTOR") == "local" and "LOCAL_RANK" not in os.environ:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    from lightning_fabric import Fabric

    Fabric(accelerator=hw.accelerator, devices=hw.devices, num_nodes=hw.get("num_nodes", 1), strategy="ddp").launch()
    atexit.register(_close_group)  # a process that exits with the gloo group open aborts ("terminate called")


def _close_group() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def world_size() -> int:
    """Processes training together: the DDP ranks, or 1."""
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1


def is_rank_zero() -> bool:
    """Whether this process is global rank 0 (the one that writes outputs); true without DDP."""
    return rank_zero_only.rank == 0


def shared(compute: Callable[[], T]) -> T:
    """``compute()`` on rank 0, its result (or its error) handed to every rank: for decisions that read files."""
    if world_size() == 1:
        return compute()
    outcome: list = [(None, None)]
    if is_rank_zero():
        try:
            outcome[0] = (compute(), None)
        except Exception as error:  # noqa: BLE001 - raised on every rank below
            outcome[0] = (None, error)
    torch.distributed.broadcast_object_list(outcome, src=0)
    value, error = outcome[0]
    if error is not None:
        raise error
    return value
