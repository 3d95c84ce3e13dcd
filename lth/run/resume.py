"""Where a run that was stopped continues: the end of its last finished round, and the checkpoint of the round it
was in (each decision one line; an unusable checkpoint is removed and its round restarts from its start). When the
end of the last finished round is lost, a weight rewind still starts the next round from its rewind point and mask.
"""

from __future__ import annotations

import os
from pathlib import Path

from lth.config.run import RunConfig
from lth.core.catalog import REWINDS_WEIGHTS, rewind_entry
from lth.core.errors import ConfigError
from lth.lightning.callback import LotteryTicket
from lth.lightning.module import Classifier
from lth.run.distributed import is_rank_zero, shared
from lth.run.rounds import Resumed, say
from lth.run.signals import requeued
from lth.state.artifacts import check_state, holds_results, read_tensors, round_dir
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
) -> tuple[list[dict], bool]:
    """Restore the end of the last of the finished ``rows`` (trained weights, masks, rewind point) from its
    checkpoint; return the rows to keep, and whether module and ticket are at the start of the next round instead
    (said in one line: the round then starts from there, not from the end of the one before).

    When that checkpoint cannot be used (cut short, unreadable, another model's): the next round continues from its
    own checkpoint when it has one; else, under a weight rewind (``init``, a Step), the next round starts from the
    rewind point (``rewind.pt``) under the mask it was started with (its ``mask.pt``), keeping every row, or, not
    started yet, the last finished round trains again from its own mask (its row dropped); round 0 alone finished
    restarts from its start. A rewind that keeps the trained weights (``lr``, ``none``) needs that file: one line.
    """
    n = len(rows)
    last = round_dir(run_dir, n - 1) / CHECKPOINT
    problem = shared(lambda: unusable(stored_name(last, store)))  # a file of the dense store is named as such
    if problem is None:
        try:
            restore(module, [ticket], last)
            return rows, False
        except ConfigError as error:  # another model's
            problem = str(error)
    following = round_dir(run_dir, n) / CHECKPOINT
    if shared(lambda: unusable(following)) is None:
        try:
            restore(module, [ticket], following)  # resume_point continues round n from it
            return rows, False
        except ConfigError:  # another model's: resume_point says so
            pass
    again = n if shared(lambda: (round_dir(run_dir, n) / "mask.pt").is_file()) else n - 1
    if again == 0 or not rewind_entry(ticket.rewind).has(REWINDS_WEIGHTS):
        if n == 1:
            say(f"resume: {problem}; round 0 restarts from its start")
            if is_rank_zero():
                last.unlink(missing_ok=True)
            return [], True
        raise ConfigError(
            "resume",
            f"{problem}; round {n} starts from the trained weights of round {n - 1} (prune.rewind={ticket.rewind}), "
            f"which only that file holds: put back this run's copy of it to keep rounds 0-{n - 1}, or delete "
            f"{run_dir} to train the run again",
        )
    mask = round_dir(run_dir, again) / "mask.pt"
    start_from_mask(module, ticket, run_dir / "rewind.pt", mask, again)
    kept = f"rounds 0-{again - 1} are kept" if again > 1 else "round 0 is kept"
    say(f"resume: {problem}; round {again} restarts from the rewind point (rewind.pt) under its mask ({mask}); {kept}")
    if again < n and is_rank_zero():
        last.unlink(missing_ok=True)
    return rows[:again], True


def start_from_mask(module: Classifier, ticket: LotteryTicket, rewind: Path, mask: Path, round_index: int) -> None:
    """Put module and ticket at the start of round ``round_index`` under a weight rewind: the weights of ``rewind``
    (the rewind point) under the mask of ``mask`` (what the round was started with), as
    :meth:`~lth.lightning.callback.LotteryTicket.advance` left them."""
    state = read_tensors(rewind)
    check_state(state, module, rewind)
    masks = read_tensors(mask)
    ticket.load_state_dict({**ticket.state_dict(), "round_index": round_index, "mask": masks, "rewind_state": state})
    module.load_state_dict(state)
    try:
        ticket.apply_mask(module)
    except ConfigError as error:
        raise ConfigError(str(mask), error.message) from None


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
    if problem is None:
        try:
            trained = restore(module, [ticket], partial)
        except ConfigError as error:  # another model's (module and ticket are left as they were)
            problem = str(error)
    if problem is not None:
        say(f"resume: {problem}; round {round_index} restarts from {start}")
        if is_rank_zero():
            partial.unlink(missing_ok=True)
        return None
    say(
        f"resume: round {round_index} continues from its checkpoint at iteration "
        f"{ticket.start_iteration() + trained} ({partial})"
    )
    return Resumed(partial, trained)
