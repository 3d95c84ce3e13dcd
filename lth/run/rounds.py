"""One round of a run: a ``trainer.fit`` from the current (masked, rewound) weights, its early-stop point, the test
accuracy there, and its row of ``rounds.csv``. Round 0 may instead be taken from the runs that share it.

:class:`Round` holds what every round of a run shares (built once by :mod:`lth.run.loop`); :func:`train_round`
trains one, :func:`dense_round` takes or trains round 0.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytorch_lightning as pl

from lth.config.run import RunConfig
from lth.core.flops import IterationFlops
from lth.core.masks import Mask
from lth.data import ImageData
from lth.lightning.callback import LotteryTicket
from lth.lightning.module import Classifier
from lth.lightning.tracking import DivergedError, EarlyStopPoint, EvaluationCadence, RandomState, RankReport
from lth.run.build import Span, build_trainer
from lth.run.distributed import is_rank_zero, shared
from lth.run.loggers import RunLoggers
from lth.run.methods import Cost, early_bird
from lth.run.progress import RoundProgress, later_round_steps
from lth.run.signals import SafeStop
from lth.state.artifacts import round_dir, save_tensors, write_json
from lth.state.checkpoints import RoundCheckpoint, RoundClock
from lth.state.store import CHECKPOINT, adopt_dense, dense_dir, discard_unusable_dense, locked, publish_dense, restore
from lth.state.store import round_start as restart_point

log = logging.getLogger("lth")


class RunError(RuntimeError):
    """A run that cannot go on (a diverged round): one line, earlier rounds stay on disk and resumable."""


def diverged(round_index: int, why: object, checkpointed: bool = False) -> RunError:
    """Round ``round_index`` diverged (``why``), in one line: the earlier rounds kept, what ``resume=true`` does
    (continue from the round's last checkpoint if ``checkpointed``, else restart it). Both engines say this."""
    kept = "the rounds before it are kept, " if round_index else ""
    retry = (
        f"continues round {round_index} from its last checkpoint"
        if checkpointed
        else f"restarts round {round_index} from {restart_point(round_index)}"
    )
    return RunError(f"round {round_index}: {why}; {kept}resume=true {retry}")


def say(line: str) -> None:
    """Print one line about what the run does with its folder (rank 0 only)."""
    if is_rank_zero():
        print(line, flush=True)


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


@dataclass(frozen=True)
class Round:
    """What every round of one run trains with: the config, the network, its pruning callback, the data, the run
    folder, the lengths, the loggers, and what shows its progress (None: nothing)."""

    cfg: RunConfig
    module: Classifier
    ticket: LotteryTicket
    data: ImageData
    run_dir: Path
    settings: RoundSettings
    loggers: RunLoggers
    progress: RoundProgress | None = None


@dataclass(frozen=True)
class Resumed:
    """An interrupted round continued from its checkpoint ``path``, whose fit had trained ``trained`` iterations."""

    path: Path
    trained: int


def _test_acc(trainer: pl.Trainer, module: Classifier, data: ImageData, name: str = "test_acc") -> float:
    """The test accuracy of ``module``'s weights as they are, logged as ``name`` (``final_test_acc`` for a round's
    last weights, ``test_acc`` for its early-stop weights: the columns of ``rounds.csv``), its loss alike."""
    module.test_prefix = name.removesuffix("test_acc")
    try:
        return float(trainer.test(module, datamodule=data, verbose=False)[0][name])
    finally:
        module.test_prefix = ""


def dense_round(r: Round, resumed: Resumed | None = None) -> dict:
    """Round 0, taken from the runs that share it when one of them trained it, else trained (or continued, see
    :func:`train_round`) and offered to them. A kept round 0 that cannot be read is discarded (one line naming the
    file) and trained again here.

    Rank 0 holds the store's lock and decides; under DDP the other ranks follow (they train or restore with it).
    """
    store = dense_dir(r.cfg, r.run_dir, r.settings.machine)
    with dense_lock(store) if is_rank_zero() else nullcontext():
        say_discarded(store, shared(lambda: discard_unusable_dense(store)))
        row = shared(lambda: adopt_dense(store, r.run_dir))
        if row is not None:
            return take_dense(r, store, row)
        row = train_round(r, 0, resumed)
        if is_rank_zero():
            publish_dense(r.run_dir, store, row)
        return row


def dense_lock(store: Path) -> AbstractContextManager:
    """The lock under which round 0 kept in ``store`` is read, discarded or offered (both engines)."""
    return locked(store.with_name(f".{store.name}.lock"), what=f"round 0 in {store}")


def say_discarded(store: Path, problem: str | None) -> None:
    """Say (when there is a ``problem``) that round 0 kept in ``store`` was discarded and is trained again here."""
    if problem is not None:
        say(f"round 0 kept in {store} cannot be used ({problem}); it is trained again here and replaces it")


def take_dense(r: Round, store: Path, row: dict) -> dict:
    """Round 0 of ``store``, whose files ``adopt_dense`` put in ``r``'s folder (``row``), into ``r``'s network and
    pruning state; its row, with its costs (a round 0 kept before costs were counted: from its checkpoint)."""
    trained = restore(r.module, [r.ticket], round_dir(r.run_dir, 0) / CHECKPOINT)
    if is_rank_zero():
        log.info("round 0 (dense) taken from %s", store)
    if "train_iterations" not in row:
        row.update(Cost().plus(trained, r.settings.flops, r.ticket.mask).columns())
    return row


def _callbacks(r: Round, round_index: int, where: Path, start: int) -> tuple[list[pl.Callback], dict]:
    """The callbacks of a round's fit, and those whose results the round reads: ``early_stop``, ``clock``,
    ``bird`` (an early-bird draw in round 0, else None)."""
    early_stop, clock = EarlyStopPoint("val_loss", start=start), RoundClock()
    cadence = EvaluationCadence(start, r.settings.eval_every, r.settings.total)
    callbacks = [
        r.ticket,
        cadence,
        early_stop,
        RandomState(),
        clock,
        RoundCheckpoint(where / CHECKPOINT, r.settings.checkpoint_every, start=start),
    ]
    bird = early_bird(r.cfg, r.ticket) if round_index == 0 else None
    if bird is not None:  # its draw is in the checkpoint written after the evaluation that drew it
        callbacks.insert(callbacks.index(clock), bird)
    if r.settings.rank_report:
        callbacks.append(RankReport(r.run_dir / "ranks", r.ticket))
    callbacks.append(SafeStop(round_index, start, cadence.due))  # last: it stops the fit once the others are done
    return callbacks, {"early_stop": early_stop, "clock": clock, "bird": bird}


def _fit(r: Round, round_index: int, resumed: Resumed | None) -> tuple[pl.Trainer, dict]:
    """Fit round ``round_index`` (from ``resumed``'s checkpoint where given); the Trainer and the watchers."""
    where = round_dir(r.run_dir, round_index)
    if resumed is None and is_rank_zero():
        save_tensors(where / "mask.pt", dict(r.ticket.mask))
        write_json(where / "sparsity.json", r.ticket.mask.report())
    steps = r.ticket.steps_this_round(r.settings.total, r.settings.iterations_per_epoch)
    start = r.ticket.start_iteration()
    r.data.start_iteration = start
    callbacks, watch = _callbacks(r, round_index, where, start)
    step_log, axis = r.loggers.for_round(round_index, resumed.trained if resumed else None, start, r.settings.total)
    callbacks.insert(0, axis)  # step metrics on the iteration axis, as rounds.csv has them
    if r.progress is not None:
        later = later_round_steps(r.ticket.rewind, r.ticket.iterations_per_epoch, r.settings.total)
        display = r.progress.display(round_index, start, steps, (r.cfg.prune.rounds - round_index) * later)
        if display is not None:
            callbacks.insert(1, display)  # SafeStop stays last
    trainer = build_trainer(r.cfg, r.run_dir, Span(steps, r.settings.eval_every, start), callbacks, step_log)
    try:
        trainer.fit(r.module, datamodule=r.data, ckpt_path=str(resumed.path) if resumed else None)
    except DivergedError as error:
        raise diverged(round_index, error, (where / CHECKPOINT).is_file()) from None
    return trainer, watch


class EarlyStopRecord(Protocol):
    """What either engine knows of a round's early-stop point."""

    iteration: int | None
    metrics: dict[str, float]


def round_row(
    round_index: int,
    mask: Mask,
    early_stop: EarlyStopRecord,
    test_accs: tuple[float, float],
    seconds: float,
    cost: Cost,
) -> dict:
    """A round's row of ``rounds.csv``, whichever engine trained it: ``early_stop`` holds the early-stop point's
    ``iteration`` and validation ``metrics``, ``test_accs`` the test accuracy there and at the round's end."""
    return {
        "round": round_index,
        "weights_remaining": mask.weights_remaining(),
        "early_stop_iteration": early_stop.iteration,
        "val_loss": early_stop.metrics["val_loss"],
        "val_acc": early_stop.metrics["val_acc"],
        "test_acc": test_accs[0],
        "final_test_acc": test_accs[1],
        "train_seconds": round(seconds, 3),
        **cost.columns(),
    }


def train_round(r: Round, round_index: int, resumed: Resumed | None = None, spent: Cost | None = None) -> dict:
    """Train one round from the current (masked, rewound) weights, or from ``resumed`` (the step log and
    ``train_seconds`` continue its); return its row, with what its network cost: ``spent`` (what its masks cost)
    and the iterations it trained."""
    trainer, watch = _fit(r, round_index, resumed)
    early_stop, bird = watch["early_stop"], watch["bird"]
    seconds = watch["clock"].seconds()  # the interrupted parts of a resumed round included
    where = round_dir(r.run_dir, round_index)
    if bird is not None and trainer.is_global_zero:
        write_json(where / "early_bird.json", {"drawn_iteration": bird.drawn, "distances": bird.history.distances})
        if bird.drawn is None:
            log.warning("early_bird: the criterion never held; the ticket is drawn from round 0's last weights")
    if round_index == 0 and r.ticket.rewind_state is not None and trainer.is_global_zero:
        save_tensors(r.run_dir / "rewind.pt", r.ticket.rewind_state)
    final_test_acc = _test_acc(trainer, r.module, r.data, "final_test_acc")
    final_state = {k: v.detach().clone() for k, v in r.module.state_dict().items()}
    r.module.load_state_dict(early_stop.state)
    test_acc = _test_acc(trainer, r.module, r.data)
    if r.settings.save_weights and trainer.is_global_zero:
        save_tensors(where / "early_stop.pt", early_stop.state)
    r.module.load_state_dict(final_state)
    cost = (spent or Cost()).plus(trainer.global_step, r.settings.flops, r.ticket.mask)
    row = round_row(round_index, r.ticket.mask, early_stop, (test_acc, final_test_acc), seconds, cost)
    if trainer.is_global_zero:
        log.info(
            "round %d/%d | weights remaining %.1f%% | early stop it %d | val acc %.2f%% | test acc %.2f%% | %.1fs",
            round_index,
            r.cfg.prune.rounds,
            100 * row["weights_remaining"],
            row["early_stop_iteration"],
            100 * row["val_acc"],
            100 * row["test_acc"],
            seconds,
        )
    return row
