"""``dataset=mnist_split``: MNIST split by label into tasks (digits 0-4, digits 5-9), each with its own validation
and test images from the real files, and a ticket found on one task transferred to the other (``prune.mask_from``).
Generated idx files in the real format stand in for MNIST."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lth.config.command_line import check_command_line
from lth.core.errors import ConfigError
from lth.run.build import build_data
from tests.conftest import train, typed
from tests.test_data import write_idx

N_TRAIN, N_TEST = 400, 100
SMALL = ["train.steps=20it", "train.eval_every=10it", "train.batch_size=20", "dataset.val_size=40", "logger=none"]


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """``MNIST/raw`` with images whose every pixel is its digit times 20 (so a label can be read off an image)."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        y = rng.integers(0, 10, n, dtype=np.uint8)
        x = np.repeat((y * 20)[:, None, None], 28, axis=1).repeat(28, axis=2).astype(np.uint8)
        write_idx(root / "MNIST" / "raw", prefix, x, y)
        arrays[prefix] = y
    return root, arrays


def split(make_cfg, root: Path, *overrides: str):
    data = build_data(typed(make_cfg("dataset=mnist_split", f"paths.data_dir={root}", *SMALL, *overrides)))
    data.setup()
    return data


@pytest.mark.parametrize("digits", [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
def test_each_task_holds_its_digits_only_labelled_by_position(make_cfg, mnist_root, digits) -> None:
    root, arrays = mnist_root
    data = split(make_cfg, root, f"dataset.source.digits=[{','.join(map(str, digits))}]")
    train_x, train_y = data.splits["train"]
    val_x, val_y = data.splits["val"]
    test_x, test_y = data.splits["test"]
    assert len(train_y) + len(val_y) == int(np.isin(arrays["train"], digits).sum())  # the task's training images
    assert len(val_y) == 40 and len(test_y) == int(np.isin(arrays["t10k"], digits).sum())
    for x, y in ((train_x, train_y), (val_x, val_y), (test_x, test_y)):
        assert set(y.tolist()) <= set(range(5))
        pixel = x[:, 0, 0, 0] * data.std[0] + data.mean[0]  # the normalisation undone
        digit = torch.round(pixel * 255 / 20).long()
        assert torch.equal(digit, torch.tensor(digits)[y])  # label k is the k-th digit of the list


def test_a_ticket_of_one_task_transfers_to_the_other(make_cfg, mnist_root, tmp_path: Path) -> None:
    root, _ = mnist_root
    task = ["dataset=mnist_split", f"paths.data_dir={root}", *SMALL, "model.hidden=[30,10]"]
    source = Path(train(make_cfg(*task, "prune.rounds=1", "prune.rate=0.5"), run_dir=tmp_path / "a")["run_dir"])
    other = [*task, "dataset.source.digits=[5,6,7,8,9]", "prune.rounds=0", f"prune.mask_from={source}@1"]
    moved = Path(train(make_cfg(*other), run_dir=tmp_path / "b")["run_dir"])
    ticket, transferred = (torch.load(p / f"round_{k:02d}" / "mask.pt") for p, k in ((source, 1), (moved, 0)))
    assert all(torch.equal(ticket[n], transferred[n]) for n in ticket)
    control = Path(train(make_cfg(*other, "prune.control=random_prune"), run_dir=tmp_path / "c")["run_dir"])
    drawn = torch.load(control / "round_00" / "mask.pt")
    assert all(int(drawn[n].sum()) == int(ticket[n].sum()) for n in ticket)  # as many per layer, other weights
    assert any(not torch.equal(drawn[n], ticket[n]) for n in ticket)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("dataset.source.digits=[3,3]", "dataset.source.digits"),
        ("dataset.source.digits=[4]", "dataset.source.digits"),
        ("dataset.source.digits=[1,12]", "dataset.source.digits"),
        ("dataset.source.digits=[5,6,7]", "dataset.num_classes"),
    ],
)
def test_bad_digits_are_one_line_before_anything_runs(tmp_path: Path, override: str, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        check_command_line(["dataset=mnist_split", override, f"paths.output_dir={tmp_path}"])
    assert error.value.key == key and "\n" not in str(error.value)
    assert not (tmp_path / "runs").exists()
