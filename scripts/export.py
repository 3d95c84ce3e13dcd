"""Export one round of a finished run: the ticket, the sparse model, the shrunk model and a compressed file.

The round defaults to the sparsest one whose validation accuracy is within ``--tolerance`` points of round 0's.
Everything written, and what was checked, is described in :mod:`lth.export` and docs/deploy.md.

Usage: python scripts/export.py RUN_DIR [--round N] [--tolerance 0.5] [--out DIR] [--fp16] [--onnx] [--data-dir DIR]
       [--threads N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from lth.errors import ConfigError
from lth.export import export, summary


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, export, print the summary; a bad run folder or file is one line on stderr and exit code 1."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run folder (holds config.yaml, rounds.csv, round_XX/)")
    parser.add_argument("--round", type=int, help="the round to export (default: chosen by --tolerance)")
    parser.add_argument(
        "--tolerance", type=float, default=0.5, help="validation accuracy points below round 0's (default: 0.5)"
    )
    parser.add_argument("--out", type=Path, help="output folder (default: <run_dir>/export/round_XX)")
    parser.add_argument("--fp16", action="store_true", help="store the compressed file's values as fp16")
    parser.add_argument("--onnx", action="store_true", help="also write model.onnx (needs onnx and onnxscript)")
    parser.add_argument("--data-dir", type=Path, help="where the test set is (default: the run's paths.data_dir)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; 1 on a shared CPU)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        report = export(args.run_dir, args.round, args.tolerance, args.out, args.fp16, args.onnx, args.data_dir)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
