"""Batches per second of the device-resident loader against the torchvision DataLoader, side by side.

Both paths are the ones a run uses (``ImageData`` with ``dataset.loader=memory`` or ``torchvision``), on
generated MNIST-shaped images (no augmentation) and CIFAR-shaped images (random crop with 4-pixel padding and
flip). The loaders take turns, one timing window each, in one process; the table gives the median window.
It is printed; ``--write-docs`` also writes it, with the exact command, into the benchmark section of docs/data.md
(``--out FILE``: into that file instead). A bad argument is one line on stderr, exit code 2, and nothing written.

Usage: python scripts/bench_data.py [--samples 10000] [--batches 100] [--repeats 3] [--workers 0 2] [--device cpu]
       [--threads 1] [--write-docs | --out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import torch

from lth.core.errors import ConfigError
from lth.data import ImageData
from lth.data.sources import synthetic
from lth.tools.cli import ArgumentParser, command_line, docs_or_file, integer, one_line_errors, print_and_write

START, END = "<!-- bench_data:start -->", "<!-- bench_data:end -->"
DOC = Path(__file__).resolve().parents[1] / "docs" / "data.md"  # what --write-docs rewrites (its section only)
VAL_SIZE = 100
SHAPES = {  # name: (channels, image size, augment)
    "MNIST-shaped 1x28x28": (1, 28, None),
    "CIFAR-shaped 3x32x32 + crop/flip": (3, 32, {"crop_padding": 4, "flip": True}),
}


def datamodule(shape: str, loader: str, samples: int, batch_size: int, workers: int, device: torch.device) -> ImageData:
    """The datamodule of a run over generated images, attached to a stand-in for the Trainer's device."""
    channels, size, augment = SHAPES[shape]
    data = ImageData(
        lambda root: synthetic(root, samples, 100, channels, size, seed=0),
        root=".",
        val_size=VAL_SIZE,
        batch_size=batch_size,
        mean=None,
        std=None,
        augment=augment,
        loader=loader,
        num_workers=workers,
    )
    data.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=device), global_rank=0, world_size=1)
    data.setup()
    return data


def forever(data: ImageData, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Training batches on ``device``, epoch after epoch, as the training loop receives them."""
    loader = data.train_dataloader()
    while True:
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def window(batches: Iterator, count: int, device: torch.device) -> float:
    """Batches per second over ``count`` batches."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(count):
        next(batches)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return count / (time.perf_counter() - start)


def table(results: dict[tuple[str, str], list[float]], batch_size: int) -> str:
    """The Markdown table: batches/s (median, range), images/s, the ratio to the first torchvision row of a shape."""
    lines = [
        "| data | loader | batches/s (median) | min–max | images/s | vs torchvision, 0 workers |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for shape in SHAPES:
        rows = {loader: rates for (s, loader), rates in results.items() if s == shape}
        base = statistics.median(next(v for k, v in rows.items() if k.startswith("torchvision")))
        for loader, rates in rows.items():
            rate = statistics.median(rates)
            lines.append(
                f"| {shape} | {loader} | {rate:,.0f} | {min(rates):,.0f}–{max(rates):,.0f} | "
                f"{rate * batch_size:,.0f} | {rate / base:.1f}x |"
            )
    return "\n".join(lines)


def device_of(text: str) -> torch.device:
    """An argument type: a torch device that exists here (``cpu``, ``cuda``, ``cuda:1``)."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"got {text!r}, but there is no CUDA device here; allowed: cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"got {text!r}; this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: cpu, cuda or cuda:N")
    return device


def parser() -> ArgumentParser:
    """The command line, every value range-checked as it is parsed; nothing is written to docs/ unless asked."""
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=integer(1), default=10000, help="training images per shape (default: 10000)")
    parser.add_argument("--batch-size", type=integer(1), default=128, help="default: 128")
    parser.add_argument("--batches", type=integer(1), default=100, help="batches per timing window (default: 100)")
    parser.add_argument("--repeats", type=integer(1), default=3, help="timed windows per loader (default: 3)")
    parser.add_argument(
        "--workers", type=integer(0), nargs="+", default=[0, 2], help="DataLoader workers (default: 0 2)"
    )
    parser.add_argument(
        "--device",
        type=device_of,
        default=torch.device("cuda" if torch.cuda.is_available() else "cpu"),
        help="default: cuda if any",
    )
    parser.add_argument("--threads", type=integer(1), help="torch CPU threads, >= 1 (default: torch's)")
    docs_or_file(parser, DOC)
    return parser


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    """Parse ``argv``, run the alternating timing windows, print the table; write it to docs/data.md with
    ``--write-docs`` or to ``--out``. Bad input is one line on stderr and exit code 2."""
    args = parser().parse_args(argv)
    if args.samples < VAL_SIZE + args.batch_size:
        raise ConfigError(
            "--samples",
            f"got {args.samples}; allowed: at least {VAL_SIZE + args.batch_size} "
            f"({VAL_SIZE} validation images and one batch of --batch-size {args.batch_size})",
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    loaders = [("memory", 0)] + [("torchvision", w) for w in args.workers]
    streams = {
        (shape, f"{loader}, {workers} workers" if loader == "torchvision" else "memory (device-resident)"): forever(
            datamodule(shape, loader, args.samples, args.batch_size, workers, device), device
        )
        for shape in SHAPES
        for loader, workers in loaders
    }
    for batches in streams.values():  # warm up: worker start, first epoch's permutation, caches
        window(batches, max(args.batches // 4, 1), device)
    results: dict[tuple[str, str], list[float]] = {key: [] for key in streams}
    for _ in range(args.repeats):
        for key, batches in streams.items():
            results[key].append(window(batches, args.batches, device))

    command = command_line("bench_data", argv)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    text = "\n".join(
        [
            f"`{command}`",
            "",
            f"Device: {device} ({name}), {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}. Batch size {args.batch_size}, {args.samples} generated training images per "
            f"shape, median of {args.repeats} alternating windows of {args.batches} batches.",
            "",
            table(results, args.batch_size),
        ]
    )
    print_and_write(text, args, DOC, START, END)


if __name__ == "__main__":
    main()
