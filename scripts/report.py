"""Tabulate run folders as Markdown: test accuracy at the early-stop point and the early-stop iteration at the
sparsities the runs reached (or the paper's, 100, 51.3, 21.1, 13.5, 7.0, 3.6, 1.9% weights remaining, with
--paper), a column per config headed by what sets it apart and its number of seeds n, mean ± std over seeds.

A run folder that cannot be read is skipped with one line on stderr; exit code 2 only when none could be read,
and for an --ignore key that no run's config has.

Usage: python scripts/report.py outputs/multirun/<time> [more run folders] [--paper | --sparsities 100 50 ...]
    [--out report.md]
"""

from __future__ import annotations

from lth.state.artifacts import write_text
from lth.tools.cli import ArgumentParser, number, one_line_errors, output_file
from lth.tools.results import (
    PAPER_SPARSITIES,
    add_group_arguments,
    add_metric_argument,
    load_groups,
    markdown_report,
)


def parser() -> ArgumentParser:
    """The command line, every value range-checked as it is parsed."""
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    add_group_arguments(parser)
    parser.add_argument("--out", type=output_file, help="also write the report to this file")
    rows = parser.add_mutually_exclusive_group()
    rows.add_argument(
        "--sparsities",
        nargs="+",
        type=number(0, 100, open_low=True),
        help="rows, in %% weights remaining, each in (0, 100] (default: those the runs reached)",
    )
    rows.add_argument(
        "--paper",
        action="store_const",
        const=list(PAPER_SPARSITIES),
        dest="sparsities",
        help="rows at the paper's sparsities: " + ", ".join(f"{s:g}" for s in PAPER_SPARSITIES),
    )
    parser.add_argument(
        "--tolerance",
        type=number(0),
        help="nearest round within this relative distance, >= 0 (default: 0.1 with --paper or --sparsities, "
        "0.001 without)",
    )
    add_metric_argument(parser, "a table")
    return parser


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    """Parse ``argv``, print the report (and write it to ``--out`` if given); bad input is one line, exit code 2."""
    args = parser().parse_args(argv)
    groups = load_groups(args.paths, ignore=args.ignore)
    text = markdown_report(groups, args.sparsities, args.tolerance, args.metric)
    if args.out:
        write_text(args.out, text)
    print(text, end="")


if __name__ == "__main__":
    main()
