"""CPU inference latency and throughput of pruned networks, path by path, at batch 1 and batch 64.

Paths: ``dense`` (the plain model with the pruned weights zero: the sparsity is not used), ``shrunk`` (dead units
removed, :func:`lth.tools.export.shrink`; plain chains only), ``csr`` (every Linear layer as a ``torch.sparse`` CSR
matrix, convolutions left dense) and ``picked`` (the export's runtime path: the shrunk model where there is one,
each Linear layer dense or CSR by a quick measurement, :func:`lth.tools.export.pick_paths`). Every path's outputs are
checked against the dense path's before it is timed.

- LeNet-300-100: the rounds of a finished run (``--run``) nearest to each ``--remaining``, the weights of each
  round's early-stop point, timed on the run's real test images.
- ResNet-18 (``lth.models.ResNet18(3, 32, 10)``, 11M weights): random masks at the same sparsities on untrained
  weights and random CIFAR-shaped inputs: latency only.

The table is printed; ``--write-docs`` also writes it, with the exact command, into the benchmark section of
docs/deploy.md (``--out FILE``: into that file instead). Every argument and run file is checked before anything is
timed: a bad one is one line on stderr, exit code 2, and nothing written.

Usage: python scripts/bench_inference.py --run RUN_DIR [--data-dir DIR] [--remaining 0.21 0.07 0.02]
       [--repeats 5] [--window 0.05] [--threads 1] [--no-resnet] [--write-docs | --out FILE]
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch
from torch import nn

from lth.core.masks import prunable_parameters
from lth.models import ResNet18
from lth.run.artifacts import round_dir
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
    NotShrinkable,
    as_chain,
    build_plain,
    fold,
    load_round,
    model_config,
    pick_paths,
    predict,
    read_config_and_rounds,
    read_test_split,
    shrink,
    time_calls,
    with_csr,
)

START, END = "<!-- bench_inference:start -->", "<!-- bench_inference:end -->"
DOC = Path(__file__).resolve().parents[1] / "docs" / "deploy.md"  # what --write-docs rewrites (its section only)


def weight_count(model: nn.Module, kinds: tuple[type, ...] = (nn.Linear, nn.Conv2d)) -> int:
    """Weights (not biases) of the layers of ``kinds`` in ``model``."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, kinds))


def paths_of(model: nn.Module, example: torch.Tensor, repeats: int) -> dict[str, tuple[nn.Module, str]]:
    """``path -> (model, what it covers)`` for one sparse model; outputs checked against the dense path."""
    model = model.eval()
    total = weight_count(model)
    paths = {"dense": (model, "all weights dense, zeros included")}
    try:
        small, _ = shrink(as_chain(model))
        kept = weight_count(small) / total
        paths["shrunk"] = (small.eval(), f"{kept:.1%} of the weights left after removing dead units")
    except NotShrinkable:
        small = None
    csr = with_csr(model, example)
    paths["csr"] = (csr, f"{weight_count(model, (nn.Linear,)) / total:.2%} of the weights in CSR (Linear layers)")
    picked, choices = pick_paths(small if small is not None else model, example, repeats)
    on_csr = [c["layer"] for c in choices if c["path"] == "csr"]
    paths["picked"] = (picked, f"{'shrunk, ' if small is not None else ''}CSR: {', '.join(on_csr) or 'none'}")
    reference = predict(model, example)
    for name, (path_model, _) in paths.items():
        torch.testing.assert_close(predict(path_model, example), reference, rtol=1e-4, atol=1e-4, msg=name)
    return paths


def time_paths(
    label: str,
    remaining: float,
    model: nn.Module,
    inputs: torch.Tensor,
    repeats: int,
    window: float,
    latency_only: bool,
) -> list[dict]:
    """One row per path: seconds per batch at each of :data:`BENCH_BATCHES` (``picked`` chooses per batch size)."""
    rows: dict[str, dict] = {}
    for batch in BENCH_BATCHES:
        example = inputs[:batch]
        paths = paths_of(model, example, repeats)
        times = time_calls({name: lambda m=m, x=example: m(x) for name, (m, _) in paths.items()}, repeats, window)
        for name, (_, covers) in paths.items():
            row = rows.setdefault(name, {"model": label, "remaining": remaining, "path": name, "covers": {}})
            row["covers"][batch] = covers
            row[batch] = times[name]
    for row in rows.values():
        texts = row["covers"]
        same = len(set(texts.values())) == 1
        row["covers"] = texts[BENCH_BATCHES[0]] if same else "; ".join(f"batch {b}: {t}" for b, t in texts.items())
        row["latency_only"] = latency_only
    return list(rows.values())


def lenet_rows(run: Path, data_dir: Path | None, targets: list[float], repeats: int, window: float) -> list[dict]:
    """Rows for the rounds of ``run`` nearest to each weights-remaining target."""
    cfg, rounds = read_config_and_rounds(run)
    chosen = [min(rounds, key=lambda r: abs(r["weights_remaining"] - target)) for target in targets]
    files = [load_round(run, cfg, row) for row in chosen]  # every file checked before anything is timed
    x, _ = read_test_split(cfg, data_dir)
    out = []
    for row, round_files in zip(chosen, files, strict=True):
        model = build_plain(model_config(cfg))
        model.load_state_dict(fold(round_files.weights, round_files.mask), strict=True)
        label = f"LeNet-300-100, MNIST, {round_dir(run, row['round']).name}"
        out += time_paths(label, row["weights_remaining"], model, x, repeats, window, latency_only=False)
    return out


def resnet_rows(targets: list[float], repeats: int, window: float) -> list[dict]:
    """Rows for ResNet-18 with random masks (each weight kept with probability ``target``), untrained."""
    out = []
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(max(BENCH_BATCHES), 3, 32, 32, generator=generator)
    for target in targets:
        torch.manual_seed(0)
        model = ResNet18(3, 32, 10).eval()
        with torch.no_grad():
            params = prunable_parameters(model)
            for p in params.values():
                p.mul_(torch.rand(p.shape, generator=generator) < target)
        remaining = sum(int((p != 0).sum()) for p in params.values()) / sum(p.numel() for p in params.values())
        out += time_paths(
            "ResNet-18, CIFAR-shaped random input", remaining, model, x, repeats, window, latency_only=True
        )
    return out


def table(rows: list[dict]) -> str:
    """The Markdown table: latency per batch, images/s at the largest batch, speed-up over the dense path."""
    small, large = BENCH_BATCHES[0], BENCH_BATCHES[-1]
    lines = [
        f"| model | weights remaining | path | what the path covers | batch {small} (ms) | batch {large} (ms) | "
        f"images/s at {large} | vs dense, batch {small} | vs dense, batch {large} |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    dense = {(r["model"], r["remaining"]): r for r in rows if r["path"] == "dense"}
    for r in rows:
        base = dense[(r["model"], r["remaining"])]
        throughput = "–" if r["latency_only"] else f"{large / r[large]:,.0f}"
        lines.append(
            f"| {r['model']} | {r['remaining']:.1%} | {r['path']} | {r['covers']} | {1e3 * r[small]:.3f} | "
            f"{1e3 * r[large]:.2f} | {throughput} | {base[small] / r[small]:.2f}x | {base[large] / r[large]:.2f}x |"
        )
    return "\n".join(lines)


def parser() -> ArgumentParser:
    """The command line, every value range-checked as it is parsed; nothing is written to docs/ unless asked."""
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=folder, required=True, help="a finished LeNet-300-100 run folder")
    parser.add_argument("--data-dir", type=folder, help="where the run's test set is (default: its paths.data_dir)")
    parser.add_argument(
        "--remaining",
        type=number(0, 1, open_low=True),
        nargs="+",
        default=[0.21, 0.07, 0.02],
        help="fractions of weights remaining, each in (0, 1] (default: 0.21 0.07 0.02)",
    )
    parser.add_argument(
        "--repeats", type=integer(1), default=5, help="timed windows per path, median taken (default: 5)"
    )
    parser.add_argument(
        "--window", type=number(0, open_low=True), default=0.05, help="seconds per timing window (default: 0.05)"
    )
    parser.add_argument("--threads", type=integer(1), default=1, help="torch CPU threads (default: 1)")
    parser.add_argument("--no-resnet", action="store_true", help="skip ResNet-18")
    docs_or_file(parser, DOC)
    return parser


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    """Parse ``argv``, time every path of every model and sparsity, print the table; write it to docs/deploy.md
    with ``--write-docs`` or to ``--out``. Bad input is one line on stderr and exit code 2."""
    args = parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = lenet_rows(args.run, args.data_dir, args.remaining, args.repeats, args.window)
    if not args.no_resnet:
        rows += resnet_rows(args.remaining, args.repeats, args.window)
    command = command_line("bench_inference", argv)
    text = "\n".join(
        [
            f"`{command}`",
            "",
            f"CPU ({platform.processor() or platform.machine()}), {os.cpu_count()} cores, {torch.get_num_threads()} "
            f"torch threads, torch {torch.__version__}. Median of {args.repeats} timing windows of at least "
            f"{args.window} s per path, the paths taking turns; ms per forward pass of the whole batch.",
            "",
            table(rows),
        ]
    )
    print_and_write(text, args, DOC, START, END)


if __name__ == "__main__":
    main()
