"""The data layer on small files in each real format: the readers, the splits, augmentation, the epoch order,
DDP shards, resuming mid-epoch from a real Lightning checkpoint, and a run on CIFAR-10 files end to end."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from lth.config.identity import register_resolvers
from lth.core.errors import ConfigError
from lth.data import Augment, ImageData, TensorBatches, sources
from tests.conftest import typed

REPO = Path(__file__).resolve().parents[1]
CIFAR10_MEAN, CIFAR10_STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]


# -- files in the real formats ----------------------------------------------------------------------


def write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """``<prefix>-images-idx3-ubyte`` (magic 2051) and ``<prefix>-labels-idx1-ubyte`` (magic 2049), big-endian."""
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, h, w) + images.tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())


def make_idx_dataset(root: Path, name: str, n_train: int = 30, n_test: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_y": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_y": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    write_idx(root / name / "raw", "train", arrays["train_x"], arrays["train_y"])
    write_idx(root / name / "raw", "t10k", arrays["test_x"], arrays["test_y"])
    return arrays


def write_cifar_batch(path: Path, data: np.ndarray, labels: list[int], label_key: bytes) -> None:
    """One pickled batch with the keys of the real files (CIFAR-100 also has b"coarse_labels")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = {b"batch_label": b"generated", label_key: labels, b"data": data, b"filenames": [b"x.png"] * len(data)}
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [label // 5 for label in labels]
    with open(path, "wb") as f:
        pickle.dump(batch, f)


def make_cifar10(root: Path, per_batch: int = 20, n_test: int = 20) -> dict[str, np.ndarray]:
    """Five training batches and a test batch as ``cifar-10-batches-py`` holds them: uint8 rows of 3072, R G B."""
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, (5 * per_batch + n_test, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, len(data)).tolist()
    folder = root / "cifar-10-batches-py"
    for i in range(5):
        rows = slice(i * per_batch, (i + 1) * per_batch)
        write_cifar_batch(folder / f"data_batch_{i + 1}", data[rows], labels[rows], b"labels")
    write_cifar_batch(folder / "test_batch", data[5 * per_batch :], labels[5 * per_batch :], b"labels")
    return {"data": data, "labels": np.array(labels), "n_train": 5 * per_batch}


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    make_cifar10(root)
    return root


def cifar_data(root: Path, **options) -> ImageData:
    kwargs = {"val_size": 20, "batch_size": 16, "mean": CIFAR10_MEAN, "std": CIFAR10_STD, "seed": 3}
    kwargs.update(options)
    data = ImageData(lambda r: sources.cifar10(r, download=False), root, **kwargs)
    data.setup()
    return data


def attach(data: ImageData, rank: int = 0, world_size: int = 1) -> ImageData:
    """Stand in for the Trainer a datamodule sees: its device, rank and world size."""
    data.trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device("cpu")), global_rank=rank, world_size=world_size
    )
    return data


# -- readers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "folder"), [(sources.mnist, "MNIST"), (sources.fashion_mnist, "FashionMNIST")])
def test_idx_files_are_read_through_torchvision(tmp_path: Path, source, folder: str) -> None:
    arrays = make_idx_dataset(tmp_path, folder)
    splits = source(tmp_path, download=False)
    assert splits.train_x.shape == (30, 1, 28, 28) and splits.test_x.shape == (10, 1, 28, 28)
    assert splits.train_x.dtype == torch.float32 and 0 <= splits.train_x.min() and splits.train_x.max() <= 1
    assert torch.equal(splits.train_x[:, 0] * 255, torch.from_numpy(arrays["train_x"]).float())
    assert splits.train_y.tolist() == arrays["train_y"].tolist() and splits.train_y.dtype == torch.int64
    assert splits.test_y.tolist() == arrays["test_y"].tolist()


def test_cifar10_python_batches_are_read_channel_planes_first(tmp_path: Path) -> None:
    arrays = make_cifar10(tmp_path)
    splits = sources.cifar10(tmp_path, download=False)
    assert splits.train_x.shape == (100, 3, 32, 32) and splits.test_x.shape == (20, 3, 32, 32)
    image = torch.from_numpy(arrays["data"][7]).float() / 255  # red plane, then green, then blue, row-major
    assert torch.equal(splits.train_x[7, 1], image[1024:2048].view(32, 32))
    assert splits.train_y.tolist() == arrays["labels"][:100].tolist()
    assert splits.test_y.tolist() == arrays["labels"][100:].tolist()


def test_cifar100_uses_the_fine_labels(tmp_path: Path) -> None:
    data = np.random.default_rng(2).integers(0, 256, (30, 3072), dtype=np.uint8)
    fine = list(range(90, 100)) * 3
    write_cifar_batch(tmp_path / "cifar-100-python" / "train", data[:20], fine[:20], b"fine_labels")
    write_cifar_batch(tmp_path / "cifar-100-python" / "test", data[20:], fine[20:], b"fine_labels")
    splits = sources.cifar100(tmp_path, download=False)
    assert splits.train_x.shape == (20, 3, 32, 32) and splits.test_x.shape == (10, 3, 32, 32)
    assert splits.train_y.tolist() == fine[:20] and splits.test_y.tolist() == fine[20:]


def test_an_image_folder_is_resized_and_labelled_by_sorted_class(tmp_path: Path) -> None:
    colours = {"ant": (255, 0, 0), "bee": (0, 255, 0), "cat": (0, 0, 255)}
    for split, count in (("train", 3), ("test", 1)):
        for name, colour in colours.items():
            (tmp_path / "bugs" / split / name).mkdir(parents=True)
            for i in range(count):
                suffix = "png" if i % 2 == 0 else "jpg"
                Image.new("RGB", (40 + i, 24), colour).save(tmp_path / "bugs" / split / name / f"{i}.{suffix}")
    (tmp_path / "bugs" / "train" / "ant" / "notes.txt").write_text("not an image")
    splits = sources.image_folder(tmp_path, "bugs", image_size=16, num_classes=3)
    assert splits.train_x.shape == (9, 3, 16, 16) and splits.test_x.shape == (3, 3, 16, 16)
    assert splits.train_y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and splits.test_y.tolist() == [0, 1, 2]
    assert splits.train_x[0, 0].mean() > 0.95 and splits.train_x[0, 1:].max() < 0.05  # ant is red
    grey = sources.image_folder(tmp_path, "bugs", image_size=8, channels=1)
    assert grey.train_x.shape == (9, 1, 8, 8)
    with pytest.raises(ConfigError, match="dataset.num_classes: is 5 but .* has 3 class folders"):
        sources.image_folder(tmp_path, "bugs", image_size=16, num_classes=5)


@pytest.mark.parametrize(
    ("read", "expected"),
    [
        (lambda root: sources.mnist(root, download=False), "MNIST/raw"),
        (lambda root: sources.fashion_mnist(root, download=False), "FashionMNIST/raw"),
        (lambda root: sources.cifar10(root, download=False), "cifar-10-batches-py"),
        (lambda root: sources.cifar100(root, download=False), "cifar-100-python"),
        (lambda root: sources.image_folder(root, "mine", image_size=32), "mine/train"),
    ],
)
def test_a_missing_dataset_is_one_line_naming_paths_data_dir(tmp_path: Path, read, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        read(tmp_path / "empty")
    message = str(error.value)
    assert error.value.key == "paths.data_dir" and message.startswith("paths.data_dir: ")
    assert "\n" not in message and str(tmp_path / "empty" / expected) in message


# -- splits and normalisation ---------------------------------------------------------------------------


def test_the_validation_split_is_held_out_and_normalised_per_channel(cifar_root: Path) -> None:
    data = cifar_data(cifar_root)
    (train_x, train_y), (val_x, val_y), (test_x, _) = (data.splits[k] for k in ("train", "val", "test"))
    assert (len(train_x), len(val_x), len(test_x)) == (80, 20, 20)
    raw = sources.cifar10(cifar_root, download=False)
    mean, std = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    pixels = torch.cat([train_x, val_x]) * std + mean
    assert torch.allclose(pixels.sum(0), raw.train_x.sum(0), atol=1e-3)  # train + val is the training set
    assert sorted(torch.cat([train_y, val_y]).tolist()) == sorted(raw.train_y.tolist())
    assert torch.allclose(test_x * std + mean, raw.test_x, atol=1e-6)
    fitted = cifar_data(cifar_root, mean=None, std=None)
    x = fitted.splits["train"][0]
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(x.transpose(0, 1).flatten(1).std(1), torch.ones(3), atol=1e-5)


# -- augmentation -----------------------------------------------------------------------------------------


def transform_of(out: torch.Tensor, image: torch.Tensor, padding: int, fill: torch.Tensor) -> tuple[int, int, bool]:
    """Which (row offset, column offset, flip) of the padded ``image`` gives ``out``; fails if none does."""
    c, h, w = image.shape
    padded = fill.view(c, 1, 1).expand(c, h + 2 * padding, w + 2 * padding).clone()
    padded[:, padding : padding + h, padding : padding + w] = image
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            crop = padded[:, dy : dy + h, dx : dx + w]
            for flip in (False, True):
                if torch.equal(crop.flip(2) if flip else crop, out):
                    return dy, dx, flip
    raise AssertionError("not a padded crop or flip of the image")


def test_augmentation_draws_a_crop_and_flip_per_image_and_only_for_training(cifar_root: Path) -> None:
    data = cifar_data(cifar_root, augment={"crop_padding": 4, "flip": True}, batch_size=32)
    fill = (-torch.tensor(CIFAR10_MEAN) / torch.tensor(CIFAR10_STD)).float()
    loader = data.train_dataloader()
    (x, y), order = next(iter(loader)), loader.order(0)[:32]
    originals = data.splits["train"][0][order]
    assert torch.equal(y, data.splits["train"][1][order])
    transforms = [transform_of(out, image, 4, fill) for out, image in zip(x, originals, strict=True)]
    assert len(set(transforms)) > 10 and {t[2] for t in transforms} == {False, True}
    for name in ("val", "test"):
        batch_x, _ = next(iter(getattr(data, f"{name}_dataloader")()))
        assert torch.equal(batch_x, data.splits[name][0][: len(batch_x)])
    per_sample = Augment(4, True, tuple(fill.tolist())).per_sample((32, 32))
    assert len({transform_of(per_sample(image), image, 4, fill) for image in originals}) > 10
    assert cifar_data(cifar_root, augment=None).augment is None
    with pytest.raises(ConfigError, match="dataset.augment.crop"):
        cifar_data(cifar_root, augment={"crop": 4})


def test_the_torchvision_loader_is_a_dataloader_with_per_sample_augmentation(cifar_root: Path) -> None:
    data = attach(cifar_data(cifar_root, augment={"crop_padding": 4, "flip": True}, loader="torchvision"))
    train = data.train_dataloader()
    assert isinstance(train, DataLoader) and len(train) == data.batches_per_epoch() == 5
    x, y = next(iter(train))
    assert x.shape == (16, 3, 32, 32) and y.shape == (16,)
    assert any(not any(torch.equal(a, b) for b in data.splits["train"][0]) for a in x)  # augmented
    val_x, _ = next(iter(data.val_dataloader()))
    assert torch.equal(val_x, data.splits["val"][0])
    with pytest.raises(ConfigError, match="dataset.loader: got 'dali'"):
        cifar_data(cifar_root, loader="dali")


# -- epochs, shards, resuming ---------------------------------------------------------------------------


def labelled(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose label is their index, so a batch tells which samples it holds."""
    return torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous(), torch.arange(n)


def epoch_labels(loader: TensorBatches) -> list[int]:
    return torch.cat([y for _, y in loader]).tolist()


def test_each_epoch_is_a_fresh_permutation_of_the_training_set() -> None:
    loader = TensorBatches(*labelled(50), batch_size=8, shuffle=True, seed=1)
    epochs = [epoch_labels(loader) for _ in range(3)]
    assert all(sorted(e) == list(range(50)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2] and len(loader) == 7
    assert epoch_labels(TensorBatches(*labelled(50), 8, shuffle=True, seed=1)) == epochs[0]  # reproducible


@pytest.mark.parametrize("n", [60, 62])
def test_ddp_ranks_take_disjoint_equal_shards_of_one_permutation(n: int) -> None:
    world = 3
    loaders = [TensorBatches(*labelled(n), 7, shuffle=True, seed=5, rank=r, world_size=world) for r in range(world)]
    for _epoch in range(2):
        shards = [epoch_labels(loader) for loader in loaders]
        assert len({len(s) for s in shards}) == 1 and len({len(loader) for loader in loaders}) == 1
        union = set().union(*shards)
        assert sum(len(s) for s in shards) == len(union) == n - n % world  # disjoint; at most world-1 sit out
    assert epoch_labels(loaders[0]) != shards[0]


def test_the_datamodule_shards_by_the_trainers_rank(cifar_root: Path) -> None:
    data = cifar_data(cifar_root, batch_size=8)
    shards = [attach(data, rank=r, world_size=2).train_dataloader() for r in range(2)]
    assert [(s.rank, s.world_size, len(s)) for s in shards] == [(0, 2, 5), (1, 2, 5)]
    first = [torch.cat([x for x, _ in s]) for s in shards]
    assert not any(any(torch.equal(a, b) for b in first[1]) for a in first[0])
    assert data.val_dataloader().world_size == 1  # every rank evaluates the whole split


def test_a_restored_loader_continues_with_exactly_the_next_batch(cifar_root: Path) -> None:
    data = cifar_data(cifar_root, augment={"crop_padding": 4, "flip": True})
    loader = data.train_dataloader()
    list(loader)  # epoch 0
    epoch_1 = iter(loader)
    next(epoch_1), next(epoch_1)
    state = loader.state_dict()
    assert state == {"epoch": 1, "batch": 2}
    expected = list(epoch_1) + list(loader)  # the rest of epoch 1, then epoch 2
    restored = data.train_dataloader()
    restored.load_state_dict(state)
    got = list(restored) + list(restored)
    assert len(got) == len(expected) == 3 + 5
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(got, expected, strict=True))
    assert loader.state_dict() == {"epoch": 3, "batch": 0}  # an epoch drawn to its end points at the next


class Recorder(pl.LightningModule):
    """A linear classifier that records the labels of every training batch it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(3 * 32 * 32, 10)
        self.seen: list[list[int]] = []
        self.inputs: list[torch.Tensor] = []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        self.seen.append(y.tolist())
        self.inputs.append(x.clone())
        return nn.functional.cross_entropy(self.net(x.flatten(1)), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(data: ImageData, root: Path, max_steps: int, ckpt_path: Path | None = None) -> Recorder:
    module = Recorder()
    trainer = pl.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=str(root),
        callbacks=[pl.callbacks.ModelCheckpoint(dirpath=root, every_n_train_steps=1, save_top_k=-1)],
    )
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return module


@pytest.mark.filterwarnings("ignore:.*(validation_step|dirpath has changed)")
@pytest.mark.parametrize("stop", [7, 10])  # mid-epoch (epoch 1, batch 2) and at the end of epoch 1
def test_resuming_from_a_lightning_checkpoint_replays_no_batch_and_skips_none(cifar_root: Path, tmp_path, stop) -> None:
    make = lambda: cifar_data(cifar_root, augment={"crop_padding": 4, "flip": True})  # noqa: E731  5 batches an epoch
    whole = fit(make(), tmp_path / "whole", max_steps=13)
    (ckpt,) = (tmp_path / "whole").glob(f"*step={stop}.ckpt")
    saved = torch.load(ckpt, weights_only=False)["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert saved == [{"epoch": stop // 5, "batch": stop % 5}]
    resumed = fit(make(), tmp_path / "resumed", max_steps=13, ckpt_path=ckpt)
    assert resumed.seen == whole.seen[stop:]
    assert all(torch.equal(a, b) for a, b in zip(resumed.inputs, whole.inputs[stop:], strict=True))


# -- configs and a run -------------------------------------------------------------------------------------


def compose_cfg(*overrides: str):
    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=["logger=none", *overrides])


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar100", "synthetic", "image_folder"])
def test_every_dataset_config_builds_its_datamodule(name: str) -> None:
    from lth.run.build import build_data

    cfg = compose_cfg(f"dataset={name}", "dataset.num_classes=3" if name == "image_folder" else "seed=0")
    data = build_data(typed(cfg))
    assert data.loader == "memory" and data.num_workers == 0 and data.val_size == cfg.dataset.val_size
    assert data.augment_options == ({"crop_padding": 4, "flip": True} if name.startswith("cifar") else {})


def test_an_image_folder_config_reads_the_users_images(tmp_path: Path) -> None:
    from lth.run.build import build_data

    for split, count in (("train", 6), ("test", 2)):
        for label in ("a", "b"):
            (tmp_path / "mine" / split / label).mkdir(parents=True)
            for i in range(count):
                Image.new("L", (10, 12), 40 * i).save(tmp_path / "mine" / split / label / f"{i}.png")
    cfg = compose_cfg(
        "dataset=image_folder",
        "dataset.name=mine",
        "dataset.num_classes=2",
        "dataset.image_size=8",
        "dataset.channels=1",
        "dataset.val_size=2",
        "dataset.augment={crop_padding: 1, flip: true}",
        f"paths.data_dir={tmp_path}",
    )
    data = build_data(typed(cfg))
    data.setup()
    assert data.splits["train"][0].shape == (10, 1, 8, 8) and len(data.splits["val"][0]) == 2
    assert data.augment == Augment(1, True, data.augment.fill)


def test_a_run_on_cifar10_files_end_to_end(cifar_root: Path, tmp_path: Path) -> None:
    from tests.conftest import train

    cfg = compose_cfg(
        "dataset=cifar10",
        f"paths.data_dir={cifar_root}",
        f"paths.output_dir={tmp_path / 'out'}",
        "train.steps=4it",
        "train.eval_every=2it",
        "train.batch_size=16",
        "prune.rounds=1",
        "dataset.val_size=20",
        "hardware=cpu",
    )
    rows = train(cfg, run_dir=tmp_path / "run")["rounds"]
    assert [r["round"] for r in rows] == [0, 1]
    assert all(0.0 <= r["test_acc"] <= 1.0 and r["early_stop_iteration"] in (2, 4) for r in rows)
    assert rows[1]["weights_remaining"] < 1.0
