"""Instability analysis of a finished run (Frankle et al. 2020): for the dense network and each round's ticket, train
two copies from the rewind point on two data orders and measure the error barrier on the linear path between them.

Usage: python scripts/instability.py <run folder> [--rounds 0 2] [--data-seeds 1 2] [--steps 500it] [--plot]

Writes instability.csv and instability.json (and instability.png with --plot) into the run folder. Every file of the
run is read and checked first: a bad argument or file is one line on stderr, exit code 2, and nothing written.
"""

from __future__ import annotations

import argparse
import logging

from lth.core.errors import ConfigError
from lth.core.steps import Step
from lth.tools.cli import ArgumentParser, folder, integer, one_line_errors

SEEDS = integer(0, 2**31 - 1)  # the range of the config's seed and data_seed


def steps(text: str) -> str:
    """An argument type: a Step longer than 0it, e.g. 500it."""
    try:
        step = Step.parse(text, key="--steps")
    except ConfigError as error:
        raise argparse.ArgumentTypeError(error.message) from None
    if step == Step():
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: a Step longer than 0it, e.g. 500it")
    return text


def parser() -> ArgumentParser:
    """The command line, every value range-checked as it is parsed."""
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=folder, help="a run folder (config.yaml, rewind.pt, round_XX/mask.pt)")
    parser.add_argument(
        "--rounds", nargs="+", type=integer(0), help="rounds to analyse (default: every round with a mask)"
    )
    parser.add_argument(
        "--data-seeds", nargs=2, type=SEEDS, default=[1, 2], metavar=("A", "B"), help="data orders (default: 1 2)"
    )
    parser.add_argument("--steps", type=steps, help="replace train.steps for a quicker look, e.g. 500it")
    parser.add_argument(
        "--alphas", type=integer(2), default=11, help="points on the path, ends included, >= 2 (default: 11)"
    )
    parser.add_argument(
        "--bn-batches", type=integer(1), default=50, help="training batches that set BatchNorm statistics (default: 50)"
    )
    parser.add_argument("--data-dir", type=folder, help="replace paths.data_dir, e.g. ../shared/data")
    parser.add_argument("--plot", action="store_true", help="also draw error against α: instability.png")
    return parser


@one_line_errors
def main(argv: list[str] | None = None) -> dict:
    """Parse ``argv``, analyse the run, print the table; return the result (as ``instability.json`` holds it)."""
    args = parser().parse_args(argv)
    if args.data_seeds[0] == args.data_seeds[1]:
        raise ConfigError("--data-seeds", f"got {args.data_seeds[0]} twice; the two copies need two different seeds")
    from lth.tools.stability import (
        StabilityOptions,
        analyse,
        load_config,
        stability_figure,
        stability_table,
        write_results,
    )

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = load_config(args.run_dir, data_dir=args.data_dir, steps=args.steps)
    options = StabilityOptions(
        rounds=args.rounds,
        data_seeds=tuple(args.data_seeds),
        num_alphas=args.alphas,
        bn_batches=args.bn_batches,
    )
    result = analyse(args.run_dir, cfg, options, on_round=lambda partial: write_results(args.run_dir, partial))
    print(f"\n{stability_table(result)}\n")
    print(f"BatchNorm: {result['batchnorm']}")
    print(f"stable: barrier below {100 * result['stable_below']:g}% test error")
    for path in write_results(args.run_dir, result):
        print(path)
    if args.plot:
        path = args.run_dir / "instability.png"
        stability_figure(result).savefig(path, dpi=150)
        print(path)
    return result


if __name__ == "__main__":
    main()
