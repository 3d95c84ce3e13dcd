"""Draw the paper's figures from run folders: test accuracy at the early-stop point and the early-stop iteration
against % weights remaining (log scale, decreasing), or against what each network cost to train (``--x
train_iterations``, ``train_flops``), mean and spread over seeds, one series per config.

A run folder that cannot be read is skipped with one line on stderr; exit code 2 only when none could be read,
and for an --ignore key that no run's config has.

Usage: python scripts/plot.py outputs/multirun/<time> [more run folders] [--metric final_test_acc] [--out DIR]
    [--format png pdf] [--x train_iterations] [--ignore seed prune.target_sparsity]

The figures go to ``<first folder given>/figures/`` unless ``--out`` says otherwise, one per metric
(``test_acc.png`` and ``early_stop_iteration.png`` by default).
"""

from __future__ import annotations

from pathlib import Path

from lth.tools.cli import ArgumentParser, one_line_errors, output_folder
from lth.tools.figures import save_figures
from lth.tools.results import SPREADS, X_AXES, add_group_arguments, add_metric_argument, load_groups


def parser() -> ArgumentParser:
    """The command line, every value checked as it is parsed."""
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    add_group_arguments(parser)
    parser.add_argument(
        "--out", type=output_folder, help="folder for the figures (default: <first folder given>/figures)"
    )
    add_metric_argument(parser, "a figure")
    parser.add_argument("--format", nargs="+", default=["png"], choices=["png", "svg", "pdf"], help="default: png")
    parser.add_argument(
        "--x",
        choices=X_AXES,
        default="weights_remaining",
        help="the x axis: %% weights remaining (default) or what each network cost to train",
    )
    parser.add_argument("--spread", choices=SPREADS, default="minmax", help="error bars (default: minmax)")
    return parser


def default_out(folder: Path) -> Path:
    """Where the figures go unless told: ``figures/`` in the run or sweep folder given (its parent for a file)."""
    folder = Path(folder)
    return (folder if folder.is_dir() else folder.parent) / "figures"


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    """Parse ``argv``, write the figures, print their paths; bad input is one line on stderr, exit code 2."""
    args = parser().parse_args(argv)
    groups = load_groups(args.paths, ignore=args.ignore)
    out = args.out if args.out is not None else default_out(args.paths[0])
    for path in save_figures(groups, out, args.format, args.spread, args.metric, args.x):
        print(path)


if __name__ == "__main__":
    main()
