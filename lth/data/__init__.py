"""Data for the runs: sources that read a dataset into tensors, and the batches that feed Lightning.

May import :mod:`lth.core`, torch, torchvision and Lightning; never :mod:`lth.run` or :mod:`lth.tools`.
"""

from lth.data.augment import Augment
from lth.data.loader import TensorBatches
from lth.data.module import ImageData, Splits

__all__ = ["Augment", "ImageData", "Splits", "TensorBatches"]
