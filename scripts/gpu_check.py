"""The stacked engine on a GPU, in a few minutes (:mod:`lth.tools.stack_timing`).

Per-member round time (round 0 through the engine) of stacks of 1, 8, 32 and 128 LeNet-300-100 members (generated
MNIST-shaped data) and 1, 8, 32 Conv-2 members (generated CIFAR-shaped data) against as many separate runs (stacks of
one; Lightning runs up to 8 members), and the member-independence check there: each stack's run folders equal its
members' run alone, bit for bit.

``--cpu``: the same on the CPU in CI size (1 and 2 LeNet members, 2 Conv-2 members, a few iterations, small
splits). Prints a Markdown table (``--out FILE``: also into that file); exit code 1 when a stack was not
member-independent here, 2 a bad argument.

Usage: scripts/gpu_check.sh [--cpu] [--steps N] [--out FILE]
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

from lth.state.artifacts import write_text
from lth.tools.cli import ArgumentParser, command_line, integer, one_line_errors, output_file
from lth.tools.stack_timing import compare, table

SIZES = {"lenet300": (1, 8, 32, 128), "conv2": (1, 8, 32)}
CPU_SIZES = {"lenet300": (1, 2), "conv2": (2,)}
CPU_DATA = ["dataset.source.train_size=240", "dataset.source.test_size=120", "dataset.val_size=60"]  # CI-sized


def parser() -> ArgumentParser:
    """The command line."""
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="on the CPU, CI-sized (stacks of 1 and 2)")
    parser.add_argument("--steps", type=integer(2), default=None, help="iterations of a round (default: 200; --cpu 5)")
    parser.add_argument("--out", type=output_file, help="also write the table into this Markdown file")
    return parser


def device_line(cpu: bool) -> str:
    """The device the table was measured on, in words."""
    if cpu:
        return f"CPU ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    """Measure every size, print the table; exit 1 if a stack was not member-independent."""
    args = parser().parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("error: no GPU here (torch.cuda.is_available() is false); --cpu runs the CI-sized check", file=sys.stderr)
        raise SystemExit(2)
    steps = args.steps or (5 if args.cpu else 200)
    sizes = CPU_SIZES if args.cpu else SIZES
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, members in sizes.items():
            for n in members:
                where = Path(tmp) / f"{model}-{n}"
                light, extra = (
                    (1, ["hardware.accelerator=cpu", *CPU_DATA]) if args.cpu else (8, ["hardware.accelerator=gpu"])
                )
                rows.append(compare(model, n, steps, where, lightning_max=light, extra=extra))
    text = (
        f"`{command_line('gpu_check', argv)}` on {device_line(args.cpu)}: round 0 of {steps} iterations (batch 60, "
        f"one evaluation)\n\n{table(rows)}"
    )
    print(text)
    if args.out:
        write_text(args.out, text + "\n")
    if not all(r["independent"] for r in rows):
        print("error: a stack's run folders differ from its members' run alone on this device", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
