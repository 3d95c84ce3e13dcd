"""Export one round of a finished run: the ticket, the sparse model, the shrunk model and a compressed file.

The round defaults to the sparsest one whose validation accuracy is within ``--tolerance`` points of round 0's.
Everything written, and what was checked, is described in :mod:`lth.tools.export` and docs/deploy.md. A bad argument or
run file is one line on stderr (``error: <argument or file>: <what is wrong>``), exit code 2, and nothing written; a
full disk is one line naming the file being written, exit code 4. A second export of the same output folder waits for
the first (one line says so).

Usage: python scripts/export.py RUN_DIR [--round N] [--tolerance 0.5] [--out DIR] [--fp16] [--data-dir DIR]
       [--format lth|torch-prune] [--threads N]
"""

from __future__ import annotations

import errno
import sys

from lth.tools.cli import ArgumentParser, folder, integer, number, one_line_errors, output_folder

DISK_FULL = 4  # the exit code train.py gives a full disk


def parser() -> ArgumentParser:
    """The command line, every value range-checked as it is parsed."""
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=folder, help="a run folder (holds config.yaml, rounds.csv, round_XX/)")
    parser.add_argument("--round", type=integer(0), help="the round to export (default: chosen by --tolerance)")
    parser.add_argument(
        "--tolerance",
        type=number(0),
        default=0.5,
        help="validation accuracy points below round 0's, >= 0 (default: 0.5)",
    )
    parser.add_argument("--out", type=output_folder, help="output folder (default: <run_dir>/export/round_XX)")
    parser.add_argument("--fp16", action="store_true", help="store the compressed file's values as fp16")
    parser.add_argument(
        "--format",
        choices=("lth", "torch-prune"),  # lth.tools.export.formats.FORMATS (not imported: --help needs no torch)
        default="lth",
        help="torch-prune: also model.torch_prune.pt, loadable by a model pruned with torch.nn.utils.prune",
    )
    parser.add_argument("--data-dir", type=folder, help="where the test set is (default: the run's paths.data_dir)")
    parser.add_argument("--threads", type=integer(1), help="torch CPU threads, >= 1 (default: torch's)")
    return parser


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, export, print the summary and return 0; bad input is one line on stderr and exit code 2, a full
    disk one line and exit code 4."""
    args = parser().parse_args(argv)
    import torch  # imported after parsing: --help and bad arguments answer at once

    from lth.tools.export import ExportOptions, export, summary

    if args.threads:
        torch.set_num_threads(args.threads)
    options = ExportOptions(
        round_index=args.round,
        tolerance=args.tolerance,
        out_dir=args.out,
        fp16=args.fp16,
        data_dir=args.data_dir,
        format=args.format,
    )
    try:
        report = export(args.run_dir, options)
    except OSError as error:  # a full disk or quota, named by the export's file (else raised again)
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"error: disk full writing {error.filename}; free space, then export again", file=sys.stderr)
        return DISK_FULL
    print(summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
