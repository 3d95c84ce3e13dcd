"""Draw the paper's figures from run folders: test accuracy at the early-stop point and the early-stop iteration
against % weights remaining (log scale, decreasing), mean and spread over seeds, one series per config.

Usage: python scripts/plot.py outputs/multirun/<time> [more run folders] --out figures --format png pdf
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lth.results import SPREADS, load_groups, save_figures


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv``, write the figures, print their paths."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run folders, or folders searched for them (sweeps)")
    parser.add_argument("--out", type=Path, default=Path("figures"), help="folder for the figures (default: figures)")
    parser.add_argument("--format", nargs="+", default=["png"], choices=["png", "svg", "pdf"], help="default: png")
    parser.add_argument("--spread", choices=SPREADS, default="minmax", help="error bars (default: minmax)")
    parser.add_argument("--ignore", nargs="*", default=["seed"], help="config keys pooled over (default: seed)")
    args = parser.parse_args(argv)
    try:
        groups = load_groups(args.paths, ignore=args.ignore)
    except FileNotFoundError as error:
        parser.error(str(error))
    for path in save_figures(groups, args.out, args.format, args.spread):
        print(path)


if __name__ == "__main__":
    main()
