"""The run: iterative magnitude pruning from a config, round after round, with every round's results on disk.

Round 0 trains the dense network; each later round prunes the trained weights, rewinds the survivors and
retrains. Each round is one ``trainer.fit``; its early-stop point (lowest validation loss) is where the
test accuracy is reported. ``train(cfg)`` is what ``train.py`` calls and what tests call directly.

Under DDP every rank runs ``train`` and its loop (see :mod:`lth.run.distributed`): rank 0 makes the decisions that
read files and hands them to the others, and only rank 0 writes outputs and logs results.
"""

from __future__ import annotations

import logging
import os
import shutil
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from lth.core.catalog import CHANGES_INITIALISATION, CONTROLS
from lth.core.errors import ConfigError
from lth.core.flops import IterationFlops
from lth.core.masks import Mask
from lth.core.seeds import stream
from lth.core.steps import Step
from lth.data import ImageData
from lth.lightning.callback import LotteryTicket
from lth.lightning.module import Classifier
from lth.lightning.tracking import DivergedError, EarlyStopPoint, EvaluationCadence, RandomState, RankReport
from lth.run.artifacts import (
    holds_results,
    remove_temporaries,
    round_dir,
    save_tensors,
    write_json,
    write_rounds,
    write_text,
)
from lth.run.build import (
    accumulation,
    build_classifier,
    build_data,
    build_loggers,
    build_model,
    build_ticket,
    build_trainer,
    quiet_lightning,
)
from lth.run.build import iterations_per_epoch as steps_per_epoch
from lth.run.checkpoints import RoundCheckpoint, RoundClock
from lth.run.config import check_lengths, identity, run_id, validate
from lth.run.distributed import check_hardware, is_rank_zero, shared, start_ranks, world_size
from lth.run.labels import flatten, write_alias
from lth.run.locks import run_lock
from lth.run.loggers import RunLoggers
from lth.run.methods import (
    Cost,
    check_rewind_reached,
    early_bird,
    mask_at_initialisation,
    pruned_at_init,
    run_flops,
    spent_before,
)
from lth.run.progress import RoundProgress
from lth.run.provenance import machine, provenance
from lth.run.reuse import reuse_finished
from lth.run.signals import STOP, Interrupted, SafeStop, requeued
from lth.run.store import (
    CHECKPOINT,
    MACHINE,
    adopt_dense,
    check_machine,
    dense_dir,
    discard_unusable_dense,
    finished,
    locked,
    publish_dense,
    restore,
    resumable_rows,
    round_start,
    stored_name,
    unusable,
)
from lth.run.transfer import start_mask

log = logging.getLogger("lth")


def default_run_dir(cfg: DictConfig) -> Path:
    """Hydra's job folder when run by Hydra, else ``<paths.output_dir>/runs/<run_id>``."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_dir) / "runs" / run_id(cfg)


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


def _test_acc(trainer: pl.Trainer, module: Classifier, data: ImageData, name: str = "test_acc") -> float:
    """The test accuracy of ``module``'s weights as they are, logged as ``name`` (``final_test_acc`` for a round's
    last weights, ``test_acc`` for its early-stop weights: the columns of ``rounds.csv``), its loss alike."""
    module.test_prefix = name.removesuffix("test_acc")
    try:
        return float(trainer.test(module, datamodule=data, verbose=False)[0][name])
    finally:
        module.test_prefix = ""


class RunError(RuntimeError):
    """A run that cannot go on (a diverged round): one line, earlier rounds stay on disk and resumable."""


def say(line: str) -> None:
    """Print one line about what the run does with its folder (rank 0 only)."""
    if is_rank_zero():
        print(line, flush=True)


def ensure_ticket(cfg: DictConfig, run_dir: Path) -> Path:
    """The folder of the ticket a control run is compared with (same config, no control), trained if missing."""
    ticket_cfg = cfg.copy()
    with open_dict(ticket_cfg):
        ticket_cfg.prune.control = None
    ticket_dir = run_dir.parent / run_id(ticket_cfg)
    # a ticket that another process trains is waited for (its run holds this lock), then taken
    with locked(run_lock(ticket_dir), what=f"the ticket {ticket_dir}") if is_rank_zero() else nullcontext():
        log.info("control %s: the ticket's masks come from %s", cfg.prune.control, ticket_dir)
        with open_dict(ticket_cfg):
            ticket_cfg.resume = holds_results(ticket_dir)  # continue a ticket that was interrupted
        train(ticket_cfg, run_dir=ticket_dir)
    return ticket_dir


def train(cfg: DictConfig, run_dir: str | Path | None = None) -> dict:
    """Run IMP as ``cfg`` says and return ``{"run_dir", "run_id", "rounds"}`` (rounds as in ``rounds.csv``).

    Everything is checked before anything is written: a bad config raises :class:`~lth.core.errors.ConfigError`.
    A finished run is not trained again; with ``resume=true`` an interrupted one continues where it stopped: its
    interrupted round from its checkpoint or, without a usable one, from its start (saying so in one line).
    A run of the same experiment finished elsewhere under ``paths.output_dir`` is linked, not trained
    (:mod:`lth.run.reuse`). Rank 0 holds the folder's lock throughout: another process on it raises
    :class:`~lth.run.locks.BusyError`. SIGTERM and SIGINT raise :class:`~lth.run.signals.Interrupted` once the round's
    checkpoint is written (:mod:`lth.run.signals`).
    """
    validate(cfg)
    check_hardware(cfg)
    quiet_lightning()
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
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
    """Take ``run_dir``'s lock (``<run>/.lock``) until ``hold`` closes, or raise :class:`~lth.run.locks.BusyError`.

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


def _train(cfg: DictConfig, run_dir: Path) -> dict:
    """:func:`train` in ``run_dir``, whose lock this process holds (rank 0)."""
    done = shared(lambda: finished(run_dir))
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
    cfg = resume_as_needed(cfg, run_dir)
    rows = shared(lambda: resumable_rows(cfg, run_dir))
    if cfg.hardware.get("threads"):
        torch.set_num_threads(int(cfg.hardware.threads))
    trained_on = machine(cfg.hardware.accelerator)
    shared(lambda: check_machine(run_dir, trained_on))
    pl.seed_everything(cfg.seed, verbose=False)
    data = build_data(cfg)
    data.setup()
    iterations_per_epoch = steps_per_epoch(cfg, data, world_size())
    total, eval_every = check_lengths(cfg, iterations_per_epoch)
    checkpoint_every = _checkpoint_every(cfg, iterations_per_epoch, eval_every)
    flops = run_flops(cfg, build_model(cfg), accumulation(cfg), world_size())
    control = cfg.prune.get("control")
    module = build_classifier(cfg, total, iterations_per_epoch)
    ticket = build_ticket(cfg)
    ticket.mask = start_mask(cfg, ticket.parameters_of(module))  # None, or prune.mask_from's; checked before writing
    apply_control = ticket.control_fn(control) if control else None
    store = dense_dir(cfg, run_dir, trained_on)  # where round 0 is kept for the runs that share it
    restarted = False  # round 0 restarts as its checkpoint is unusable (said already)
    if rows and len(rows) <= cfg.prune.rounds:  # the end of the last finished round: trained weights, masks, rewind
        kept = restore_finished(module, ticket, run_dir, rows, store)
        restarted, rows = len(kept) < len(rows), kept

    ticket_dir = ensure_ticket(cfg, run_dir) if control else None
    if is_rank_zero():
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        write_json(run_dir / MACHINE, trained_on)
    loggers = build_loggers(cfg, run_dir)
    progress = RoundProgress(cfg.prune.rounds)
    progress.enabled &= is_rank_zero()
    settings = RoundSettings(
        total,
        iterations_per_epoch,
        eval_every,
        checkpoint_every,
        bool(cfg.train.get("save_weights", True)),
        bool(cfg.hardware.get("rank_report", False)),
        trained_on,
        flops,
    )
    resume, first_round = bool(cfg.get("resume", False)), len(rows)
    if resume and first_round > cfg.prune.rounds:
        say(f"resume: all rounds in {run_dir} are finished; its summary is written")
    try:
        for round_index in range(len(rows), cfg.prune.rounds + 1):
            resume_from, resumed_at = resume_point(
                module, ticket, run_dir, round_index, store, resume and round_index == first_round and not restarted
            )
            if resume_from is None:  # else module and ticket are where the interrupted round stopped
                if round_index and apply_control is not None:
                    if CONTROLS.entry(control).has(CHANGES_INITIALISATION) and ticket.round_index == 0:
                        reinit_rewind_point(cfg, module, ticket, run_dir)
                    ticket_mask = Mask(torch.load(round_dir(ticket_dir, round_index) / "mask.pt"))
                    draws = torch.Generator().manual_seed(stream(cfg.seed, f"control/{control}/round{round_index}"))
                    ticket.advance(module, mask=apply_control(ticket_mask, ticket.mask.cpu(), draws))
                elif round_index and pruned_at_init(cfg):  # scored at the initial weights, trained from them
                    ticket.advance(module, mask=mask_at_initialisation(cfg, module, ticket, data))
                elif round_index:
                    check_rewind_reached(cfg, ticket, rows[0])
                    ticket.advance(module)
                else:
                    ticket.apply_mask(module)
            progress.start(round_index, ticket.mask.weights_remaining())
            spent = spent_before(cfg, round_index, rows, ticket_dir)
            if round_index == 0 and cfg.train.get("share_dense", True):
                row = dense_round(cfg, module, ticket, data, run_dir, settings, loggers, resume_from, resumed_at)
            else:
                row = train_round(
                    cfg, module, ticket, data, run_dir, round_index, settings, loggers, resume_from, resumed_at, spent
                )
            progress.end(row["test_acc"])
            rows.append(row)
            if is_rank_zero():
                write_rounds(run_dir / "rounds.csv", rows)
                loggers.log_round(row, ticket.mask.report())
                if round_index:
                    (round_dir(run_dir, round_index - 1) / CHECKPOINT).unlink(missing_ok=True)
    except BaseException:
        loggers.finish(exit_code=1)
        raise
    loggers.finish()
    summary = {
        "run_id": run_id(cfg),
        "run_dir": str(run_dir),
        "rounds": rows,
        "provenance": provenance(cfg.hardware.accelerator),
    }
    if is_rank_zero():
        write_json(run_dir / "summary.json", summary)
        for path in remove_temporaries(run_dir):  # what kills left mid-write
            log.info("removed %s (a write that was interrupted)", path)
        alias = write_run_alias(cfg, run_dir)
        print(f"\n{format_table(rows)}\n\nresults: {run_dir}" + (f"\n  (also {alias})" if alias else ""))
    return summary


def write_run_alias(cfg: DictConfig, run_dir: Path) -> Path | None:
    """Link ``<parent>/by-label/<what this run sets apart from the default config>`` to the finished run folder;
    the link, or None where the file system refuses it (a readable name is a convenience, never a failure)."""
    try:
        return write_alias(run_dir, flatten(identity(cfg)))[0]
    except (ConfigError, OSError) as error:
        log.warning("no readable alias for %s: %s", run_dir, error)
        return None


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
) -> tuple[Path | None, int | None]:
    """The checkpoint of an interrupted round to continue from, and the iterations its fit had trained (module and
    ticket are restored from it); ``(None, None)`` when the round starts from its start.

    One line says which: a round continues from its checkpoint, and restarts from its start when the checkpoint is
    unusable (then removed) or, in the first round of a ``resumed`` run, missing (killed before its first one).
    """
    partial = round_dir(run_dir, round_index) / CHECKPOINT
    found = shared(lambda: partial.is_file())
    start = round_start(round_index)
    if not found:
        if resumed:
            say(f"resume: no checkpoint of round {round_index} in {run_dir}; round {round_index} restarts from {start}")
        return None, None
    problem = shared(lambda: unusable(stored_name(partial, store)))
    if problem is not None:
        say(f"resume: {problem}; round {round_index} restarts from {start}")
        if is_rank_zero():
            partial.unlink(missing_ok=True)
        return None, None
    trained = restore(module, [ticket], partial)
    say(
        f"resume: round {round_index} continues from its checkpoint at iteration "
        f"{ticket.start_iteration() + trained} ({partial})"
    )
    return partial, trained


def _multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def resume_as_needed(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """``cfg`` with the ``resume`` this run needs: true for a requeued SLURM job whose folder holds its run (it
    continues by itself), false for a sweep job whose folder holds nothing yet (``resume=true`` over a sweep
    continues the jobs that started and starts the others)."""
    resume = bool(cfg.get("resume", False))
    if not (requeued() or (resume and _multirun())):
        return cfg
    started = shared(lambda: holds_results(run_dir))
    if started == resume:
        return cfg
    if started:
        say(f"resume: requeued SLURM job (restart {os.environ.get('SLURM_RESTART_COUNT')}); continuing {run_dir}")
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.resume = started
    return cfg


def reinit_rewind_point(cfg: DictConfig, module: Classifier, ticket: LotteryTicket, run_dir: Path) -> None:
    """Make the reinit control's rewind point a fresh draw from the model's initialiser (stream ``reinit``).

    Its round 0 is the ticket's (the dense network); every later round starts from this draw under the ticket's
    mask and trains exactly as the ticket's round does (from the rewind iteration k of the schedule to the end).
    """
    draw = {f"model.{k}": v for k, v in build_model(cfg, init_stream="reinit").state_dict().items()}
    ticket.rewind_state = {k: draw[k].to(v.device) for k, v in module.state_dict().items()}
    if is_rank_zero():
        save_tensors(run_dir / "rewind.pt", ticket.rewind_state)


def _checkpoint_every(cfg: DictConfig, iterations_per_epoch: int, eval_every: int) -> int | None:
    every = cfg.train.get("checkpoint_every")
    if every is None:
        return None
    iterations = Step.parse(every, key="train.checkpoint_every").to_iterations(iterations_per_epoch)
    if iterations <= 0 or iterations % eval_every:
        raise ConfigError(
            "train.checkpoint_every", f"{every} ({iterations} it) must be a positive multiple of train.eval_every"
        )
    return iterations


@dataclass(frozen=True)
class RoundSettings:
    """What every round of a run shares: lengths in iterations, whether weights are kept, whether ranks report."""

    total: int
    iterations_per_epoch: int
    eval_every: int
    checkpoint_every: int | None
    save_weights: bool
    rank_report: bool = False
    machine: dict | None = None  # what of this machine changes the numbers (see lth.run.provenance)
    flops: IterationFlops | None = None  # the operations of one training iteration (see lth.core.flops)


def dense_round(
    cfg: DictConfig,
    module: Classifier,
    ticket: LotteryTicket,
    data: ImageData,
    run_dir: Path,
    settings: RoundSettings,
    loggers: RunLoggers,
    resume_from: Path | None = None,
    resumed_at: int | None = None,
) -> dict:
    """Round 0, taken from the runs that share it when one of them trained it, else trained (or continued from
    ``resume_from``, see :func:`train_round`) and offered to them. A kept round 0 that cannot be read is
    discarded (one line naming the file) and trained again here.

    Rank 0 holds the store's lock and decides; under DDP the other ranks follow (they train or restore with it).
    """
    store = dense_dir(cfg, run_dir, settings.machine or machine(cfg.hardware.accelerator))
    lock = locked(store.with_name(f".{store.name}.lock"), what=f"round 0 in {store}")
    with lock if is_rank_zero() else nullcontext():
        problem = shared(lambda: discard_unusable_dense(store))
        if problem is not None:
            say(f"round 0 kept in {store} cannot be used ({problem}); it is trained again here and replaces it")
        row = shared(lambda: adopt_dense(store, run_dir))
        if row is not None:
            trained = restore(module, [ticket], round_dir(run_dir, 0) / CHECKPOINT)
            if is_rank_zero():
                log.info("round 0 (dense) taken from %s", store)
            if "train_iterations" not in row:  # kept before costs were counted: its checkpoint knows its length
                row.update(Cost().plus(trained, settings.flops, ticket.mask).columns())
            return row
        row = train_round(cfg, module, ticket, data, run_dir, 0, settings, loggers, resume_from, resumed_at)
        if is_rank_zero():
            publish_dense(run_dir, store, row)
        return row


def train_round(
    cfg: DictConfig,
    module: Classifier,
    ticket: LotteryTicket,
    data: ImageData,
    run_dir: Path,
    round_index: int,
    settings: RoundSettings,
    loggers: RunLoggers,
    resume_from: Path | None,
    resumed_at: int | None = None,
    spent: Cost | None = None,
) -> dict:
    """Train one round from the current (masked, rewound) weights, or from ``resume_from`` (a checkpoint of the
    round whose fit had trained ``resumed_at`` iterations: the step log and ``train_seconds`` continue its); return
    its row, with what its network cost: ``spent`` (what its masks cost) and the iterations it trained."""
    where = round_dir(run_dir, round_index)
    if resume_from is None and is_rank_zero():
        save_tensors(where / "mask.pt", dict(ticket.mask))
        write_json(where / "sparsity.json", ticket.mask.report())
    steps = ticket.steps_this_round(settings.total, settings.iterations_per_epoch)
    start = ticket.start_iteration()
    data.start_iteration = start
    early_stop = EarlyStopPoint("val_loss", start=start)
    callbacks = [
        ticket,
        EvaluationCadence(start, settings.eval_every, settings.total),
        early_stop,
        RandomState(),
        clock := RoundClock(),
        RoundCheckpoint(where / CHECKPOINT, settings.checkpoint_every, start=start),
    ]
    bird = early_bird(cfg, ticket) if round_index == 0 else None
    if bird is not None:  # its draw is in the checkpoint written after the evaluation that drew it
        callbacks.insert(callbacks.index(clock), bird)
    if settings.rank_report:
        callbacks.append(RankReport(run_dir / "ranks", ticket))
    callbacks.append(SafeStop(round_index, start))  # last: it stops the fit once the others are done
    step_log, axis = loggers.for_round(round_index, resumed_at if resume_from else None, start, settings.total)
    callbacks.insert(0, axis)  # step metrics on the iteration axis, as rounds.csv has them
    trainer = build_trainer(cfg, run_dir, steps, settings.eval_every, callbacks, step_log, start=start)
    try:
        trainer.fit(module, datamodule=data, ckpt_path=str(resume_from) if resume_from else None)
    except DivergedError as error:
        kept = "the rounds before it are kept, " if round_index else ""
        retry = (
            f"continues round {round_index} from its last checkpoint"
            if (where / CHECKPOINT).is_file()
            else f"restarts round {round_index} from {round_start(round_index)}"
        )
        raise RunError(f"round {round_index}: {error}; {kept}resume=true {retry}") from None
    seconds = clock.seconds()  # the interrupted parts of a resumed round included
    if bird is not None and trainer.is_global_zero:
        write_json(where / "early_bird.json", {"drawn_iteration": bird.drawn, "distances": bird.history.distances})
        if bird.drawn is None:
            log.warning("early_bird: the criterion never held; the ticket is drawn from round 0's last weights")
    if round_index == 0 and ticket.rewind_state is not None and trainer.is_global_zero:
        save_tensors(run_dir / "rewind.pt", ticket.rewind_state)

    final_test_acc = _test_acc(trainer, module, data, "final_test_acc")
    final_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    module.load_state_dict(early_stop.state)
    test_acc = _test_acc(trainer, module, data)
    if settings.save_weights and trainer.is_global_zero:
        save_tensors(where / "early_stop.pt", early_stop.state)
    module.load_state_dict(final_state)
    row = {
        "round": round_index,
        "weights_remaining": ticket.mask.weights_remaining(),
        "early_stop_iteration": early_stop.iteration,
        "val_loss": early_stop.metrics["val_loss"],
        "val_acc": early_stop.metrics["val_acc"],
        "test_acc": test_acc,
        "final_test_acc": final_test_acc,
        "train_seconds": round(seconds, 3),
        **(spent or Cost()).plus(trainer.global_step, settings.flops, ticket.mask).columns(),
    }
    if not trainer.is_global_zero:
        return row
    log.info(
        "round %d/%d | weights remaining %.1f%% | early stop it %d | val acc %.2f%% | test acc %.2f%% | %.1fs",
        round_index,
        cfg.prune.rounds,
        100 * row["weights_remaining"],
        row["early_stop_iteration"],
        100 * row["val_acc"],
        100 * row["test_acc"],
        seconds,
    )
    return row
