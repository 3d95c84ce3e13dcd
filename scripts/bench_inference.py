"""CPU inference latency (batch 1) and throughput (batch 64) of the files an export ships, loaded the way
docs/deploy.md says, for dense networks and their weight, channel and 2:4 tickets, with the files' sizes.

What is timed is exactly what :func:`lth.tools.export.export` writes, each file loaded as a user loads it:
``model.pt`` into the model class (``Model(...).load_state_dict(torch.load(...))``), ``shrunk.pt`` with
:func:`lth.tools.export.load_shrunk`, ``shrunk.pt2`` with ``torch.export.load(...).module()``, ``model.onnx`` in
onnxruntime (CPU provider, the same thread count as torch). Every file's outputs are checked against the masked
model's before anything is timed. "vs dense" divides the dense network's time by the file's, in the same engine
(torch: the dense ``model.pt``; onnxruntime: the dense ``model.onnx``).

- Trained runs (``--run``, any granularity): round 0 and the rounds nearest to each ``--remaining`` are exported
  into a temporary folder by the export itself, with the test accuracy ``rounds.csv`` reports for them, and timed on
  the run's test images.
- Generated tickets (``--models``: ``lenet300`` on MNIST-shaped inputs, ``resnet20`` and ``resnet18`` on CIFAR-shaped
  ones): the untrained weights pruned in one shot to each ``--remaining`` fraction (weight: global magnitude; channel:
  every group at the one rate, found by bisection, whose weights remaining come nearest, by L1 norm; 2:4: 50% by
  construction, once; a first layer whose input width is not a multiple of 4 stays dense), written by the export's
  own writers (a channel ticket as ``shrunk.pt2`` and ``model.onnx`` of the model without its removed channels, the
  others as ``model.pt`` and ``model.onnx``). Latency does not depend on the values, only on shapes and zeros.

Times are the minimum of ``--repeats`` timing windows of at least ``--window`` seconds; within a model every file
and engine takes turns window by window, so load on a shared machine hits them alike, and the load average is
printed with the table. ``--write-docs`` writes the table, with the exact command, into docs/deploy.md (``--out
FILE``: into that file). Every argument and run file is checked before anything is timed: a bad one is one line on
stderr, exit code 2, and nothing written.

Usage: python scripts/bench_inference.py [--run RUN_DIR ...] [--data-dir DIR] [--remaining 0.5 0.25 0.1]
       [--models lenet300 resnet20 resnet18] [--repeats 60] [--window 0.002] [--threads 1] [--write-docs | --out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from lth.core.granularity import Granularity
from lth.core.masks import Mask, prunable_parameters, prune
from lth.core.structured import channel_groups, nm_keep, prune_channels, prune_nm
from lth.models import CifarResNet, LeNet300100, ResNet18
from lth.state.artifacts import round_dir, save_tensors
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
    ExportOptions,
    export,
    fold,
    load_exported,
    load_round,
    load_shrunk,
    missing_packages,
    onnx_session,
    predict,
    read_config_and_rounds,
    read_test_split,
    remove_channels,
    time_calls,
    write_onnx,
    write_program,
)

START, END = "<!-- bench_inference:start -->", "<!-- bench_inference:end -->"
DOC = Path(__file__).resolve().parents[1] / "docs" / "deploy.md"  # what --write-docs rewrites (its section only)
MODELS = {  # name -> (label, constructor, input shape)
    "lenet300": ("LeNet-300-100", lambda: LeNet300100(1, 28, 10), (1, 28, 28)),
    "resnet20": ("ResNet-20", lambda: CifarResNet(3, 32, 10), (3, 32, 32)),
    "resnet18": ("ResNet-18", lambda: ResNet18(3, 32, 10), (3, 32, 32)),
}
FILES = ("model.pt", "shrunk.pt", "shrunk.pt2", "model.onnx")  # what an export ships, in the table's order
ENGINE = {  # file -> how docs/deploy.md loads it
    "model.pt": "torch (load_state_dict)",
    "shrunk.pt": "torch (load_shrunk)",
    "shrunk.pt2": "torch.export.load().module()",
    "model.onnx": "onnxruntime",
}


@dataclass
class Variant:
    """One network as shipped: what it is, the files an export wrote for it, and (trained runs) its accuracy."""

    model: str
    ticket: str
    remaining: float
    reference: nn.Module  # the masked model, what every file must compute
    files: dict[str, Path]  # file name -> the file
    rebuild: Callable[[], nn.Module] | None = None  # the model class, for model.pt (None: build it from model.yaml)
    accuracy: float | None = None
    times: dict[tuple[str, int], float] = field(default_factory=dict)


def masked(model: nn.Module, mask: Mask) -> nn.Module:
    """``model`` with the pruned weights of ``mask`` set to zero."""
    model.load_state_dict(fold(model.state_dict(), mask), strict=True)
    return model.eval()


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


def ship(model: nn.Module, example: torch.Tensor, x: torch.Tensor, where: Path, small: nn.Module | None) -> dict:
    """Write what an export writes for the masked ``model`` into ``where``: ``model.pt`` and ``model.onnx``, or for
    a channel ticket (``small``: it without its removed channels) ``shrunk.pt2`` and ``model.onnx`` of ``small``."""
    where.mkdir(parents=True)
    runtime = model if small is None else small
    files = {"model.onnx": where / "model.onnx"}
    if small is None:
        files["model.pt"] = where / "model.pt"
        save_tensors(files["model.pt"], model.state_dict())
    else:
        files["shrunk.pt2"] = where / "shrunk.pt2"
        write_program(small, example, files["shrunk.pt2"])
    write_onnx(runtime, x[:2], files["model.onnx"])
    return files


def generated(name: str, targets: list[float], x: torch.Tensor, where: Path) -> list[Variant]:
    """Dense, weight, channel and 2:4 variants of model ``name`` from its untrained weights, shipped into ``where``."""
    label, make, shape = MODELS[name]
    torch.manual_seed(0)
    dense = make().eval()
    params = prunable_parameters(dense)
    values = dict(dense.named_parameters())
    example = torch.zeros(2, *shape)
    groups = channel_groups(dense, params, example[:1])
    full = Mask.ones_like(params)
    two_four = Granularity("n:m", 2, 4)
    widths_fit = {n: p for n, p in params.items() if p[0].numel() % 4 == 0}  # a stem reading 3 channels stays dense
    nm = prune_nm(values, Mask.ones_like(widths_fit), two_four, nm_keep(two_four, 1, 1))
    masks = [("dense", full)]
    masks += [("weight", prune(values, full, 0.0, target=1 - t)) for t in targets]
    masks += [("channel", channel_ticket(groups, values, full, t)) for t in targets]
    masks.append(("2:4" if len(nm) == len(params) else "2:4 (first layer dense)", nm))
    out = []
    for i, (ticket, mask) in enumerate(masks):
        model = make()
        model.load_state_dict(dense.state_dict())
        model = masked(model, mask)
        small = remove_channels(model, groups, mask, example[:1])[0] if ticket == "channel" else None
        kept = (mask.remaining() + full.total() - mask.total()) / full.total()
        files = ship(model, example, x, where / f"{name}_{i}", small)
        out.append(Variant(label, ticket, kept, model, files, rebuild=make))
    return out


def trained(run: Path, data_dir: Path | None, targets: list[float], where: Path) -> tuple[list[Variant], torch.Tensor]:
    """Round 0 and the rounds of ``run`` nearest to each target, exported into ``where`` by the export itself; and
    the run's test images."""
    cfg, rounds = read_config_and_rounds(run)
    chosen = {0: rounds[0]}
    for target in targets:
        row = min(rounds, key=lambda r: abs(r["weights_remaining"] - target))
        chosen[row["round"]] = row
    for row in chosen.values():  # every file checked before anything is written or timed
        load_round(run, cfg, row)
    x, _ = read_test_split(cfg, data_dir)
    label = f"{cfg.model_name} trained on {cfg.dataset.name} ({cfg.prune.granularity})"
    out = []
    for index, row in chosen.items():
        shipped = where / f"{run.name}_{index}"
        export(run, ExportOptions(round_index=index, out_dir=shipped, data_dir=data_dir))
        files = {name: shipped / name for name in FILES if (shipped / name).is_file()}
        ticket = f"{round_dir(run, index).name}, test acc {100 * row['test_acc']:.2f}%"
        reference = load_exported(shipped)
        out.append(Variant(label, ticket, row["weights_remaining"], reference, files, None, row["test_acc"]))
    return out, x


def load(variant: Variant, name: str, threads: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The file ``name`` of ``variant`` loaded as docs/deploy.md says: a function of a batch of images."""
    path = variant.files[name]
    if name == "model.pt":
        if variant.rebuild is None:
            return load_exported(path.parent)  # the model class of model.yaml
        model = variant.rebuild()
        model.load_state_dict(torch.load(path, weights_only=True), strict=True)
        return model.eval()
    if name == "shrunk.pt":
        return load_shrunk(path)
    if name == "shrunk.pt2":
        return torch.export.load(path).module()
    session = onnx_session(path, threads)
    return lambda images: torch.from_numpy(session.run(None, {"images": images.numpy()})[0])


def measure(variants: list[Variant], x: torch.Tensor, repeats: int, window: float, threads: int) -> None:
    """Time every file of every variant at each batch size, all taking turns; each checked against its masked model
    first."""
    loaded = {(i, name): load(v, name, threads) for i, v in enumerate(variants) for name in v.files}
    with torch.inference_mode():
        for (i, name), fn in loaded.items():
            reference = predict(variants[i].reference, x[: max(BENCH_BATCHES)])
            got = fn(x[: max(BENCH_BATCHES)])
            torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-4, msg=f"{variants[i].ticket} {name}")
    for batch in BENCH_BATCHES:
        calls = {key: (lambda f=fn, b=x[:batch]: f(b)) for key, fn in loaded.items()}
        for (i, name), seconds in time_calls(calls, repeats, window, reduce=min).items():
            variants[i].times[(name, batch)] = seconds


def table(groups: list[list[Variant]]) -> str:
    """The Markdown table: ms per batch, images/s at the largest batch, speed-up over the dense network in the same
    engine, file size."""
    small, large = BENCH_BATCHES
    lines = [
        f"| model | ticket | weights remaining | file | loaded with | batch {small} (ms) | batch {large} (ms) | "
        f"images/s at {large} | vs dense, batch {small} | vs dense, batch {large} | file (KB) |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for variants in groups:
        dense = variants[0]
        for v in variants:
            for name in (n for n in FILES if n in v.files):
                base = "model.onnx" if name == "model.onnx" else "model.pt"
                t1, t64 = v.times[(name, small)], v.times[(name, large)]
                d1, d64 = dense.times[(base, small)], dense.times[(base, large)]
                lines.append(
                    f"| {v.model} | {v.ticket} | {v.remaining:.1%} | `{name}` | {ENGINE[name]} | {1e3 * t1:.3f} | "
                    f"{1e3 * t64:.2f} | {large / t64:,.0f} | {d1 / t1:.2f}x | {d64 / t64:.2f}x | "
                    f"{v.files[name].stat().st_size / 1e3:,.0f} |"
                )
    return "\n".join(lines)


def parser() -> ArgumentParser:
    """The command line, every value range-checked as it is parsed; nothing is written to docs/ unless asked."""
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=folder, nargs="*", default=[], help="finished run folders (any granularity)")
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
        default=[],
        help="models whose generated tickets are timed (default: none)",
    )
    parser.add_argument(
        "--repeats", type=integer(1), default=60, help="timed windows per call, minimum taken (default: 60)"
    )
    parser.add_argument(
        "--window",
        type=number(0, open_low=True),
        default=0.002,
        help="seconds per timing window, at least (default: 0.002: one call of a larger network, so the fastest "
        "window is a call that no other job interrupted)",
    )
    parser.add_argument("--threads", type=integer(1), default=1, help="torch and onnxruntime CPU threads (default: 1)")
    docs_or_file(parser, DOC)
    return parser


def header(args: argparse.Namespace, argv: list[str] | None, load: tuple[float, float]) -> str:
    """The lines above the table: the command, the machine, its load while timing, how times were taken."""
    return "\n".join(
        [
            f"`{command_line('bench_inference', argv)}`",
            "",
            f"CPU ({platform.processor() or platform.machine()}), {os.cpu_count()} cores, load average (1 min) "
            f"{load[0]:.2f} before and {load[1]:.2f} after timing; {args.threads} thread(s) for torch "
            f"{torch.__version__} and for onnxruntime {_version('onnxruntime')}. Minimum of {args.repeats} timing "
            f"windows of at least {args.window} s, every file of a network taking turns; ms per forward pass of the "
            "whole batch. 2:4 speed on a GPU was not measured (no GPU here).",
        ]
    )


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    """Parse ``argv``, time every shipped file, print the table; write it to docs/deploy.md with ``--write-docs`` or
    to ``--out``. Bad input is one line on stderr and exit code 2."""
    args = parser().parse_args(argv)
    if not args.run and not args.models:
        parser().error("argument --run: give --run RUN_DIR [...] or --models NAME [...] (or both)")
    missing = missing_packages()
    if missing:
        parser().error(f"needs {', '.join(missing)} (pip install -e '.[deploy]')")
    torch.set_num_threads(args.threads)
    load = [os.getloadavg()[0]]
    groups = []
    with tempfile.TemporaryDirectory() as scratch:
        where = Path(scratch)
        runs = [trained(run, args.data_dir, args.remaining, where) for run in args.run]  # every run checked first
        for variants, x in runs:
            measure(variants, x, args.repeats, args.window, args.threads)
            groups.append(variants)
        for name in args.models:
            x = torch.randn(max(BENCH_BATCHES), *MODELS[name][2], generator=torch.Generator().manual_seed(0))
            variants = generated(name, args.remaining, x, where)
            measure(variants, x, args.repeats, args.window, args.threads)
            groups.append(variants)
        load.append(os.getloadavg()[0])
        text = f"{header(args, argv, (load[0], load[1]))}\n\n{table(groups)}"
    print_and_write(text, args, DOC, START, END)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main()
