"""Training-set augmentation: random crop after padding, and horizontal flip, drawn independently per image.

:class:`Augment` transforms a whole batch with tensor indexing on whatever device the batch is on (the
device-resident path); :meth:`Augment.per_sample` gives the same transform as torchvision transforms for
the DataLoader path. The padding is black: the normalised value of pixel 0, as torchvision's
``RandomCrop(padding=p)`` gives before ``Normalize``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from lth.core.errors import ConfigError

KEYS = ("crop_padding", "flip")


@dataclass(frozen=True)
class Augment:
    """Random ``crop_padding``-pixel translation (pad, then crop back to the image size) and random flip.

    Args:
        crop_padding: pixels of padding on each side before the random crop; 0 turns cropping off.
        flip: flip each image horizontally with probability 1/2.
        fill: per-channel value of the padding (normalised black).
    """

    crop_padding: int = 0
    flip: bool = False
    fill: tuple[float, ...] = (0.0,)

    @classmethod
    def from_config(cls, options: Mapping | None, fill: Sequence[float]) -> Augment | None:
        """The augmentation of ``dataset.augment`` (``None`` when it is null or does nothing)."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(KEYS))
        if unknown:
            raise ConfigError(f"dataset.augment.{unknown[0]}", f"unknown key; allowed: {', '.join(KEYS)}")
        padding = options.get("crop_padding") or 0
        if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
            raise ConfigError("dataset.augment.crop_padding", f"got {padding!r}; allowed: an integer >= 0")
        flip = options.get("flip") or False
        if not isinstance(flip, bool):
            raise ConfigError("dataset.augment.flip", f"got {flip!r}; allowed: true or false")
        if not padding and not flip:
            return None
        return cls(padding, flip, tuple(float(v) for v in fill))

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment the images ``x`` (N, C, H, W), each with its own crop offset and flip, without a host sync."""
        n, c, h, w = x.shape
        device, p = x.device, self.crop_padding
        if p:
            fill = torch.tensor(self.fill, dtype=x.dtype, device=device).view(1, -1, 1, 1)
            padded = fill.expand(n, c, h + 2 * p, w + 2 * p).clone()
            padded[:, :, p : p + h, p : p + w] = x
            windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # (N, C, 2p+1, 2p+1, H, W), a view
            dy, dx = torch.randint(2 * p + 1, (2, n), device=device, generator=generator)
            x = windows[torch.arange(n, device=device), :, dy, dx]
        if self.flip:
            flipped = torch.rand(n, device=device, generator=generator) < 0.5
            x = torch.where(flipped.view(n, 1, 1, 1), x.flip(3), x)
        return x

    def per_sample(self, size: tuple[int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
        """This augmentation as torchvision transforms of one (C, H, W) image of ``size``, for DataLoader workers."""
        from torchvision.transforms import v2

        steps = []
        if self.crop_padding:
            steps.append(v2.RandomCrop(size, padding=self.crop_padding, fill=list(self.fill)))
        if self.flip:
            steps.append(v2.RandomHorizontalFlip())
        return v2.Compose(steps)
