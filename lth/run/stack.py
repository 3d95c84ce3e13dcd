"""``train.engine=stacked``: the runs of a sweep that share a network's shapes and a round's length trained as the
members of one stack (:mod:`lth.run.stacked`), each writing the ordinary run folder of its job. Jobs that differ only
in :data:`MEMBER_KEYS` (seed, data order, control, how much and how each round prunes) share a stack; any other
difference puts them in another stack (:func:`stack_key`). Each member has its own parameters, masks, data order,
optimiser state, early-stop point and evaluations; rounds go in lockstep (a member resumed further waits for the
others), and a control member takes its ticket's mask of the same round from the ticket's folder, as a plain control
run does (a ticket not in the sweep is trained as a member too). Round starts, rows, masks, costs, summaries,
resuming and a shared round 0 (``train.share_dense``: one member trains it, the others take it) are the plain loop's
(:mod:`lth.run.loop`). A stack keeps no checkpoint within a round: a stop signal (SIGTERM, SIGINT) stops it at once
(:class:`~lth.run.signals.Interrupted`), and a stopped or killed stack resumes (``resume=true``) every member at the
start of its interrupted round, from the checkpoint written at the end of the round before. A member whose round
diverges ends as a plain run of its job does (:class:`Diverged`: the same line, its earlier rounds kept and
resumable) and leaves the stack, while the others train on to their end (a control whose ticket diverged ends with
its ticket's line, as a plain control run does). The engine is part of the run's identity: its numbers differ from
the Lightning loop's in the last bits (batched kernels), so the two never share a folder.

What does not stack yet is refused in one line naming its key (:func:`check_stackable`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lth.config.identity import identity, run_id
from lth.config.run import RunConfig
from lth.core.catalog import PRUNES_EVERY_ROUND, REWINDS_WEIGHTS, rewind_entry
from lth.core.errors import ConfigError
from lth.run.build import build_loggers, build_model, quiet_lightning
from lth.run.loop import build_run, done_before, finish_run, hold_run_folder, start_round
from lth.run.methods import spent_before
from lth.run.provenance import machine
from lth.run.resume import restore_finished, resume_as_needed
from lth.run.rounds import Round, RunError, dense_lock, diverged, round_row, say, say_discarded, take_dense
from lth.run.signals import STOP, Interrupted
from lth.run.stacked import ELEMENTWISE, Member, Span, fit_stack, step_log, tested, unfolds
from lth.state.artifacts import CONFIG, holds_results, round_dir, save_tensors, write_config, write_json, write_rounds
from lth.state.store import (
    CHECKPOINT,
    MACHINE,
    adopt_dense,
    check_machine,
    dense_dir,
    discard_unusable_dense,
    publish_dense,
    resumable_rows,
)

# what members of one stack may differ in: nothing of it changes the network's shapes or a round's length
MEMBER_KEYS = (
    "seed",
    "data_seed",
    "resume",
    "prune.control",
    "prune.rate",
    "prune.scope",
    "prune.layer_rates",
    "prune.target_sparsity",
    "prune.rounds",
    "prune.method",
)
ENGINES = ("lightning", "stacked")


class Diverged(RunError):
    """Members of the stacks whose rounds diverged while the others trained on: ``failures``, each one's error by its
    index in the runs given. Its text is the first failure's line."""

    def __init__(self, failures: dict[int, RunError]) -> None:
        super().__init__(str(next(iter(failures.values()))))
        self.failures = failures


def check_stackable(cfg: RunConfig) -> None:
    """Refuse, in one line naming the key, what the stacked engine does not train yet."""
    if cfg.train.engine != "stacked":  # its results would be filed under another engine's run id
        raise ConfigError("train.engine", f"got {cfg.train.engine}; a stack trains train.engine=stacked runs only")
    p, hw = cfg.prune, cfg.hardware
    refusals = {
        "hardware.devices": (hw.devices not in (1, "1") or hw.num_nodes != 1, "a stack trains on one device (no DDP)"),
        "hardware.precision": (str(hw.precision) not in ("32", "32-true"), "a stack trains in 32-true only"),
        "hardware.rank_report": (hw.rank_report, "a stack writes no rank reports"),
        "prune.method": (not p.method.has(PRUNES_EVERY_ROUND), "a stack prunes with magnitude or lamp only"),
        "prune.rewind": (not rewind_entry(p.rewind).has(REWINDS_WEIGHTS), "a stack rewinds to init or a Step only"),
        "prune.mask_from": (p.mask_from is not None, "a stack starts from dense masks only"),
        "train.compile": (cfg.train.compile, "a stack is not compiled"),
        "train.checkpoint_every": (cfg.train.checkpoint_every is not None, "a stack checkpoints at round ends only"),
        "dataset.loader": (cfg.dataset.loader != "memory", "a stack draws batches with the memory loader only"),
        "dataset.augment": (bool(cfg.dataset.augment), "a stack does not augment"),
        "trainer": (
            any(v is not None for k, v in cfg.trainer.items() if not k.startswith("_")),
            "a stack takes no Lightning Trainer arguments (gradient clipping, accumulation, ...)",
        ),
        "callbacks": (bool(cfg.callbacks), "a stack takes no Lightning callbacks"),
        "optim.optimizer": (
            cfg.optim.optimizer.get("_target_") not in ELEMENTWISE,
            f"a stack steps elementwise optimisers only ({', '.join(ELEMENTWISE)})",
        ),
    }
    for key, (refused, why) in refusals.items():
        if refused:
            raise ConfigError(key, f"not supported by train.engine=stacked yet: {why}")
    network = build_model(cfg)
    if any(True for _ in network.buffers()) or any(isinstance(m, torch.nn.Dropout) for m in network.modules()):
        raise ConfigError("model", f"{cfg.model_name} has buffers or dropout: train.engine=stacked stacks neither yet")
    convs = [m for m in network.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
    if not all(unfolds(m) for m in convs):
        raise ConfigError(
            "model",
            f"{cfg.model_name} has convolutions other than plain 2-d ones (groups, transposed, padding by name or "
            "mode), which train.engine=stacked does not stack yet",
        )


def stack_key(cfg: RunConfig) -> str:
    """What members of one stack share: the identity less :data:`MEMBER_KEYS`, and the device it trains on."""
    ident = identity(cfg.plain)
    for key in MEMBER_KEYS:
        *parents, leaf = key.split(".")
        node = ident
        for parent in parents:
            node = node.get(parent) or {}
        node.pop(leaf, None)
    ident["device"] = [cfg.hardware.accelerator, cfg.hardware.threads]
    return json.dumps(ident, sort_keys=True, default=str)


def stacks(cfgs: Sequence[RunConfig], size: int) -> list[list[int]]:
    """The indices of ``cfgs`` in stacks of at most ``size`` members: jobs of one :func:`stack_key`, in order."""
    groups: dict[str, list[int]] = {}
    for index, cfg in enumerate(cfgs):
        groups.setdefault(stack_key(cfg), []).append(index)
    return [g[lo : lo + size] for g in groups.values() for lo in range(0, len(g), size)]


@dataclass
class Job:
    """One member's run: its config and folder, its round settings (None: finished already, ``summary`` holds it),
    the rows finished so far, its ticket's folder (a control's), and why it ended without one (a diverged round)."""

    cfg: RunConfig
    run_dir: Path
    r: Round | None
    rows: list[dict] = field(default_factory=list)
    ticket_dir: Path | None = None
    summary: dict | None = None
    error: RunError | None = None

    @property
    def next_round(self) -> int:
        return len(self.rows)


def with_tickets(cfgs: Sequence[RunConfig], run_dirs: Sequence[Path]) -> tuple[list[RunConfig], list[Path]]:
    """``cfgs`` and their folders with the ticket of every control added where the jobs lack it (beside the
    control's folder, as a plain control run trains it), tickets first."""
    pairs = list(zip(cfgs, [Path(d) for d in run_dirs], strict=True))
    have = {d.resolve() for _, d in pairs}
    for cfg, run_dir in list(pairs):
        if cfg.prune.control is not None:
            ticket_cfg = cfg.but(**{"prune.control": None})
            ticket_dir = run_dir.parent / run_id(ticket_cfg.plain)
            if ticket_dir.resolve() not in have:
                pairs.append((ticket_cfg, ticket_dir))
                have.add(ticket_dir.resolve())
    pairs.sort(key=lambda pair: pair[0].prune.control is not None)
    return [c for c, _ in pairs], [d for _, d in pairs]


def train_stack(cfgs: Sequence[RunConfig], run_dirs: Sequence[Path], size: int) -> list[dict]:
    """Train the runs ``cfgs`` (in ``run_dirs``) in stacks of at most ``size`` members; return their summaries in
    the order given (as :func:`lth.run.loop.train` returns one). Every config is checked before anything is
    written; each member's folder is locked until every stack is done; the stacks train one after another.
    Members whose rounds diverged are raised at the end, once every other member is done (:class:`Diverged`)."""
    quiet_lightning()
    for cfg in cfgs:
        check_stackable(cfg)
    all_cfgs, all_dirs = with_tickets(cfgs, run_dirs)
    summaries: dict[Path, dict | None] = {}
    failed: dict[Path, RunError] = {}  # by folder: tickets too, whose controls end with their error
    with STOP.installed(), ExitStack() as hold:  # a stop signal stops the stack at once (Interrupted)
        for run_dir in all_dirs:
            hold_run_folder(hold, run_dir)
        try:
            for group in stacks(all_cfgs, size):  # one stack's data and networks in memory at a time
                jobs, kept = [], {}
                for i in group:
                    jobs.append(_prepare(all_cfgs[i], all_dirs[i]))
                    share_splits(jobs[-1], kept)
                _train_group(jobs, failed)
                summaries.update({j.run_dir.resolve(): j.summary for j in jobs})
                failed.update({j.run_dir.resolve(): j.error for j in jobs if j.error is not None})
        except Interrupted as stop:  # resume=true continues it, unless no folder holds anything yet
            stop.resume = any(holds_results(d) for d in all_dirs)
            raise
    ordered = [summaries[Path(d).resolve()] for d in run_dirs]
    failures = {i: failed[Path(d).resolve()] for i, d in enumerate(run_dirs) if Path(d).resolve() in failed}
    if failures:
        raise Diverged(failures)
    return ordered


def _prepare(cfg: RunConfig, run_dir: Path) -> Job:
    """A member's run as the plain loop starts it: finished already, or built and at the start of its next round."""
    done = done_before(cfg, run_dir)
    if done is not None:
        return Job(cfg, run_dir, None, summary=done)
    cfg = resume_as_needed(cfg, run_dir)
    rows = resumable_rows(cfg, run_dir)
    if cfg.hardware.threads:
        torch.set_num_threads(cfg.hardware.threads)
    trained_on = machine(cfg.hardware.accelerator)
    check_machine(run_dir, trained_on)
    data, module, ticket, settings = build_run(cfg, trained_on)
    if rows and len(rows) <= cfg.prune.rounds:  # the interrupted round restarts from its start
        interrupted = round_dir(run_dir, len(rows)) / CHECKPOINT
        if interrupted.is_file():
            interrupted.unlink()
        say(f"resume: round {len(rows)} of {run_dir} restarts from its start (a stack keeps no mid-round checkpoint)")
        rows, _ = restore_finished(module, ticket, run_dir, rows, dense_dir(cfg, run_dir, trained_on))
    ticket_dir = run_dir.parent / run_id(cfg.but(**{"prune.control": None}).plain) if cfg.prune.control else None
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir / CONFIG, cfg)
    write_json(run_dir / MACHINE, trained_on)
    r = Round(cfg, module, ticket, data, run_dir, settings, build_loggers(cfg, run_dir), None)
    return Job(cfg, run_dir, r, list(rows), ticket_dir)


def share_splits(job: Job, kept: dict[str, dict]) -> None:
    """Give a member the splits ``kept`` holds of the same dataset split alike (a seed's ticket and its controls
    share them), else keep its own there; each member still draws its own batches."""
    if job.r is not None:
        key = json.dumps([job.r.data.split_seed, job.cfg.plain["dataset"]], sort_keys=True, default=str)
        job.r.data.splits = kept.setdefault(key, job.r.data.splits)


def device_of(cfg: RunConfig) -> torch.device:
    """Where a stack of ``cfg`` trains: the GPU for ``gpu``/``cuda`` (and ``auto`` where there is one), else the CPU."""
    gpu = cfg.hardware.accelerator in ("gpu", "cuda") or (
        cfg.hardware.accelerator == "auto" and torch.cuda.is_available()
    )
    return torch.device("cuda" if gpu else "cpu")


def _train_group(jobs: list[Job], failed: dict[Path, RunError]) -> None:
    """Train one stack's members round after round in lockstep; write each member's rows, files and summary. A member
    whose round diverges, or whose ticket's did (``failed``, by folder), ends there with its error."""
    live = [j for j in jobs if j.summary is None]
    try:
        while True:
            for j in live:
                ticket = failed.get(j.ticket_dir.resolve()) if j.ticket_dir is not None else None
                if j.error is None and ticket is not None and j.next_round <= j.r.cfg.prune.rounds:
                    _end_job(j, ticket)  # its ticket has no masks for its later rounds
            waiting = [j for j in live if j.error is None and j.next_round <= j.r.cfg.prune.rounds]
            if not waiting:
                break
            round_index = min(j.next_round for j in waiting)
            _round([j for j in waiting if j.next_round == round_index], round_index, failed)
    except BaseException:
        for j in live:
            if j.error is None:
                j.r.loggers.finish(exit_code=1)
        raise
    for j in live:
        if j.error is None:
            j.r.loggers.finish()
            j.summary = finish_run(j.r, j.rows)


def _end_job(j: Job, error: RunError) -> None:
    """End a member's run with ``error``: its rounds so far stay on disk, its controls learn it by its folder."""
    j.error = error
    j.r.loggers.finish(exit_code=1)


def _round(jobs: list[Job], round_index: int, failed: dict[Path, RunError]) -> None:
    """Start round ``round_index`` of ``jobs`` (tickets first: a control reads its ticket's mask), fit them as one
    stack, write the row of each member that did not diverge; end those that did. Round 0 is fitted once for the
    members that share it (:func:`_sharing`), the others given its result."""
    for j in jobs:
        r = j.r
        control = r.ticket.control_fn(r.cfg.prune.control.name) if r.cfg.prune.control else None
        start_round(r, round_index, j.rows, j.ticket_dir, control)
        where = round_dir(r.run_dir, round_index)
        save_tensors(where / "mask.pt", dict(r.ticket.mask))
        write_json(where / "sparsity.json", r.ticket.mask.report())
    for j in jobs:  # tells each ticket the iterations per epoch (a rewind Step in epochs); one length for all
        steps = j.r.ticket.steps_this_round(j.r.settings.total, j.r.settings.iterations_per_epoch)
    first = jobs[0].r
    span = Span(steps, first.ticket.start_iteration(), first.settings.eval_every, first.settings.total)
    with ExitStack() as hold:  # the stores of round 0 stay locked until every member sharing one has it
        shares = _sharing(jobs, hold) if round_index == 0 else {}
        trained = [j for j in jobs if not any(j is t for _, takers in shares.values() for t in takers)]
        if trained:
            _fit_round(trained, round_index, span, failed)
        for store, (trainer, takers) in shares.items():
            _take_round0(store, trainer, takers)


def _sharing(jobs: list[Job], hold: ExitStack) -> dict[Path, tuple[Job | None, list[Job]]]:
    """The members sharing round 0 (``train.share_dense``) by the store keeping it, locked in ``hold`` as the plain loop
    locks it: the one that trains it (None: kept already) and those that take it. A store not usable is discarded."""
    shares: dict[Path, tuple[Job | None, list[Job]]] = {}
    for j in jobs:
        if not j.cfg.train.share_dense:
            continue
        store = dense_dir(j.cfg, j.run_dir, j.r.settings.machine)
        if store in shares:
            shares[store][1].append(j)
            continue
        hold.enter_context(dense_lock(store))
        say_discarded(store, discard_unusable_dense(store))
        kept = (store / "row.json").is_file()
        shares[store] = (None, [j]) if kept else (j, [])
    return shares


def _take_round0(store: Path, trainer: Job | None, takers: list[Job]) -> None:
    """Offer ``trainer``'s round 0 in ``store``, then give it to ``takers`` as the plain loop's shared round 0 does
    (its files, row, weights and pruning state). Where it diverged, the takers train it next (and diverge alike)."""
    if trainer is not None:
        if trainer.error is not None:
            return
        publish_dense(trainer.run_dir, store, trainer.rows[0])
    for j in takers:
        row = take_dense(j.r, store, adopt_dense(store, j.run_dir))
        j.rows.append(row)
        write_rounds(j.run_dir / "rounds.csv", j.rows)
        j.r.loggers.log_round(row, j.r.ticket.mask.report())


def _fit_round(jobs: list[Job], round_index: int, span: Span, failed: dict[Path, RunError]) -> None:
    """Fit round ``round_index`` (``span``) of ``jobs`` as one stack; write the rows of those that did not diverge."""
    members = [
        Member(
            j.r.cfg,
            j.r.module,
            j.r.ticket,
            j.r.data,
            j.r.run_dir,
            step_log(j.r.loggers, round_index, span, j.r.settings.iterations_per_epoch),
        )
        for j in jobs
    ]
    device = device_of(jobs[0].cfg)
    watches, seconds, failures = fit_stack(members, span, device)
    for k, why in failures.items():
        if members[k].steps is not None:
            members[k].steps.finish("failed")
        _end_job(jobs[k], diverged(round_index, why))
        failed[jobs[k].run_dir.resolve()] = jobs[k].error  # its controls in this stack end before their next round
    kept = [k for k in range(len(jobs)) if k not in failures]
    if not kept:
        return
    jobs, members, watches = [jobs[k] for k in kept], [members[k] for k in kept], [watches[k] for k in kept]
    if round_index == 0:
        for j in jobs:
            j.r.ticket.round0_steps = span.steps
    finals = [{k: v.detach().clone() for k, v in j.r.module.state_dict().items()} for j in jobs]
    final_tests = tested(members, finals, device)
    tests = tested(members, [w.state for w in watches], device)
    for j, member, watch, final, early in zip(jobs, members, watches, final_tests, tests, strict=True):
        if member.steps is not None:
            member.steps.log_tests(final, early, span.start + span.steps)
        _end_round(j, round_index, span, (watch, final[1], early[1], seconds))


def _end_round(j: Job, round_index: int, span: Span, result: tuple) -> None:
    """Write one member's round: its files, its row in ``rounds.csv``, its round-end checkpoint."""
    watch, final_test_acc, test_acc, seconds = result
    r, where = j.r, round_dir(j.r.run_dir, round_index)
    if r.settings.save_weights:
        save_tensors(where / "early_stop.pt", watch.state)
    if round_index == 0 and r.ticket.rewind_state is not None:
        save_tensors(r.run_dir / "rewind.pt", r.ticket.rewind_state)
    spent = spent_before(r.cfg, round_index, j.rows, j.ticket_dir)
    cost = spent.plus(span.steps, r.settings.flops, r.ticket.mask)
    row = round_row(round_index, r.ticket.mask, watch, (test_acc, final_test_acc), seconds, cost)
    state = {k: v.detach().clone() for k, v in r.module.state_dict().items()}
    ticket_state = {r.ticket.state_key: r.ticket.state_dict()}
    checkpoint = {"state_dict": state, "callbacks": ticket_state, "global_step": span.steps}
    save_tensors(where / CHECKPOINT, checkpoint)
    j.rows.append(row)
    write_rounds(r.run_dir / "rounds.csv", j.rows)
    r.loggers.log_round(row, r.ticket.mask.report())
    if round_index:
        (round_dir(r.run_dir, round_index - 1) / CHECKPOINT).unlink(missing_ok=True)
