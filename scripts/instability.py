"""Instability analysis of a finished run (Frankle et al. 2020): for the dense network and each round's ticket, train
two copies from the rewind point on two data orders and measure the error barrier on the linear path between them.

Usage: python scripts/instability.py <run folder> [--rounds 0 2] [--data-seeds 1 2] [--steps 500it] [--plot]

Writes instability.csv and instability.json (and instability.png with --plot) into the run folder.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lth.errors import ConfigError
from lth.stability import analyse, figure, format_table, load_config, write_results


def main(argv: list[str] | None = None) -> dict:
    """Parse ``argv``, analyse the run, print the table; return the result (as ``instability.json`` holds it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run folder (config.yaml, rewind.pt, round_XX/mask.pt)")
    parser.add_argument("--rounds", nargs="+", type=int, help="rounds to analyse (default: every round with a mask)")
    parser.add_argument(
        "--data-seeds", nargs=2, type=int, default=[1, 2], metavar=("A", "B"), help="data orders (default: 1 2)"
    )
    parser.add_argument("--steps", help="replace train.steps for a quicker look, e.g. 500it (default: the run's)")
    parser.add_argument("--alphas", type=int, default=11, help="points on the path, ends included (default: 11)")
    parser.add_argument(
        "--bn-batches", type=int, default=50, help="training batches that set BatchNorm statistics (default: 50)"
    )
    parser.add_argument("--data-dir", help="replace paths.data_dir, e.g. ../shared/data")
    parser.add_argument("--plot", action="store_true", help="also draw error against α: instability.png")
    args = parser.parse_args(argv)
    if args.data_seeds[0] == args.data_seeds[1]:
        parser.error("--data-seeds: the two copies need two different seeds")
    if args.alphas < 2:
        parser.error("--alphas: at least 2 (the two ends)")
    if args.bn_batches < 1:
        parser.error("--bn-batches: at least 1")

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = load_config(args.run_dir, data_dir=args.data_dir, steps=args.steps)
        result = analyse(
            args.run_dir,
            cfg,
            rounds=args.rounds,
            data_seeds=tuple(args.data_seeds),
            num_alphas=args.alphas,
            bn_batches=args.bn_batches,
            on_round=lambda partial: write_results(args.run_dir, partial),
        )
    except (ConfigError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"\n{format_table(result)}\n")
    print(f"BatchNorm: {result['batchnorm']}")
    print(f"stable: barrier below {100 * result['stable_below']:g}% test error")
    for path in write_results(args.run_dir, result):
        print(path)
    if args.plot:
        path = args.run_dir / "instability.png"
        figure(result).savefig(path, dpi=150)
        print(path)
    return result


if __name__ == "__main__":
    main()
