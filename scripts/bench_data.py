"""Batches per second of the device-resident loader against the torchvision DataLoader, side by side.

Both paths are the ones a run uses (``ImageData`` with ``dataset.loader=memory`` or ``torchvision``), on
generated MNIST-shaped images (no augmentation) and CIFAR-shaped images (random crop with 4-pixel padding and
flip). The loaders take turns, one timing window each, in one process; the table gives the median window.
It is printed and written into the benchmark section of docs/data.md with the exact command.

Usage: python scripts/bench_data.py [--samples 10000] [--batches 100] [--repeats 3] [--workers 0 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import torch

from lth.artifacts import write_section
from lth.data import ImageData
from lth.data.sources import synthetic

START, END = "<!-- bench_data:start -->", "<!-- bench_data:end -->"
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
        val_size=100,
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


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv``, run the alternating timing windows, print the table and write it to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=10000, help="training images per shape (default: 10000)")
    parser.add_argument("--batch-size", type=int, default=128, help="default: 128")
    parser.add_argument("--batches", type=int, default=100, help="batches per timing window (default: 100)")
    parser.add_argument("--repeats", type=int, default=3, help="timed windows per loader (default: 3)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers (default: 0 2)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="default: cuda if any")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=Path("docs/data.md"), help="default: docs/data.md; '-' for none")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
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

    command = shlex.join(["python", "scripts/bench_data.py", *(sys.argv[1:] if argv is None else argv)])
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
    print(text)
    if str(args.out) != "-":
        write_section(args.out, text, START, END)
        print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
