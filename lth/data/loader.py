"""Batches drawn by index from tensors held in memory: no per-sample Python, no worker processes.

Each epoch draws a fresh permutation from a generator seeded by ``(seed, epoch)``, so the data order is
reproducible and a position (epoch, batch) is all that is needed to resume. Under DDP every rank draws the
same permutation and takes its own equal-length slice of it. Augmentation of a batch is seeded by
``(seed, rank, epoch, batch)``, so a resumed run sees the very batches an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Dataset

from lth.core.seeds import stream
from lth.data.augment import Augment


class TensorBatches:
    """An iterable of ``(x, y)`` batches over ``x``/``y`` tensors; one ``iter()`` is one epoch.

    A new ``iter()`` starts the epoch after the last one begun, at its first batch, unless a position was
    loaded with :meth:`load_state_dict`: then it continues from exactly that batch (Lightning calls
    ``state_dict``/``load_state_dict`` of a stateful train iterable when it saves and restores a checkpoint).

    Args:
        x, y: inputs and labels, first dimension the sample.
        batch_size: samples per batch; the last batch of an epoch may be smaller.
        shuffle: draw a new permutation every epoch (seeded by ``seed`` and the epoch number).
        seed: the data-order stream.
        rank, world_size: this process's shard under DDP: ``len(x) // world_size`` samples of each epoch's
            permutation (the remainder, under ``world_size`` samples, sits out that epoch).
        augment: applied to every batch, on the batch's device.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        augment: Augment | None = None,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"{len(x)} inputs but {len(y)} labels")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.x, self.y, self.batch_size, self.shuffle, self.seed = x, y, batch_size, shuffle, seed
        self.rank, self.world_size, self.augment = rank, world_size, augment
        self.shard_size = len(x) // world_size if world_size > 1 else len(x)
        self.epoch, self.batch = 0, 0  # the position of the next batch
        self.resuming = False

    def __len__(self) -> int:
        return -(-self.shard_size // self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        """The sample order of this rank in ``epoch``."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(len(self.x), generator=generator)
        else:
            order = torch.arange(len(self.x))
        if self.world_size == 1:
            return order
        return order[self.rank : self.shard_size * self.world_size : self.world_size]

    def state_dict(self) -> dict[str, int]:
        """The position of the next batch: ``{"epoch", "batch"}``."""
        if self.batch >= len(self):
            return {"epoch": self.epoch + 1, "batch": 0}
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Make the next ``iter()`` continue from ``state`` (as :meth:`state_dict` gave it)."""
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self.resuming = True

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if not self.resuming and self.batch:
            self.epoch, self.batch = self.epoch + 1, 0
        return self._epoch(self.epoch, self.batch)

    def _epoch(self, epoch: int, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.resuming = False  # at the first batch drawn: an iterator made and dropped keeps a loaded position
        order = self.order(epoch).to(self.x.device)
        for b in range(start, len(self)):
            index = order[b * self.batch_size : (b + 1) * self.batch_size]
            x = self.x[index]
            if self.augment is not None:
                seed = stream(self.seed, f"augment/{self.rank}/{epoch}/{b}")
                x = self.augment(x, torch.Generator(device=x.device).manual_seed(seed))
            self.epoch, self.batch = epoch, b + 1
            yield x, self.y[index]


class TransformedTensors(Dataset):
    """Samples of ``x``/``y`` with a per-sample ``transform`` of ``x``, for a regular DataLoader."""

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> None:
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x[i]
        return (self.transform(x) if self.transform is not None else x), self.y[i]
