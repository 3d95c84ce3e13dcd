"""Tabulate run folders as Markdown: test accuracy at the early-stop point and the early-stop iteration at the
paper's sparsities (100, 51.3, 21.1, 13.5, 7.0, 3.6, 1.9% weights remaining), a column per config, mean ± std
over seeds.

Usage: python scripts/report.py outputs/multirun/<time> [more run folders] [--out report.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lth.results import PAPER_SPARSITIES, load_groups, report


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv``, print the report (and write it to ``--out`` if given)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run folders, or folders searched for them (sweeps)")
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    parser.add_argument(
        "--sparsities", nargs="+", type=float, default=list(PAPER_SPARSITIES), help="rows, in %% weights remaining"
    )
    parser.add_argument(
        "--tolerance", type=float, default=0.1, help="nearest round within this relative distance (default: 0.1)"
    )
    parser.add_argument("--ignore", nargs="*", default=["seed"], help="config keys pooled over (default: seed)")
    args = parser.parse_args(argv)
    try:
        groups = load_groups(args.paths, ignore=args.ignore)
    except FileNotFoundError as error:
        parser.error(str(error))
    text = report(groups, args.sparsities, args.tolerance)
    if args.out:
        args.out.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
