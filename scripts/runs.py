"""List the run folders under a folder: identity, model, dataset, status, rounds done, last weights remaining, best
test accuracy at the early-stop point, and the config keys that differ between them.

Usage: python scripts/runs.py [folder] [key=value ...] [--json] [--aliases]
  python scripts/runs.py                                   # every run under outputs/
  python scripts/runs.py outputs/multirun prune.rate=0.2 seed=0   # only those whose config has these values
  python scripts/runs.py --aliases                         # also link <parent>/by-label/<label> -> ../<run folder>
"""

from __future__ import annotations

import json
from pathlib import Path

from lth.tools.cli import ArgumentParser, one_line_errors
from lth.tools.listing import as_json, find_run_folders, keep, parse_filters, read_entry, table, write_aliases
from lth.tools.runs import read_each


def parser() -> ArgumentParser:
    """The command line."""
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "args",
        nargs="*",
        metavar="[folder] [key=value]",
        help="the folder searched (default: outputs), then filters on the resolved config, e.g. prune.rate=0.2",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list of the runs instead of a table")
    parser.add_argument(
        "--aliases",
        action="store_true",
        help="link <parent>/by-label/<label> -> ../<run folder> for each run listed (label: what differs from "
        "the default config)",
    )
    return parser


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    """Parse ``argv``, find, filter and print the runs (and write their aliases); bad input is one line, exit 2. A run
    folder that cannot be read is skipped with one line on stderr; none readable is an error."""
    args = parser().parse_args(argv)
    positional = list(args.args)
    root = Path(positional.pop(0)) if positional and "=" not in positional[0] else Path("outputs")
    filters = parse_filters(positional)
    entries = keep(read_each(find_run_folders(root), read_entry, str(root)), filters)
    if args.aliases:
        for link, target in write_aliases(entries):
            print(f"{link} -> {target}")
        return
    if args.json:
        print(json.dumps(as_json(entries), indent=2))
    elif not entries:
        print(f"no run folder under {root}" + (" matches " + " ".join(positional) if positional else ""))
    else:
        print(table(entries, root))


if __name__ == "__main__":
    main()
