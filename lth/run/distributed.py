"""Several processes training together (DDP): starting the ranks, and rank 0's decisions.

Under DDP every rank runs :func:`lth.run.loop.train` and its loop. Rank 0 makes each decision that reads files and
hands it to the others (:func:`shared`); only rank 0 writes outputs and logs results (:func:`is_rank_zero`).
Which setups can work is checked, without torch, by :mod:`lth.config.hardware` (re-exported here).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from typing import TypeVar

import torch
from pytorch_lightning.utilities import rank_zero_only

from lth.config.hardware import ddp_processes
from lth.config.run import RunConfig, thawed

T = TypeVar("T")

__all__ = ["ddp_processes", "is_rank_zero", "shared", "start_ranks", "world_size"]


def start_ranks(cfg: RunConfig) -> None:
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

    Fabric(accelerator=hw.accelerator, devices=thawed(hw.devices), num_nodes=hw.num_nodes, strategy="ddp").launch()
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
