"""The LightningDataModule of a run: a source's tensors, normalised, split into train/val/test batches.

Two loaders, picked by ``dataset.loader``: ``memory`` (the default) holds each split as tensors on the device
the Trainer uses and draws batches by index (:class:`~lth.data.loader.TensorBatches`), augmenting whole
batches there; ``torchvision`` is the usual path, a DataLoader with per-sample transforms in worker
processes, kept to compare against. Only the training split is augmented. With the ``memory`` loader a round
rewound to iteration k continues round 0's data order from k (as open_lth does); the ``torchvision`` loader
starts every round at its first batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from lth.core.errors import ConfigError
from lth.data.augment import Augment
from lth.data.loader import TensorBatches, TransformedTensors

LOADERS = ("memory", "torchvision")


@dataclass
class Splits:
    """A dataset read into memory: images as float (N, C, H, W) in [0, 1], labels as int64 (N,)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def channel_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of images ``x`` (N, C, H, W)."""
    pixels = x.transpose(0, 1).flatten(1)
    return pixels.mean(1).tolist(), pixels.std(1).tolist()


class ImageData(pl.LightningDataModule):
    """Train/val/test batches of a source, the validation split held out of the training set by a fixed seed.

    Args:
        source: ``source(root)`` reads the dataset from ``root`` into :class:`Splits`.
        root: the data folder (``paths.data_dir``).
        val_size: training samples held out for validation (early stopping).
        batch_size: training batch size (per process under DDP, where each rank draws its own shard);
            evaluation uses ``eval_batch_size`` and, under DDP, every rank evaluates the whole split.
        mean, std: per-channel normalisation; ``None``: the statistics of the training split.
        seed: data-order stream (shuffling and augmentation).
        split_seed: the stream that draws the validation split (default: ``seed``); kept apart so that another
            data order (``data_seed``) trains on the same training set.
        augment: ``dataset.augment`` (``crop_padding``, ``flip``) for the training split; ``None``: none.
        loader: ``memory`` (device-resident tensors) or ``torchvision`` (DataLoader, per-sample transforms).
        num_workers: DataLoader worker processes of the ``torchvision`` loader.
        accumulate: batches per optimiser step (an iteration), to find where iteration k's batch is.
    """

    def __init__(
        self,
        source: Callable[[Path], Splits],
        root: str | Path,
        val_size: int,
        batch_size: int,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
        seed: int = 0,
        split_seed: int | None = None,
        eval_batch_size: int = 1000,
        augment: Mapping | None = None,
        loader: str = "memory",
        num_workers: int = 0,
        accumulate: int = 1,
    ) -> None:
        super().__init__()
        if loader not in LOADERS:
            raise ConfigError("dataset.loader", f"got {loader!r}; allowed: {', '.join(LOADERS)}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError("dataset.num_workers", f"got {num_workers!r}; allowed: an integer >= 0")
        self.source, self.root = source, Path(root)
        self.val_size, self.batch_size, self.eval_batch_size = val_size, batch_size, eval_batch_size
        self.mean = None if mean is None else list(mean)
        self.std = None if std is None else list(std)
        self.seed, self.augment_options = seed, dict(augment or {})
        self.split_seed = seed if split_seed is None else split_seed
        self.loader, self.num_workers, self.accumulate = loader, num_workers, accumulate
        self.augment: Augment | None = None
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        self.start_iteration = 0  # the data order of the next fit continues from this iteration of round 0's

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        data = self.source(self.root)
        if not 1 <= self.val_size < len(data.train_x):
            raise ConfigError(
                "dataset.val_size", f"must be in [1, {len(data.train_x) - 1}] for {len(data.train_x)} training images"
            )
        order = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(self.split_seed))
        val, train = order[: self.val_size], order[self.val_size :]
        if self.mean is None or self.std is None:
            mean, std = channel_stats(data.train_x[train])
            self.mean, self.std = self.mean or mean, self.std or std
        channels = data.train_x.shape[1]
        for key, values in (("dataset.mean", self.mean), ("dataset.std", self.std)):
            if len(values) != channels:
                raise ConfigError(key, f"has {len(values)} channels, the images have {channels}")
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        norm = lambda x: ((x - mean) / std).contiguous()  # noqa: E731
        self.augment = Augment.from_config(self.augment_options, fill=(-mean / std).flatten().tolist())
        self.splits = {
            "train": (norm(data.train_x[train]), data.train_y[train]),
            "val": (norm(data.train_x[val]), data.train_y[val]),
            "test": (norm(data.test_x), data.test_y),
        }

    def batches_per_epoch(self, world_size: int = 1) -> int:
        """Training batches per epoch of one rank (:func:`lth.run.build.iterations_per_epoch`, what ``ep`` means in
        a Step, divides them by the accumulation): under DDP each of the ``world_size`` ranks draws its own shard, so
        an epoch is ``1/world_size`` of the single-process batches."""
        self.setup()
        x, y = self.splits["train"]
        if self.loader == "torchvision":  # Lightning's DistributedSampler pads every shard to ceil(n / world_size)
            shard = -(-len(x) // world_size)
            return -(-shard // self.batch_size)
        return len(TensorBatches(x, y, self.batch_size, world_size=world_size))

    def device(self) -> torch.device:
        """Where batches are used: the attached Trainer's device, else the CPU."""
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The tensors of split ``name``; on the Trainer's device for the ``memory`` loader (moved once)."""
        if self.loader == "memory" and self.splits["train"][0].device != self.device():
            device = self.device()
            self.splits = {k: (x.to(device), y.to(device)) for k, (x, y) in self.splits.items()}
        return self.splits[name]

    def train_dataloader(self) -> TensorBatches | DataLoader:
        x, y = self.split("train")
        if self.loader == "torchvision":
            transform = self.augment.per_sample(tuple(x.shape[-2:])) if self.augment is not None else None
            return self._dataloader(TransformedTensors(x, y, transform), self.batch_size, shuffle=True)
        rank, world_size = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        batches = TensorBatches(
            x, y, self.batch_size, shuffle=True, seed=self.seed, rank=rank, world_size=world_size, augment=self.augment
        )
        if self.start_iteration:  # a round rewound to iteration k sees the batches round 0 saw from k on
            epoch, step = divmod(self.start_iteration, -(-len(batches) // self.accumulate))
            batches.load_state_dict({"epoch": epoch, "batch": step * self.accumulate})
        return batches

    def val_dataloader(self) -> TensorBatches | DataLoader:
        return self._eval_dataloader("val")

    def test_dataloader(self) -> TensorBatches | DataLoader:
        return self._eval_dataloader("test")

    def _eval_dataloader(self, name: str) -> TensorBatches | DataLoader:
        x, y = self.split(name)
        if self.loader == "torchvision":
            return self._dataloader(TransformedTensors(x, y), self.eval_batch_size, shuffle=False)
        return TensorBatches(x, y, self.eval_batch_size)

    def _dataloader(self, dataset: TransformedTensors, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.device().type == "cuda",
        )
