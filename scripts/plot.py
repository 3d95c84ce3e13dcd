"""Draw the paper's figures from run folders: test accuracy at the early-stop point and the early-stop iteration
against % weights remaining (log scale, decreasing), mean and spread over seeds, one series per config.

Usage: python scripts/plot.py outputs/multirun/<time> [more run folders] --out figures --format png pdf
"""

from __future__ import annotations

from pathlib import Path

from lth.tools.cli import ArgumentParser, one_line_errors, output_folder
from lth.tools.results import SPREADS, add_group_arguments, load_groups, save_figures


def parser() -> ArgumentParser:
    """The command line, every value checked as it is parsed."""
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    add_group_arguments(parser)
    parser.add_argument(
        "--out", type=output_folder, default=Path("figures"), help="folder for the figures (default: figures)"
    )
    parser.add_argument("--format", nargs="+", default=["png"], choices=["png", "svg", "pdf"], help="default: png")
    parser.add_argument("--spread", choices=SPREADS, default="minmax", help="error bars (default: minmax)")
    return parser


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    """Parse ``argv``, write the figures, print their paths; bad input is one line on stderr, exit code 2."""
    args = parser().parse_args(argv)
    groups = load_groups(args.paths, ignore=args.ignore)
    for path in save_figures(groups, args.out, args.format, args.spread):
        print(path)


if __name__ == "__main__":
    main()
