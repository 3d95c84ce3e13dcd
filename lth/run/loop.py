"""The run: iterative magnitude pruning from a config, round after round, with every round's results on disk.

Round 0 trains the dense network; each later round prunes the trained weights, rewinds the survivors and
retrains. Each round is one ``trainer.fit``; its early-stop point (lowest validation loss) is where the
test accuracy is reported. ``train(run)`` (a :class:`~lth.config.run.RunConfig`, from :func:`lth.config.entry.load_run`)
is what ``train.py`` calls and what tests call directly.

Under DDP every rank runs ``train`` and its loop (see :mod:`lth.run.distributed`): rank 0 makes the decisions that
read files and hands them to the others, and only rank 0 writes outputs and logs results.
"""

from __future__ import annotations

import logging
import shutil
from contextlib import ExitStack, nullcontext
from pathlib import Path

import pytorch_lightning as pl
import torch

from lth.config.identity import identity, run_id
from lth.config.lengths import check_lengths
from lth.config.run import RunConfig
from lth.core.catalog import CHANGES_INITIALISATION
from lth.core.controls import ControlFn
from lth.core.errors import ConfigError
from lth.core.masks import Mask
from lth.core.seeds import stream
from lth.data import ImageData
from lth.lightning.callback import LotteryTicket
from lth.lightning.module import Classifier
from lth.run.build import (
    accumulation,
    build_classifier,
    build_data,
    build_loggers,
    build_model,
    build_ticket,
    quiet_lightning,
)
from lth.run.build import iterations_per_epoch as steps_per_epoch
from lth.run.distributed import is_rank_zero, shared, start_ranks, world_size
from lth.run.methods import (
    check_rewind_reached,
    check_score_batches,
    mask_at_initialisation,
    pruned_at_init,
    run_flops,
    spent_before,
)
from lth.run.progress import RoundProgress
from lth.run.provenance import machine, provenance
from lth.run.resume import restore_finished, resume_as_needed, resume_point
from lth.run.rounds import Round, RoundSettings, RunError, dense_round, say, train_round
from lth.run.signals import STOP, Interrupted
from lth.run.transfer import mask_cost, start_mask, with_mask_cost
from lth.state.artifacts import (
    CONFIG,
    holds_results,
    remove_temporaries,
    round_dir,
    save_tensors,
    write_config,
    write_json,
    write_rounds,
)
from lth.state.labels import flatten, swept_values, write_alias
from lth.state.locks import run_lock
from lth.state.reuse import reuse_finished
from lth.state.store import CHECKPOINT, MACHINE, check_machine, dense_dir, finished, locked, resumable_rows

__all__ = ["RunError", "format_table", "train"]

log = logging.getLogger("lth")


def default_run_dir(cfg: RunConfig) -> Path:
    """Hydra's job folder when run by Hydra, else ``<paths.output_dir>/runs/<run_id>``."""
    if cfg.job.output_dir is not None:
        return Path(cfg.job.output_dir)
    return Path(cfg.output_dir) / "runs" / run_id(cfg.plain)


def format_table(rows: list[dict]) -> str:
    """The per-round summary printed at the end of a run (percentages for people, fractions in files)."""
    head = "round  weights remaining  early stop it  val acc  test acc  seconds"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['round']:>5}  {100 * r['weights_remaining']:>16.1f}%  {r['early_stop_iteration']:>13}  "
            f"{100 * r['val_acc']:>6.2f}%  {100 * r['test_acc']:>7.2f}%  {r['train_seconds']:>7.1f}"
        )
    return "\n".join(lines)


def ensure_ticket(cfg: RunConfig, run_dir: Path) -> Path:
    """The folder of the ticket a control run is compared with (same config, no control), trained if missing."""
    ticket_cfg = cfg.but(**{"prune.control": None})
    ticket_dir = run_dir.parent / run_id(ticket_cfg.plain)
    # a ticket that another process trains is waited for (its run holds this lock), then taken
    with locked(run_lock(ticket_dir), what=f"the ticket {ticket_dir}") if is_rank_zero() else nullcontext():
        log.info("control %s: the ticket's masks come from %s", cfg.prune.control.name, ticket_dir)
        train(ticket_cfg.but(resume=holds_results(ticket_dir)), run_dir=ticket_dir)  # continue an interrupted one
    return ticket_dir


def train(cfg: RunConfig, run_dir: str | Path | None = None) -> dict:
    """Run IMP as ``cfg`` says and return ``{"run_dir", "run_id", "rounds"}`` (rounds as in ``rounds.csv``).

    ``cfg`` is validated already (:func:`lth.config.entry.load_run`); what needs the data is checked before anything
    is written: a bad value raises :class:`~lth.core.errors.ConfigError`.
    A finished run is not trained again; with ``resume=true`` an interrupted one continues where it stopped: its
    interrupted round from its checkpoint or, without a usable one, from its start (saying so in one line).
    A run of the same experiment finished elsewhere under ``paths.output_dir`` is linked, not trained
    (:mod:`lth.state.reuse`). It trains with the Lightning engine (``train.engine=lightning``; the stacked one
    is :mod:`lth.run.stack`, both reached through :func:`lth.run.engine.train`). Rank 0 holds the folder's lock
    throughout: another process on it raises
    :class:`~lth.state.locks.BusyError`. SIGTERM and SIGINT raise :class:`~lth.run.signals.Interrupted` once the
    round's checkpoint is written (:mod:`lth.run.signals`).
    """
    quiet_lightning()
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
    if cfg.train.engine != "lightning":  # lth.run.engine.train sends it to its engine
        raise ConfigError("train.engine", f"{cfg.train.engine} runs are trained by lth.run.engine.train, not here")
    start_ranks(cfg)
    with STOP.installed(), ExitStack() as hold:
        # one process per run folder: rank 0 holds its lock for the whole run, a second one is refused (BusyError)
        shared(lambda: hold_run_folder(hold, run_dir))
        try:
            return _train(cfg, run_dir)
        except Interrupted as stop:  # resume=true continues it, unless its folder holds nothing yet
            stop.resume = holds_results(run_dir)
            raise


def hold_run_folder(hold: ExitStack, run_dir: Path) -> None:
    """Take ``run_dir``'s lock (``<run>/.lock``) until ``hold`` closes, or raise :class:`~lth.state.locks.BusyError`.

    A folder that this call made and that holds no results when ``hold`` closes (a config refused, a run stopped
    before its first file) is removed again, with the folders made for it that are left empty, before the lock is
    released, so that nothing is left behind.
    """
    made = [folder for folder in (run_dir, *run_dir.parents) if not folder.exists()]
    hold.enter_context(locked(run_lock(run_dir), wait=False, what=str(run_dir)))
    if made:
        hold.callback(_remove_unused, run_dir, made[1:])


def _remove_unused(run_dir: Path, parents: list[Path]) -> None:
    if holds_results(run_dir):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    for folder in parents:
        try:
            folder.rmdir()
        except OSError:  # not empty: another run's
            break


def done_before(cfg: RunConfig, run_dir: Path) -> dict | None:
    """The summary of this run when it is finished already, here or elsewhere (then linked here); else None."""
    done = shared(lambda: finished(run_dir, cfg))
    if done is not None:
        if is_rank_zero():
            print(f"{format_table(done['rounds'])}\n\nalready finished: {run_dir} (delete it to train again)")
        return done
    reused = shared(lambda: None if holds_results(run_dir) else reuse_finished(cfg, run_dir))
    if reused is not None:
        say(
            f"{format_table(reused['rounds'])}\n\nalready finished in {reused['reused_from']}: "
            f"its files are linked into {run_dir} (nothing trained)"
        )
    return reused


def build_run(cfg: RunConfig, trained_on: dict) -> tuple[ImageData, Classifier, LotteryTicket, RoundSettings]:
    """The data, the network, its pruning callback (with the mask round 0 starts from) and the round settings."""
    pl.seed_everything(cfg.seed, verbose=False)
    data = build_data(cfg)
    data.setup()
    check_score_batches(cfg, data)
    ipe = steps_per_epoch(cfg, data, world_size())
    lengths = check_lengths(cfg.train, cfg.prune.rewind, cfg.optim.schedule, ipe)
    flops = run_flops(cfg, build_model(cfg), accumulation(cfg), world_size())
    module = build_classifier(cfg, lengths.total, ipe)
    ticket = build_ticket(cfg)
    ticket.mask = start_mask(cfg, ticket.parameters_of(module))  # None, or prune.mask_from's; checked before writing
    settings = RoundSettings(
        lengths.total,
        ipe,
        lengths.eval_every,
        lengths.checkpoint_every,
        cfg.train.save_weights,
        cfg.hardware.rank_report,
        trained_on,
        flops,
    )
    return data, module, ticket, settings


def _train(cfg: RunConfig, run_dir: Path) -> dict:
    """:func:`train` in ``run_dir``, whose lock this process holds (rank 0)."""
    earlier = done_before(cfg, run_dir)
    if earlier is not None:
        return earlier
    cfg = resume_as_needed(cfg, run_dir)
    rows = shared(lambda: resumable_rows(cfg, run_dir))
    if cfg.hardware.threads:
        torch.set_num_threads(cfg.hardware.threads)
    trained_on = machine(cfg.hardware.accelerator)
    shared(lambda: check_machine(run_dir, trained_on))
    data, module, ticket, settings = build_run(cfg, trained_on)
    store = dense_dir(cfg, run_dir, trained_on)  # where round 0 is kept for the runs that share it
    restarted = False  # the first round to train starts where restore_finished put it (said already)
    if rows and len(rows) <= cfg.prune.rounds:  # the end of the last finished round: trained weights, masks, rewind
        rows, restarted = restore_finished(module, ticket, run_dir, rows, store)
    ticket_dir = ensure_ticket(cfg, run_dir) if cfg.prune.control else None
    if is_rank_zero():
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(run_dir / CONFIG, cfg)
        write_json(run_dir / MACHINE, trained_on)
    progress = RoundProgress(cfg.prune.rounds, show=cfg.train.progress, speaks=is_rank_zero())
    r = Round(cfg, module, ticket, data, run_dir, settings, build_loggers(cfg, run_dir), progress)
    try:
        _rounds(r, rows, store, ticket_dir, resumed=cfg.resume and not restarted)
    except BaseException:
        r.loggers.finish(exit_code=1)
        raise
    r.loggers.finish()
    return finish_run(r, rows)


def _rounds(r: Round, rows: list[dict], store: Path, ticket_dir: Path | None, resumed: bool) -> None:
    """Train the rounds after the finished ``rows``, appending each to them and to ``rounds.csv``."""
    cfg, first_round = r.cfg, len(rows)
    if cfg.resume and first_round > cfg.prune.rounds:
        say(f"resume: all rounds in {r.run_dir} are finished; its summary is written")
    progress = r.progress or RoundProgress(cfg.prune.rounds, show=False)
    apply_control = r.ticket.control_fn(cfg.prune.control.name) if cfg.prune.control else None
    for round_index in range(first_round, cfg.prune.rounds + 1):
        resume_from = resume_point(
            r.module, r.ticket, r.run_dir, round_index, store, resumed and round_index == first_round
        )
        if resume_from is None:  # else module and ticket are where the interrupted round stopped
            start_round(r, round_index, rows, ticket_dir, apply_control)
        progress.start(round_index, r.ticket.mask.weights_remaining())
        spent = spent_before(cfg, round_index, rows, ticket_dir)
        if round_index == 0 and cfg.train.share_dense:
            row = dense_round(r, resume_from)
        else:
            row = train_round(r, round_index, resume_from, spent)
        if round_index == 0:  # it trains a mask found elsewhere (prune.mask_from): that search counts too
            row = with_mask_cost(row, mask_cost(cfg))
        progress.end(row["test_acc"])
        rows.append(row)
        if is_rank_zero():
            write_rounds(r.run_dir / "rounds.csv", rows)
            r.loggers.log_round(row, r.ticket.mask.report())
            if round_index:
                (round_dir(r.run_dir, round_index - 1) / CHECKPOINT).unlink(missing_ok=True)


def start_round(
    r: Round, round_index: int, rows: list[dict], ticket_dir: Path | None, apply_control: ControlFn | None
) -> None:
    """Set the masks round ``round_index`` trains with and rewind: the control's draw from its ticket's mask, a
    mask scored at initialisation, or the next round of pruning (round 0: the masks it starts with)."""
    cfg, module, ticket = r.cfg, r.module, r.ticket
    if round_index and ticket.round_index == round_index:  # started already (lth.run.resume.restore_finished)
        return
    if round_index and apply_control is not None:
        control = cfg.prune.control
        if control.has(CHANGES_INITIALISATION) and ticket.round_index == 0:
            reinit_rewind_point(cfg, module, ticket, r.run_dir)
        ticket_mask = Mask(torch.load(round_dir(ticket_dir, round_index) / "mask.pt"))
        draws = torch.Generator().manual_seed(stream(cfg.seed, f"control/{control.name}/round{round_index}"))
        ticket.advance(module, mask=apply_control(ticket_mask, ticket.mask.cpu(), draws))
    elif round_index and pruned_at_init(cfg):  # scored at the initial weights, trained from them
        ticket.advance(module, mask=mask_at_initialisation(cfg, module, ticket, r.data))
    elif round_index:
        check_rewind_reached(cfg, ticket, rows[0])
        ticket.advance(module)
    else:
        ticket.apply_mask(module)


def finish_run(r: Round, rows: list[dict]) -> dict:
    """Write the run's summary, tidy its folder, name it, print its table; return the summary."""
    summary = {
        "run_id": run_id(r.cfg.plain),
        "run_dir": str(r.run_dir),
        "rounds": rows,
        "provenance": provenance(r.cfg.hardware.accelerator),
    }
    if is_rank_zero():
        write_json(r.run_dir / "summary.json", summary)
        for path in remove_temporaries(r.run_dir):  # what kills left mid-write
            log.info("removed %s (a write that was interrupted)", path)
        alias = write_run_alias(r.cfg, r.run_dir)
        print(f"\n{format_table(rows)}\n\nresults: {r.run_dir}" + (f"\n  (also {alias})" if alias else ""))
    return summary


def write_run_alias(cfg: RunConfig, run_dir: Path) -> Path | None:
    """Link ``<parent>/by-label/<what this run sets apart from the default config>`` to the finished run folder;
    the link, or None where the file system refuses it (a readable name is a convenience, never a failure)."""
    try:
        return write_alias(run_dir, flatten(identity(cfg.plain)), swept_values(cfg.plain, cfg.job.swept))[0]
    except (ConfigError, OSError) as error:
        log.warning("no readable alias for %s: %s", run_dir, error)
        return None


def reinit_rewind_point(cfg: RunConfig, module: Classifier, ticket: LotteryTicket, run_dir: Path) -> None:
    """Make the reinit control's rewind point a fresh draw from the model's initialiser (stream ``reinit``).

    Its round 0 is the ticket's (the dense network); every later round starts from this draw under the ticket's
    mask and trains exactly as the ticket's round does (from the rewind iteration k of the schedule to the end).
    """
    draw = {f"model.{k}": v for k, v in build_model(cfg, init_stream="reinit").state_dict().items()}
    ticket.rewind_state = {k: draw[k].to(v.device) for k, v in module.state_dict().items()}
    if is_rank_zero():
        save_tensors(run_dir / "rewind.pt", ticket.rewind_state)
