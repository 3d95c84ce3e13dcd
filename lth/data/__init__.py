"""Data for the runs: sources that read a dataset into tensors, and the batches that feed Lightning."""

from lth.data.augment import Augment
from lth.data.loader import TensorBatches
from lth.data.module import ImageData, Splits

__all__ = ["Augment", "ImageData", "Splits", "TensorBatches"]
