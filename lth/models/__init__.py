"""The model zoo. Every model is built as ``Model(in_channels=, image_size=, num_classes=, **options)``.

The dataset config supplies the first three, so one model config works on every dataset it can take; a
model that cannot take a dataset's images raises a one-line :class:`~lth.errors.ConfigError`.
"""

from lth.models.lenet import LeNet300100

__all__ = ["LeNet300100"]
