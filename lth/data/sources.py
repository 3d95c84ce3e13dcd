"""Dataset sources: each reads one dataset from a folder into :class:`~lth.data.module.Splits`.

A source is ``source(root) -> Splits``; configs pick one with ``_target_`` and ``_partial_: true``.
A dataset missing offline is one line naming the folder and how to provide the files.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lth.core.errors import ConfigError
from lth.data.module import Splits

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def _idx(name: str, root: str | Path, download: bool) -> Splits:
    """An MNIST-format dataset (torchvision class ``name``) through torchvision's reader of the idx files."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, name)
    root = Path(root)
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except (RuntimeError, OSError) as error:
        reason = "download failed (offline?)" if download else "download is off"
        raise ConfigError(
            "paths.data_dir",
            f"{name} not found in {root / name / 'raw'} and {reason}; put {', '.join(IDX_FILES)} there "
            f"(optionally .gz) or pass paths.data_dir=<folder holding {name}/raw> ({type(error).__name__})",
        ) from None

    def images(ds: torchvision.datasets.MNIST) -> torch.Tensor:
        return ds.data.unsqueeze(1).float().div_(255.0)

    return Splits(images(train), train.targets.long(), images(test), test.targets.long())


def mnist(root: str | Path, download: bool = True) -> Splits:
    """MNIST through torchvision's reader, from ``root/MNIST/raw`` (the original idx files)."""
    return _idx("MNIST", root, download)


def fashion_mnist(root: str | Path, download: bool = True) -> Splits:
    """Fashion-MNIST through torchvision's reader, from ``root/FashionMNIST/raw`` (idx files, as MNIST)."""
    return _idx("FashionMNIST", root, download)


def mnist_split(root: str | Path, digits: Sequence[int] = (0, 1, 2, 3, 4), download: bool = True) -> Splits:
    """One task of split MNIST: the training and test images of ``digits`` only (from the real files, as
    :func:`mnist` reads them), labelled by their position in ``digits`` (``[5, 6, 7, 8, 9]``: 5 is label 0). The
    validation split is then held out of this task's training images, so each task has its own."""
    digits = [int(d) for d in digits]
    if len(set(digits)) != len(digits) or len(digits) < 2 or not all(0 <= d <= 9 for d in digits):
        raise ConfigError("dataset.source.digits", f"got {digits}; allowed: two or more different digits in 0..9")
    full = mnist(root, download)
    lookup = torch.full((10,), -1, dtype=torch.long)
    lookup[torch.tensor(digits)] = torch.arange(len(digits))

    def task(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep = lookup[y] >= 0
        return x[keep], lookup[y[keep]]

    return Splits(*task(full.train_x, full.train_y), *task(full.test_x, full.test_y))


def read_cifar(paths: Sequence[Path], label_key: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of CIFAR python batches: ``b"data"`` uint8 (N, 3072), channel-major 32x32 planes."""
    xs, ys = [], []
    for path in paths:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
            raise ConfigError("paths.data_dir", f"{path} is not a CIFAR python batch (no b'data' or {label_key!r})")
        xs.append(torch.from_numpy(np.ascontiguousarray(batch[b"data"], dtype=np.uint8)).view(-1, 3, 32, 32))
        ys.append(torch.as_tensor(batch[label_key], dtype=torch.long))
    return torch.cat(xs).float().div_(255.0), torch.cat(ys)


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR dataset's python batches lie and how they are labelled."""

    name: str  # as people write it, and torchvision's class name without the dash
    folder: str  # what the archive extracts to
    archive: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: bytes


CIFAR10 = CifarLayout(
    "CIFAR-10",
    "cifar-10-batches-py",
    "cifar-10-python.tar.gz",
    tuple(f"data_batch_{i}" for i in range(1, 6)),
    ("test_batch",),
    b"labels",
)
CIFAR100 = CifarLayout(
    "CIFAR-100", "cifar-100-python", "cifar-100-python.tar.gz", ("train",), ("test",), b"fine_labels"
)


def _cifar(root: str | Path, download: bool, layout: CifarLayout) -> Splits:
    """A CIFAR dataset from its python batches in ``root/<layout.folder>``, downloaded by torchvision if missing."""
    import torchvision.datasets

    root = Path(root)
    files = [root / layout.folder / f for f in (*layout.train, *layout.test)]
    reason = "download is off"
    if download and not all(f.is_file() for f in files):
        try:
            getattr(torchvision.datasets, layout.name.replace("-", ""))(str(root), train=True, download=True)
        except (RuntimeError, OSError) as error:
            reason = f"download failed (offline?) ({type(error).__name__})"
    if not all(f.is_file() for f in files):
        raise ConfigError(
            "paths.data_dir",
            f"{layout.name} not found in {root / layout.folder} and {reason}; extract {layout.archive} from "
            f"https://www.cs.toronto.edu/~kriz/cifar.html into {root} "
            f"or pass paths.data_dir=<folder holding {layout.folder}>",
        )
    train_x, train_y = read_cifar(files[: len(layout.train)], layout.label_key)
    test_x, test_y = read_cifar(files[len(layout.train) :], layout.label_key)
    return Splits(train_x, train_y, test_x, test_y)


def cifar10(root: str | Path, download: bool = True) -> Splits:
    """CIFAR-10 from ``root/cifar-10-batches-py`` (``data_batch_1..5``, ``test_batch``): 50K train, 10K test."""
    return _cifar(root, download, CIFAR10)


def cifar100(root: str | Path, download: bool = True) -> Splits:
    """CIFAR-100 (fine labels) from ``root/cifar-100-python`` (``train``, ``test``): 50K train, 10K test."""
    return _cifar(root, download, CIFAR100)


def image_folder(
    root: str | Path, name: str, image_size: int, channels: int = 3, num_classes: int | None = None
) -> Splits:
    """Your own images from ``root/name/{train,test}/<class>/*.png|jpg``, resized to ``image_size`` squared.

    Classes are the sub-folders of ``train`` in sorted order (label 0 is the first); ``test`` may hold
    fewer classes but none that ``train`` lacks.
    """
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    folder = Path(root) / name
    if not (folder / "train").is_dir() or not (folder / "test").is_dir():
        raise ConfigError(
            "paths.data_dir",
            f"image folder {folder}/train or {folder}/test not found; put one sub-folder of .png/.jpg images per "
            f"class in each, or pass paths.data_dir=<folder holding {name}/train and {name}/test>",
        )
    if channels not in (1, 3):
        raise ConfigError("dataset.channels", f"got {channels!r}; allowed for image folders: 1 (grey) or 3 (RGB)")
    classes = sorted(p.name for p in (folder / "train").iterdir() if p.is_dir())
    if num_classes is not None and len(classes) != num_classes:
        raise ConfigError(
            "dataset.num_classes", f"is {num_classes} but {folder}/train has {len(classes)} class folders"
        )
    extra = sorted({p.name for p in (folder / "test").iterdir() if p.is_dir()} - set(classes))
    if extra:
        raise ConfigError("paths.data_dir", f"{folder}/test has classes that train lacks: {', '.join(extra)}")

    def read(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for label, cls in enumerate(classes):
            class_dir = folder / split / cls
            files = sorted(class_dir.iterdir()) if class_dir.is_dir() else []
            for file in (f for f in files if f.suffix.lower() in IMAGE_EXTENSIONS):
                with Image.open(file) as image:
                    image = image.convert("L" if channels == 1 else "RGB")
                    xs.append(pil_to_tensor(image.resize((image_size, image_size), Image.Resampling.BILINEAR)))
                ys.append(label)
        if not xs:
            raise ConfigError("paths.data_dir", f"no .png/.jpg images in the class folders of {folder / split}")
        return torch.stack(xs).float().div_(255.0), torch.tensor(ys, dtype=torch.long)

    train_x, train_y = read("train")
    test_x, test_y = read("test")
    return Splits(train_x, train_y, test_x, test_y)


def synthetic(
    root: str | Path | None = None,
    train_size: int = 1200,
    test_size: int = 400,
    channels: int = 1,
    image_size: int = 28,
    num_classes: int = 10,
    signal: float = 0.3,
    seed: int = 0,
) -> Splits:
    """Noisy images around one random template per class, for tests and smoke runs.

    Each pixel is ``0.5 + signal * (template - 0.5) + N(0, 0.5^2)``: learnable in a few hundred steps, but
    not perfectly, so pruning and rewinding show up in the accuracies.
    """
    generator = torch.Generator().manual_seed(seed)
    templates = torch.rand(num_classes, channels, image_size, image_size, generator=generator)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(num_classes, (n,), generator=generator)
        x = (
            0.5
            + signal * (templates[y] - 0.5)
            + 0.5 * torch.randn(n, channels, image_size, image_size, generator=generator)
        )
        return x, y

    train_x, train_y = draw(train_size)
    test_x, test_y = draw(test_size)
    return Splits(train_x, train_y, test_x, test_y)
