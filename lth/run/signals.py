"""Stopping a run on a signal at a safe point, and telling how to continue it (or continuing it by itself).

SIGTERM (what ``timeout``, SLURM and Kubernetes send) and SIGINT (Ctrl+C) stop a run cleanly:

- **inside a round** after the batch being trained, and after its evaluation when one is due: the point where
  :class:`~lth.state.checkpoints.RoundCheckpoint` writes, so the round's ``last.ckpt`` is written there and
  ``resume=true`` continues the round from that iteration with the numbers of an uninterrupted run;
- **outside a round** (reading data, waiting for a lock, testing) at once: every file is written atomically, and a
  round's ``last.ckpt`` is written when its training ends.

:class:`Interrupted` carries the signal up to ``train.py``, which prints one line (``stopped by SIGTERM in round 2
at iteration 340; continue with: python train.py ... resume=true``) and exits with 128 + the signal's number (143
for SIGTERM, 130 for SIGINT), so schedulers never take a stopped run for a finished one. A second signal stops at
once (the last checkpoint written stays).

Lightning stops a fit on SIGTERM itself: its handler sets ``trainer.received_sigterm``, its loops raise
``SIGTERMException`` when they next look, and callbacks see it in ``on_exception``. lth builds on that: during the
training loop of a fit, :class:`SafeStop` puts lth's handler back in place of Lightning's (which would stop inside
an evaluation pass, and under DDP broadcasts from inside the signal handler) and stops the fit after a batch,
agreed by all DDP ranks (``strategy.reduce_boolean_decision``), so every rank stops after the same batch. After a
batch that is not evaluated it sets ``received_sigterm`` and Lightning raises ``SIGTERMException`` after the batch;
after one that is evaluated SafeStop raises it once the evaluation has ended (Lightning's evaluation loop would
raise after its first batch, and the evaluation would be lost), where ``train.checkpoint_every`` checkpoints are
written. ``RoundCheckpoint.on_exception`` writes the checkpoint (after an epoch's last batch, as of the next
epoch's start: see :mod:`lth.state.checkpoints`) and :meth:`StopSignals.installed` turns the exception into
:class:`Interrupted`. At the fit's last batch the round ends first: its checkpoint, then :class:`Interrupted`.

On SLURM a job that is stopped in order to be requeued continues by itself: the requeue signal (submitit's
``SUBMITIT_PREEMPT_SIGNAL``, USR2 by default, under ``hydra/launcher=slurm``; SIGUSR1, Lightning's, for a job started
with ``sbatch --signal=USR1@90``) stops the run the same way, then submitit's handler (or ``scontrol requeue``)
requeues the job, and a requeued job (``SLURM_RESTART_COUNT`` > 0) resumes its run folder without ``resume=true``
(:func:`requeued`). submitit does not always requeue: it counts the signal as a time-out once the job has run
min(0.8 x limit, limit - 10 min) (from its first second when ``timeout_min`` <= 10) and then requeues only while
``max_num_timeout`` time-outs are left; :func:`submitit_refusal` tells beforehand, with submitit's own numbers, and
the run then says that the job is not requeued and how to continue it instead of handing over to submitit.
Lightning's own auto-requeue is turned off (:func:`slurm_plugins`): it would save
``hpc_ckpt_*.ckpt`` into the run folder and load it into every later fit of the job, whatever its round.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, NoReturn

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lth.config.run import Job

log = logging.getLogger("lth")


class Interrupted(BaseException):
    """A run stopped by a signal after writing what ``resume=true`` needs.

    A ``BaseException`` (as ``KeyboardInterrupt`` is), so that no ``except Exception`` on the way up takes it for
    an error of the code it went through.
    """

    def __init__(self, signum: int, round_index: int | None = None, iteration: int | None = None) -> None:
        super().__init__(signum, round_index, iteration)
        self.signum, self.round_index, self.iteration = signum, round_index, iteration
        self.resume = True  # whether the run folder holds something to continue (the command adds resume=true)

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a process the signal ended (143 SIGTERM, 130 SIGINT)."""
        return 128 + self.signum

    @property
    def name(self) -> str:
        """The signal's name, ``SIGTERM``."""
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    def where(self) -> str:
        """`` in round 2 at iteration 340``: where the run stopped, as far as it is known."""
        text = "" if self.round_index is None else f" in round {self.round_index}"
        return text if self.iteration is None else f"{text} at iteration {self.iteration}"

    def line(self, command: str, requeue: bool = False, refusal: str | None = None) -> str:
        """The one line printed when the run stops: what stopped it, where, and the command that continues it (or,
        ``requeue``, that the SLURM job is requeued; ``refusal``: why it will not be)."""
        if requeue:
            return f"stopped by {self.name}{self.where()}; requeueing the SLURM job, which then continues by itself"
        why = f"; {refusal}" if refusal else ""
        return f"stopped by {self.name}{self.where()}{why}; continue with: {command}"

    def __str__(self) -> str:
        return f"stopped by {self.name}{self.where()}"


def requeue_signal() -> int | None:
    """The signal that asks this SLURM job to checkpoint and requeue itself, or None outside SLURM.

    Under submitit (``hydra/launcher=slurm``) submitit's preemption signal, else Lightning's SIGUSR1 for an
    ``sbatch`` job (it needs ``#SBATCH --signal=USR1@90``).
    """
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
        return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
    if os.environ.get("SLURM_JOB_ID") and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        return getattr(signal, "SIGUSR1", None)
    return None


def requeued() -> bool:
    """Whether this process belongs to a SLURM job that was requeued (it then resumes its run folder)."""
    return os.environ.get("SLURM_RESTART_COUNT", "0").strip() not in ("", "0")


def slurm_plugins() -> list:
    """Trainer plugins: on SLURM, Lightning's cluster environment without its auto-requeue (see the module doc)."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    if not SLURMEnvironment.detect():
        return []
    return [SLURMEnvironment(auto_requeue=False)]


def _signals() -> list[int]:
    wanted = [signal.SIGTERM, signal.SIGINT, requeue_signal()]
    return list(dict.fromkeys(s for s in wanted if s is not None))


class StopSignals:
    """The process's stop signals while a run trains: one instance, :data:`STOP`, shared by nested runs (a control
    run trains its ticket inside its own run)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.fitting = False  # in the training loop of a fit: stop after the batch, not at once
        self.round_index: int | None = None
        self.iteration: int | None = None
        self.previous: dict[int, Any] = {}
        self.depth = 0

    def interrupted(self) -> Interrupted:
        """The :class:`Interrupted` of the signal received, where the run is now."""
        assert self.signum is not None
        return Interrupted(self.signum, self.round_index, self.iteration)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler: remember the signal; in a fit stop after the batch, elsewhere (or at a second
        signal) stop now."""
        again = self.signum is not None
        self.signum = self.signum or signum
        if self.fitting and not again:
            log.info("%s received: stopping after this batch", signal.Signals(signum).name)
            return
        self.fitting = False
        raise self.interrupted()

    def take_over(self) -> None:
        """Put this handler back for every stop signal (Lightning registers its own at the start of each fit)."""
        if self.depth and threading.current_thread() is threading.main_thread():
            for signum in self.previous:
                signal.signal(signum, self.handle)

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Handle the stop signals for the duration (the outermost use installs and restores the handlers), and
        turn Lightning's ``SIGTERMException`` of a stop into :class:`Interrupted`."""
        main = threading.current_thread() is threading.main_thread()
        if self.depth == 0:
            self.signum, self.fitting, self.round_index, self.iteration = None, False, None, None
            if main:
                self.previous = {signum: signal.getsignal(signum) for signum in _signals()}
                for signum in self.previous:
                    signal.signal(signum, self.handle)
        self.depth += 1
        try:
            yield
        except SIGTERMException:
            if self.signum is None:  # Lightning's own (a handler of someone else's): let it go as it came
                raise
            raise self.interrupted() from None
        finally:
            self.depth -= 1
            if self.depth == 0:
                self.fitting = False
                if main:
                    for signum, handler in self.previous.items():
                        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def refusal(self, stop: Interrupted) -> str | None:
        """Why submitit will not requeue this job after ``stop``, its requeue signal (None: it will, or not under
        submitit)."""
        if stop.signum != requeue_signal() or os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
            return None
        return submitit_refusal(self.previous.get(stop.signum))

    def requeue(self, stop: Interrupted, rank_zero: bool) -> bool:
        """Requeue this SLURM job if ``stop`` came from its requeue signal: submitit's handler does it (and exits)
        under submitit, ``scontrol requeue`` otherwise. Whether the job is being requeued."""
        if stop.signum != requeue_signal() or self.refusal(stop):
            return False
        handler = self.previous.get(stop.signum)
        if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and callable(handler):
            handler(stop.signum, None)  # checkpoints submitit's submission, requeues the job, exits
            return True
        if rank_zero:
            job = os.environ["SLURM_JOB_ID"]
            if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
                job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
            try:
                subprocess.run(["scontrol", "requeue", job], check=True, timeout=60)
            except (OSError, subprocess.SubprocessError) as error:
                log.warning("scontrol requeue %s failed (%s)", job, error)
                return False
        return True


STOP = StopSignals()


def submitit_refusal(handler: Any, now: float | None = None) -> str | None:
    """Why submitit's requeue ``handler`` (its ``SignalHandler.checkpoint_and_try_requeue``) would not requeue
    the job now, by submitit's own accounting, or None (it would; or the handler is not submitit's).

    submitit takes the signal for a time-out once the job has run min(0.8 x limit, limit - 10 min) since it
    started, and then requeues only while time-outs are left of ``max_num_timeout`` (one used per time-out); a
    signal before that is a pre-emption, always requeued.
    """
    owner = getattr(handler, "__self__", None)
    delayed = getattr(owner, "_delayed", None)
    started = getattr(owner, "_start_time", None)
    limit, left = getattr(delayed, "_timeout_min", None), getattr(delayed, "_timeout_countdown", None)
    if not isinstance(started, int | float) or not isinstance(limit, int | float) or not isinstance(left, int):
        return None
    ran = (time.time() if now is None else now) - started
    if ran < min(0.8 * limit * 60, limit * 60 - 600) or left >= 1:
        return None
    return (
        f"submitit counts it as a time-out ({ran / 60:.1f} min into the job's {limit:g}-min limit; one is any "
        f"signal after min(0.8 x limit, limit - 10 min)) and does not requeue the job: no requeue after a time-out "
        f"is left (hydra.launcher.max_num_timeout)"
    )


class SafeStop(pl.Callback):
    """Stops the training loop of a fit after a batch when a stop signal came (see the module doc).

    ``round_index`` and ``start`` (where the fit starts on the iteration axis) name the point reached; ``due`` (the
    round's :meth:`~lth.lightning.tracking.EvaluationCadence.due`) says which iterations are evaluated. A stop at a
    batch that is evaluated stops once that evaluation has ended, where a ``train.checkpoint_every`` checkpoint is
    written (Lightning would stop it after its first batch), so the round's checkpoint holds that evaluation and
    the resumed fit goes on after it; at the fit's last batch it stops after the round's checkpoint.
    """

    def __init__(
        self, round_index: int, start: int = 0, due: Callable[[int], bool] | None = None, stop: StopSignals = STOP
    ) -> None:
        self.round_index, self.start, self.due, self.stop = round_index, start, due, stop
        self._stepped = 0  # the optimiser step after the last batch seen
        self._after_evaluation = False  # a stop agreed at a batch that is evaluated: taken when that ends

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stepped, self._after_evaluation = trainer.global_step, False
        self.stop.round_index, self.stop.iteration = self.round_index, self.start + trainer.global_step
        self.stop.fitting = True
        self.stop.take_over()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        stepped = trainer.global_step != self._stepped  # not inside a group of accumulated gradients (not saved)
        self._stepped = trainer.global_step
        self.stop.iteration = self.start + trainer.global_step
        if not (stepped and trainer.strategy.reduce_boolean_decision(self.stop.signum is not None, all=False)):
            return
        if self.stop.signum is None:  # another rank received it
            self.stop.signum = signal.SIGTERM
        if 0 < trainer.max_steps <= trainer.global_step:  # the fit's last batch: on_train_end stops
            return
        if self.due is not None and self.due(self.stop.iteration):
            self._after_evaluation = True
        else:  # what Lightning's SIGTERM handler sets: its loop raises SIGTERMException after this batch
            trainer._signal_connector.received_sigterm = True

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._after_evaluation:  # the others have seen the evaluation (SafeStop comes after them)
            self._after_evaluation = False
            raise SIGTERMException

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the round's checkpoint is written (RoundCheckpoint comes first): a signal of the last batch stops here
        self.stop.fitting = False
        if self.stop.signum is not None:
            raise self.stop.interrupted()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.stop.fitting = False


def _sets(argument: str, key: str) -> bool:
    return argument.lstrip("+~").partition("=")[0] == key


def continue_command(stop: Interrupted, job: Job) -> str:
    """The command that continues a stopped run: ``python train.py <argv> resume=true``.

    ``job.argv`` is the command line as typed (a sweep continues in its folder: ``hydra.sweep.dir=<sweep>``); in a
    process that did not read it (a launcher's job) it is the job's overrides, in the job's folder. ``resume=true``
    is left out when the run folder holds nothing yet (stopped before its first file, or while a control run
    trained its ticket, which the same command continues).
    """
    extra: list[str] = []
    resume, argv = stop.resume, job.argv
    if job.output_dir is not None:  # a Hydra job
        if job.multirun and argv is not None:  # the sweep, in its folder
            extra, resume = [f"hydra.sweep.dir={job.sweep_dir}"], True  # resume=true starts the jobs not started
        elif argv is None:  # this job alone, in its folder
            argv = job.overrides
            if job.multirun:
                extra = [f"hydra.run.dir={job.output_dir}"]
    keys = [e.partition("=")[0] for e in extra]
    args = [a for a in argv or [] if not _sets(a, "resume") and not any(_sets(a, k) for k in keys)]
    return shlex.join(["python", "train.py", *args, *extra, *(["resume=true"] if resume else [])])


def exit_stopped(stop: Interrupted, job: Job, rank_zero: bool) -> NoReturn:
    """Print the one line of a stopped run (rank 0), requeue it when SLURM asked for that, and exit with
    :attr:`Interrupted.exit_code`. ``job``: what Hydra knew of the job, the command line as typed included."""
    refusal = STOP.refusal(stop)
    requeue = stop.signum == requeue_signal() and refusal is None
    command = continue_command(stop, job)
    if rank_zero:
        print(stop.line(command, requeue=requeue, refusal=refusal), file=sys.stderr, flush=True)
    if requeue and not STOP.requeue(stop, rank_zero) and rank_zero:
        print(f"the job was not requeued; continue with: {command}", file=sys.stderr, flush=True)
    sys.exit(stop.exit_code)
