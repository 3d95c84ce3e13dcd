"""CPU inference latency (batch 1) and throughput (batch 64) of dense networks and their weight, channel and 2:4
tickets, in torch and in onnxruntime, with file sizes.

What runs is what the export ships (:mod:`lth.tools.export`): a channel ticket as the smaller model without its
removed channels (:func:`lth.tools.export.remove_channels`); weight and 2:4 tickets as the masked dense model (no CPU
kernel skips their zeros: torch's 2:4 kernels need an NVIDIA GPU, so 2:4 is not timed on one here). Each runtime
model is exported to ONNX and run in onnxruntime (CPU provider, the same thread count as torch); its outputs are
checked against torch's, and a channel ticket's against its masked model's, before anything is timed.

- Generated tickets (``--models``: ``lenet300`` on MNIST-shaped inputs, ``resnet20`` and ``resnet18`` on CIFAR-shaped
  ones): the untrained weights pruned in one shot to each ``--remaining`` fraction (weight: global magnitude; channel:
  every group at the one rate, found by bisection, whose weights remaining come nearest, by L1 norm; 2:4: 50% by
  construction, once; a first layer whose input width is not a multiple of 4 stays dense). Latency does not depend
  on the values, only on shapes and zeros.
- Trained runs (``--run``, any granularity): round 0 and the rounds nearest to each ``--remaining``, with the test
  accuracy ``rounds.csv`` reports for them, timed on the run's test images.

Times are medians of ``--repeats`` windows of at least ``--window`` seconds; within a model every variant and engine
takes turns window by window, so load on a shared machine hits them alike. The table is printed; ``--write-docs``
writes it, with the exact command, into docs/deploy.md (``--out FILE``: into that file). Every argument and run file
is checked before anything is timed: a bad one is one line on stderr, exit code 2, and nothing written.

Usage: python scripts/bench_inference.py --run RUN_DIR [RUN_DIR ...] [--data-dir DIR] [--remaining 0.5 0.25 0.1]
       [--models lenet300 resnet20 resnet18] [--repeats 5] [--window 0.05] [--threads 1] [--write-docs | --out FILE]
"""

from __future__ import annotations

import io
import os
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from lth.core.catalog import WHOLE_CHANNELS
from lth.core.granularity import Granularity
from lth.core.masks import Mask, prunable_parameters, prune
from lth.core.structured import channel_groups, nm_keep, prune_channels, prune_nm
from lth.models import CifarResNet, LeNet300100, ResNet18
from lth.state.artifacts import round_dir
from lth.tools.cli import (
    ArgumentParser,
    command_line,
    docs_or_file,
    folder,
    integer,
    number,
    one_line_errors,
    print_and_write,
)
from lth.tools.export import (
    BENCH_BATCHES,
    build_plain,
    example_input,
    fold,
    groups_of,
    load_round,
    missing_packages,
    model_config,
    onnx_session,
    predict,
    read_config_and_rounds,
    read_test_split,
    remove_channels,
    time_calls,
    write_onnx,
)

START, END = "<!-- bench_inference:start -->", "<!-- bench_inference:end -->"
DOC = Path(__file__).resolve().parents[1] / "docs" / "deploy.md"  # what --write-docs rewrites (its section only)
MODELS = {  # name -> (label, constructor, input shape)
    "lenet300": ("LeNet-300-100", lambda: LeNet300100(1, 28, 10), (1, 28, 28)),
    "resnet20": ("ResNet-20", lambda: CifarResNet(3, 32, 10), (3, 32, 32)),
    "resnet18": ("ResNet-18", lambda: ResNet18(3, 32, 10), (3, 32, 32)),
}
ENGINES = ("torch", "onnxruntime")


@dataclass
class Variant:
    """One model to time: what it is, its runtime model, and (trained runs) its test accuracy."""

    model: str
    ticket: str
    remaining: float
    runtime: nn.Module
    accuracy: float | None = None
    sizes: dict[str, int] = field(default_factory=dict)
    times: dict[tuple[str, int], float] = field(default_factory=dict)


def weight_count(model: nn.Module) -> int:
    """Weights (not biases) of the Linear and Conv layers of ``model``."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d))


def masked(model: nn.Module, mask: Mask) -> nn.Module:
    """``model`` with the pruned weights of ``mask`` set to zero."""
    model.load_state_dict(fold(model.state_dict(), mask), strict=True)
    return model.eval()


def without_channels(model: nn.Module, groups: list, mask: Mask, example: torch.Tensor, x: torch.Tensor) -> nn.Module:
    """The masked channel ticket ``model`` without its removed channels, checked to compute the same on ``x``."""
    small, _ = remove_channels(model, groups, mask, example)
    torch.testing.assert_close(predict(small, x), predict(model, x), rtol=1e-4, atol=1e-4, msg="channels removed")
    return small.eval()


def channel_ticket(groups: list, values: dict, full: Mask, target: float) -> Mask:
    """The one-shot channel mask (every group at one rate, by L1 norm) whose weights remaining are nearest to
    ``target``: the rate is found by bisection, as a layer's weights shrink with its inputs' and outputs' channels."""
    low, high, best = 0.0, 1.0, full
    for _ in range(12):
        rate = (low + high) / 2
        mask = prune_channels(groups, values, full, rate, "layer", "l1")
        if abs(mask.weights_remaining() - target) < abs(best.weights_remaining() - target):
            best = mask
        low, high = (rate, high) if mask.weights_remaining() > target else (low, rate)
    return best


def generated(name: str, targets: list[float], x: torch.Tensor) -> list[Variant]:
    """Dense, weight, channel and 2:4 variants of model ``name`` from its untrained weights."""
    label, make, shape = MODELS[name]
    torch.manual_seed(0)
    dense = make().eval()
    params = prunable_parameters(dense)
    values = dict(dense.named_parameters())
    example = torch.zeros(1, *shape)
    groups = channel_groups(dense, params, example)
    full = Mask.ones_like(params)
    out = [Variant(label, "dense", 1.0, dense)]
    for target in targets:
        weight = prune(values, full, 0.0, target=1 - target)
        copy = make()
        copy.load_state_dict(dense.state_dict())
        out.append(Variant(label, "weight", weight.weights_remaining(), masked(copy, weight)))
    for target in targets:
        channels = channel_ticket(groups, values, full, target)
        copy = make()
        copy.load_state_dict(dense.state_dict())
        small = without_channels(masked(copy, channels), groups, channels, example, x)
        out.append(Variant(label, "channel", channels.weights_remaining(), small))
    two_four = Granularity("n:m", 2, 4)
    widths_fit = {n: p for n, p in params.items() if p[0].numel() % 4 == 0}  # a stem reading 3 channels stays dense
    nm = prune_nm(values, Mask.ones_like(widths_fit), two_four, nm_keep(two_four, 1, 1))
    copy = make()
    copy.load_state_dict(dense.state_dict())
    kept = (nm.remaining() + full.total() - nm.total()) / full.total()
    out.append(Variant(label, "2:4" if len(nm) == len(params) else "2:4 (first layer dense)", kept, masked(copy, nm)))
    return out


def trained(run: Path, data_dir: Path | None, targets: list[float]) -> tuple[list[Variant], torch.Tensor]:
    """Round 0 and the rounds of ``run`` nearest to each target, as shipped; and the run's test images."""
    cfg, rounds = read_config_and_rounds(run)
    chosen = {0: rounds[0]}
    for target in targets:
        row = min(rounds, key=lambda r: abs(r["weights_remaining"] - target))
        chosen[row["round"]] = row
    files = [load_round(run, cfg, row) for row in chosen.values()]  # every file checked before anything is timed
    x, _ = read_test_split(cfg, data_dir)
    label = f"{cfg.model_name} trained on {cfg.dataset.name} ({cfg.prune.granularity})"
    out = []
    for row, round_files in zip(chosen.values(), files, strict=True):
        model = build_plain(model_config(cfg)).eval()
        model.load_state_dict(fold(round_files.weights, round_files.mask), strict=True)
        if cfg.prune.grain.has(WHOLE_CHANNELS) and row["round"]:
            model = without_channels(model, groups_of(model, cfg), round_files.mask, example_input(cfg), x[:64])
        ticket = f"{round_dir(run, row['round']).name}, test acc {100 * row['test_acc']:.2f}%"
        out.append(Variant(label, ticket, row["weights_remaining"], model.eval(), row["test_acc"]))
    return out, x


def prepare(variants: list[Variant], x: torch.Tensor, folder: Path, threads: int) -> dict:
    """Sizes, ONNX files and checked calls ``(variant index, engine, batch) -> fn`` for every variant."""
    calls = {}
    for i, v in enumerate(variants):
        buffer = io.BytesIO()
        torch.save(v.runtime.state_dict(), buffer)
        v.sizes["pt"] = len(buffer.getvalue())
        path = folder / f"{i}.onnx"
        write_onnx(v.runtime, x[:2], path)
        v.sizes["onnx"] = path.stat().st_size
        session = onnx_session(path, threads)
        expected = predict(v.runtime, x[: max(BENCH_BATCHES)])
        got = torch.from_numpy(session.run(None, {"images": x[: max(BENCH_BATCHES)].numpy()})[0])
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4, msg=f"onnxruntime: {v.model} {v.ticket}")
        for batch in BENCH_BATCHES:
            inputs, array = x[:batch], x[:batch].numpy()
            calls[(i, "torch", batch)] = lambda m=v.runtime, b=inputs: m(b)
            calls[(i, "onnxruntime", batch)] = lambda s=session, a=array: s.run(None, {"images": a})
    return calls


def measure(variants: list[Variant], x: torch.Tensor, repeats: int, window: float, threads: int) -> None:
    """Time every variant in both engines at each batch size, all taking turns."""
    with tempfile.TemporaryDirectory() as folder:
        calls = prepare(variants, x, Path(folder), threads)
        for batch in BENCH_BATCHES:
            times = time_calls({k: fn for k, fn in calls.items() if k[2] == batch}, repeats, window)
            for (i, engine, _), seconds in times.items():
                variants[i].times[(engine, batch)] = seconds


def table(groups: list[list[Variant]]) -> str:
    """The Markdown table: ms per batch, images/s at the largest batch, speed-up over the dense model, sizes."""
    small, large = BENCH_BATCHES[0], BENCH_BATCHES[-1]
    lines = [
        f"| model | ticket | weights remaining | engine | batch {small} (ms) | batch {large} (ms) | "
        f"images/s at {large} | vs dense, batch {small} | vs dense, batch {large} | .pt (KB) | .onnx (KB) |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variants in groups:
        dense = variants[0]
        for v in variants:
            for engine in ENGINES:
                t1, t64 = v.times[(engine, small)], v.times[(engine, large)]
                d1, d64 = dense.times[(engine, small)], dense.times[(engine, large)]
                lines.append(
                    f"| {v.model} | {v.ticket} | {v.remaining:.1%} | {engine} | {1e3 * t1:.3f} | {1e3 * t64:.2f} | "
                    f"{large / t64:,.0f} | {d1 / t1:.2f}x | {d64 / t64:.2f}x | {v.sizes['pt'] / 1e3:,.0f} | "
                    f"{v.sizes['onnx'] / 1e3:,.0f} |"
                )
    return "\n".join(lines)


def parser() -> ArgumentParser:
    """The command line, every value range-checked as it is parsed; nothing is written to docs/ unless asked."""
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=folder, nargs="+", required=True, help="finished run folders (any granularity)")
    parser.add_argument("--data-dir", type=folder, help="where the runs' test sets are (default: their paths.data_dir)")
    parser.add_argument(
        "--remaining",
        type=number(0, 1, open_low=True),
        nargs="+",
        default=[0.5, 0.25, 0.1],
        help="fractions of weights remaining, each in (0, 1] (default: 0.5 0.25 0.1)",
    )
    parser.add_argument(
        "--models",
        choices=list(MODELS),
        nargs="*",
        default=list(MODELS),
        help="models whose generated tickets are timed (default: all; none: the runs only)",
    )
    parser.add_argument(
        "--repeats", type=integer(1), default=5, help="timed windows per call, median taken (default: 5)"
    )
    parser.add_argument(
        "--window", type=number(0, open_low=True), default=0.05, help="seconds per timing window (default: 0.05)"
    )
    parser.add_argument("--threads", type=integer(1), default=1, help="torch and onnxruntime CPU threads (default: 1)")
    docs_or_file(parser, DOC)
    return parser


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    """Parse ``argv``, time every variant, print the table; write it to docs/deploy.md with ``--write-docs`` or to
    ``--out``. Bad input is one line on stderr and exit code 2."""
    args = parser().parse_args(argv)
    missing = missing_packages()
    if missing:
        parser().error(f"needs {', '.join(missing)} (pip install -e '.[deploy]')")
    torch.set_num_threads(args.threads)
    runs = [trained(run, args.data_dir, args.remaining) for run in args.run]  # every run checked first
    groups = []
    for variants, x in runs:
        measure(variants, x, args.repeats, args.window, args.threads)
        groups.append(variants)
    for name in args.models:
        x = torch.randn(max(BENCH_BATCHES), *MODELS[name][2], generator=torch.Generator().manual_seed(0))
        variants = generated(name, args.remaining, x)
        measure(variants, x, args.repeats, args.window, args.threads)
        groups.append(variants)
    command = command_line("bench_inference", argv)
    text = "\n".join(
        [
            f"`{command}`",
            "",
            f"CPU ({platform.processor() or platform.machine()}), {os.cpu_count()} cores, {args.threads} thread(s) for "
            f"torch {torch.__version__} and for onnxruntime {_version('onnxruntime')}. Median of {args.repeats} "
            f"timing windows of at least {args.window} s; ms per forward pass of the whole batch. 2:4 speed on a GPU "
            "was not measured (no GPU here).",
            "",
            table(groups),
        ]
    )
    print_and_write(text, args, DOC, START, END)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main()
