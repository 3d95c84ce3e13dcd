"""Where a run that was stopped continues: the end of its last finished round, and the checkpoint of the round it
was in (each decision one line; an unusable checkpoint is removed and its round restarts from its start).
"""

from __future__ import annotations

import os
from pathlib import Path

from lth.config.run import RunConfig
from lth.core.errors import ConfigError
from lth.lightning.callback import LotteryTicket
from lth.lightning.module import Classifier
from lth.run.distributed import is_rank_zero, shared
from lth.run.rounds import Resumed, say
from lth.run.signals import requeued
from lth.state.artifacts import holds_results, round_dir
from lth.state.store import CHECKPOINT, restore, round_start, stored_name, unusable


def resume_as_needed(cfg: RunConfig, run_dir: Path) -> RunConfig:
    """``cfg`` with the ``resume`` this run needs: true for a requeued SLURM job whose folder holds its run (it
    continues by itself), false for a sweep job whose folder holds nothing yet (``resume=true`` over a sweep
    continues the jobs that started and starts the others)."""
    if not (requeued() or (cfg.resume and cfg.job.multirun)):
        return cfg
    started = shared(lambda: holds_results(run_dir))
    if started == cfg.resume:
        return cfg
    if started:
        say(f"resume: requeued SLURM job (restart {os.environ.get('SLURM_RESTART_COUNT')}); continuing {run_dir}")
    return cfg.but(resume=started)


def restore_finished(
    module: Classifier, ticket: LotteryTicket, run_dir: Path, rows: list[dict], store: Path
) -> list[dict]:
    """Restore the end of the last of the finished ``rows`` (trained weights, masks, rewind point) from its
    checkpoint and return the rows to keep: all of them, or none when round 0 alone is finished and its checkpoint
    cannot be read (it is removed, and round 0 trained again). A later round's is needed: the run cannot go on
    without it."""
    last = round_dir(run_dir, len(rows) - 1) / CHECKPOINT
    problem = shared(lambda: unusable(stored_name(last, store)))  # a file of the dense store is named as such
    if problem is None:
        restore(module, [ticket], last)
        return rows
    if len(rows) == 1:
        say(f"resume: {problem}; round 0 restarts from its start")
        if is_rank_zero():
            last.unlink(missing_ok=True)
        return []
    raise ConfigError(
        "resume",
        f"{problem}; round {len(rows)} starts from the end of round {len(rows) - 1}, which only that file holds: "
        f"delete {run_dir} to train the run again",
    )


def resume_point(
    module: Classifier, ticket: LotteryTicket, run_dir: Path, round_index: int, store: Path, resumed: bool
) -> Resumed | None:
    """The checkpoint of an interrupted round to continue from, with the iterations its fit had trained (module and
    ticket are restored from it); None when the round starts from its start.

    One line says which: a round continues from its checkpoint, and restarts from its start when the checkpoint is
    unusable (then removed) or, in the first round of a ``resumed`` run, missing (killed before its first one).
    """
    partial = round_dir(run_dir, round_index) / CHECKPOINT
    found = shared(lambda: partial.is_file())
    start = round_start(round_index)
    if not found:
        if resumed:
            say(f"resume: no checkpoint of round {round_index} in {run_dir}; round {round_index} restarts from {start}")
        return None
    problem = shared(lambda: unusable(stored_name(partial, store)))
    if problem is not None:
        say(f"resume: {problem}; round {round_index} restarts from {start}")
        if is_rank_zero():
            partial.unlink(missing_ok=True)
        return None
    trained = restore(module, [ticket], partial)
    say(
        f"resume: round {round_index} continues from its checkpoint at iteration "
        f"{ticket.start_iteration() + trained} ({partial})"
    )
    return Resumed(partial, trained)
