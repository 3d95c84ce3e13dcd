"""Finished runs found again: a run whose experiment already finished anywhere under ``paths.output_dir`` is linked
into its folder instead of being trained again.

A sweep folder is named by the time it started, so running a sweep command again makes a new folder. Before it
trains, each job looks for its identity (the folder name, checked against the ``config.yaml`` there) in
``<paths.output_dir>/runs/<id>/`` and ``<paths.output_dir>/multirun/*/<id>/``; a finished run found there (one
with a ``summary.json``) has its files hard-linked (copied across file systems) into the job's folder, with this
job's ``config.yaml`` and a ``summary.json`` that names the folder it came from (``reused_from``). Finished runs
never change, so a link is as good as a copy.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from lth.config.identity import identity, run_id
from lth.config.run import RunConfig
from lth.state.artifacts import (
    CONFIG,
    HYDRA_ONLY,
    RUN_LOCK,
    is_temporary,
    read_plain,
    read_summary,
    write_config,
    write_json,
)

# Hydra's files, the lock of the folder's own process, and the two files this job writes itself
NOT_LINKED = (*HYDRA_ONLY, *RUN_LOCK, CONFIG, "summary.json")


def finished_elsewhere(cfg: RunConfig, run_dir: Path) -> Path | None:
    """A finished run of ``cfg``'s experiment under ``paths.output_dir`` other than ``run_dir``, or None."""
    output_dir = Path(cfg.output_dir)
    name = run_id(cfg.plain)
    candidates = [output_dir / "runs" / name, *sorted(output_dir.glob(f"multirun/*/{name}"), reverse=True)]
    here = run_dir.resolve()
    wanted = identity(cfg.plain)
    for candidate in candidates:
        if candidate.resolve() == here or read_summary(candidate) is None:  # not finished, or its summary unreadable
            continue
        try:
            same = identity(read_plain(candidate / CONFIG)) == wanted
        except Exception:  # noqa: BLE001 - a folder that cannot be read is not a run to reuse
            continue
        if same and (candidate / "rounds.csv").is_file():
            return candidate
    return None


def _link(source: str, target: str) -> None:
    """Hard-link ``source`` as ``target`` or, where that fails (another file system), copy it under a temporary
    name and rename it, so a kill never leaves half a file under the name."""
    Path(target).unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        tmp = f"{target}.tmp"
        shutil.copy2(source, tmp)
        os.replace(tmp, target)


def adopt_finished(cfg: RunConfig, source: Path, run_dir: Path) -> dict:
    """Link the finished run in ``source`` into ``run_dir`` and return its summary (``summary.json`` is written
    last, so an interrupted adoption is not taken for a finished run)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for entry in sorted(source.iterdir()):
        if entry.name in NOT_LINKED or entry.suffix == ".log" or is_temporary(entry):
            continue
        if entry.is_dir():
            shutil.copytree(entry, run_dir / entry.name, copy_function=_link, dirs_exist_ok=True)
        else:
            _link(str(entry), str(run_dir / entry.name))
    write_config(run_dir / CONFIG, cfg)
    summary = json.loads((source / "summary.json").read_text())
    summary.update(run_dir=str(run_dir), reused_from=str(source))
    write_json(run_dir / "summary.json", summary)
    return summary


def reuse_finished(cfg: RunConfig, run_dir: Path) -> dict | None:
    """The summary of a finished run of ``cfg`` found elsewhere and linked into ``run_dir``, or None if none."""
    source = finished_elsewhere(cfg, run_dir)
    return None if source is None else adopt_finished(cfg, source, run_dir)
