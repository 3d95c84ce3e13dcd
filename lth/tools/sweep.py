"""The end of a sweep: every job's rounds in one table, and the report, written to the sweep folder.

:class:`SweepSummary` is registered in ``conf/config.yaml`` under ``hydra.callbacks``. Hydra calls its
``on_multirun_end`` in the process that launched the sweep once every job has returned, whichever the launcher
(basic, joblib, submitit). It writes ``<sweep>/rounds.csv`` (each job's rows of ``rounds.csv``, after the job's
folder and the config keys that differ between jobs) and ``<sweep>/report.md`` (what ``scripts/report.py
<sweep>`` prints). A sweep with a failed job ends before this; ``scripts/report.py`` still reads what finished.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from lth.state.artifacts import ROUND_COLUMNS, write_text
from lth.tools.results import Run, find_runs, group_runs, markdown_report, read_run

log = logging.getLogger("lth")


def differing_keys(runs: Sequence[Run]) -> list[str]:
    """The config keys (dotted) whose values are not the same in every run, in the order they first appear."""
    keys = dict.fromkeys(key for run in runs for key in run.config)
    return [key for key in keys if len({json.dumps(run.config.get(key), default=str) for run in runs}) > 1]


def _csv_value(value: Any) -> Any:
    return value if value is None or isinstance(value, str | int | float) else json.dumps(value)


def sweep_table(sweep_dir: Path, runs: Sequence[Run]) -> str:
    """``rounds.csv`` of a sweep: a row per round of each run, after its folder and the keys that differ."""
    keys = differing_keys(runs)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["job", *keys, *ROUND_COLUMNS], lineterminator="\n")
    writer.writeheader()
    for run in runs:
        job = {"job": run.path.relative_to(sweep_dir).as_posix(), **{k: _csv_value(run.config.get(k)) for k in keys}}
        writer.writerows({**job, **{k: row.get(k) for k in ROUND_COLUMNS}} for row in run.rounds)
    return out.getvalue()


def summarize_sweep(sweep_dir: Path) -> list[Path]:
    """Write ``rounds.csv`` and ``report.md`` of the runs under ``sweep_dir``; the files written (none if no run)."""
    runs = [read_run(path) for path in find_runs([sweep_dir])]
    if not runs:
        log.warning("sweep %s holds no finished run: no rounds.csv or report.md written", sweep_dir)
        return []
    written = [sweep_dir / "rounds.csv", sweep_dir / "report.md"]
    write_text(written[0], sweep_table(sweep_dir, runs))
    write_text(written[1], markdown_report(group_runs(runs)))
    log.info("sweep of %d runs: %s, %s", len(runs), *written)
    return written


class SweepSummary(Callback):
    """A Hydra callback: :func:`summarize_sweep` of the sweep folder when a multirun ends."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:  # Hydra hands it the composed config
        summarize_sweep(Path(str(config.hydra.sweep.dir)))
