"""The run: iterative magnitude pruning from a config, round after round, with every round's results on disk.

Round 0 trains the dense network; each later round prunes the trained weights, rewinds the survivors and
retrains. Each round is one ``trainer.fit``; its early-stop point (lowest validation loss) is where the
test accuracy is reported. ``train(cfg)`` is what ``train.py`` calls and what tests call directly.

Under DDP every rank runs ``train`` and its loop (see :mod:`lth.distributed`): rank 0 makes the decisions that
read files and hands them to the others, and only rank 0 writes outputs and logs results.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import LearningRateMonitor

from lth.artifacts import holds_results, round_dir, save_tensors, write_json, write_rounds, write_text
from lth.callback import LotteryTicket
from lth.config import check_lengths, run_id, validate
from lth.controls import control_fn
from lth.data import ImageData
from lth.distributed import check_hardware, is_rank_zero, shared, start_ranks, world_size
from lth.errors import ConfigError
from lth.loggers import RunLoggers
from lth.masks import Mask
from lth.module import Classifier
from lth.progress import RoundProgress
from lth.provenance import machine, provenance
from lth.seeds import stream
from lth.steps import Step
from lth.store import (
    CHECKPOINT,
    MACHINE,
    adopt_dense,
    check_machine,
    dense_dir,
    finished,
    locked,
    publish_dense,
    restore,
    resumable_rows,
)
from lth.tracking import DivergedError, EarlyStopPoint, EvaluationCadence, RandomState, RankReport, RoundCheckpoint

log = logging.getLogger("lth")


def quiet_lightning() -> None:
    """Silence Lightning's per-fit banners and the warnings that do not apply to in-memory batches."""
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in (
        ".*does not have many workers.*",
        ".*smaller than the logging interval.*",
        ".*LeafSpec.*",
        ".*`isinstance.*treespec.*",
    ):
        warnings.filterwarnings("ignore", message=message)


def default_run_dir(cfg: DictConfig) -> Path:
    """Hydra's job folder when run by Hydra, else ``<paths.output_dir>/runs/<run_id>``."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_dir) / "runs" / run_id(cfg)


# -- ranks (DDP) -------------------------------------------------------------------------------------


def build_data(cfg: DictConfig) -> ImageData:
    """The dataset of ``cfg.dataset`` read from ``paths.data_dir``, split and batched."""
    data_seed = cfg.get("data_seed")
    return ImageData(
        source=hydra.utils.instantiate(cfg.dataset.source),
        root=cfg.paths.data_dir,
        val_size=cfg.dataset.val_size,
        batch_size=cfg.train.batch_size,
        mean=cfg.dataset.mean,
        std=cfg.dataset.std,
        seed=stream(cfg.seed, "data") if data_seed is None else data_seed,
        split_seed=stream(cfg.seed, "split"),
        eval_batch_size=cfg.train.eval_batch_size,
        augment=OmegaConf.to_container(cfg.dataset.augment) if cfg.dataset.get("augment") else None,
        loader=cfg.dataset.get("loader", "memory"),
        num_workers=cfg.dataset.get("num_workers", 0),
    )


def build_model(cfg: DictConfig, init_stream: str = "init") -> torch.nn.Module:
    """The network of ``cfg.model`` for the images of ``cfg.dataset``, initialised from a named stream of the seed.

    ``init_stream="reinit"`` draws a different initialisation from the same distribution (the reinit control).
    """
    options = {k: v for k, v in cfg.model.items() if k != "name"}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream(cfg.seed, init_stream))
        try:
            return hydra.utils.instantiate(
                options,
                in_channels=cfg.dataset.channels,
                image_size=cfg.dataset.image_size,
                num_classes=cfg.dataset.num_classes,
            )
        except InstantiationException as error:  # a model refusing the dataset's images says so in one line
            if isinstance(error.__cause__, ConfigError):
                raise error.__cause__ from None
            raise


def build_ticket(cfg: DictConfig) -> LotteryTicket:
    """The pruning callback of ``cfg.prune``."""
    p = cfg.prune
    return LotteryTicket(
        rate=p.rate,
        scope=p.scope,
        layer_rates=OmegaConf.to_container(p.layer_rates) if p.get("layer_rates") else None,
        target_sparsity=p.get("target_sparsity"),
        rounds=p.rounds,
        include=p.get("include") or (),
        exclude=p.get("exclude") or (),
        extra=p.get("extra") or (),
        rewind=p.rewind,
    )


def build_trainer(
    cfg: DictConfig,
    run_dir: Path,
    max_steps: int,
    eval_every: int,
    callbacks: list[pl.Callback],
    loggers: list,
    start: int = 0,
) -> pl.Trainer:
    """A Trainer for one round from iteration ``start`` of the axis: the hardware preset, ``loggers``, and
    validation every ``eval_every`` iterations (on the axis when ``callbacks`` hold an ``EvaluationCadence``)."""
    if loggers:
        callbacks = [*callbacks, LearningRateMonitor(logging_interval="step")]
    hw = cfg.hardware
    return pl.Trainer(
        max_steps=max_steps,
        val_check_interval=eval_every,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        accelerator=hw.accelerator,
        devices=hw.devices,
        num_nodes=hw.get("num_nodes", 1),
        strategy=hw.strategy,
        precision=hw.precision,
        logger=loggers or False,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=bool(cfg.train.get("progress", False)),
        # the loss before every evaluation (multiples of eval_every on the axis, and the end) is logged and checked
        log_every_n_steps=math.gcd(50, eval_every, start, start + max_steps),
        default_root_dir=str(run_dir),
    )


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


def _test_acc(trainer: pl.Trainer, module: Classifier, data: ImageData) -> float:
    return float(trainer.test(module, datamodule=data, verbose=False)[0]["test_acc"])


class RunError(RuntimeError):
    """A run that cannot go on (a diverged round): one line, earlier rounds stay on disk and resumable."""


def ensure_ticket(cfg: DictConfig, run_dir: Path) -> Path:
    """The folder of the ticket a control run is compared with (same config, no control), trained if missing."""
    ticket_cfg = cfg.copy()
    with open_dict(ticket_cfg):
        ticket_cfg.prune.control = None
    ticket_dir = run_dir.parent / run_id(ticket_cfg)
    with locked(run_dir.parent / f".{ticket_dir.name}.lock") if is_rank_zero() else nullcontext():
        log.info("control %s: the ticket's masks come from %s", cfg.prune.control, ticket_dir)
        with open_dict(ticket_cfg):
            ticket_cfg.resume = holds_results(ticket_dir)  # continue a ticket that was interrupted
        train(ticket_cfg, run_dir=ticket_dir)
    return ticket_dir


def train(cfg: DictConfig, run_dir: str | Path | None = None) -> dict:
    """Run IMP as ``cfg`` says and return ``{"run_dir", "run_id", "rounds"}`` (rounds as in ``rounds.csv``).

    Everything is checked before anything is written: a bad config raises :class:`~lth.errors.ConfigError`.
    A finished run is not trained again; with ``resume=true`` an interrupted one continues where it stopped.
    """
    validate(cfg)
    check_hardware(cfg)
    quiet_lightning()
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
    start_ranks(cfg)
    done = shared(lambda: finished(run_dir))
    if done is not None:
        if is_rank_zero():
            print(f"{format_table(done['rounds'])}\n\nalready finished: {run_dir} (delete it to train again)")
        return done
    rows = shared(lambda: resumable_rows(cfg, run_dir))
    if cfg.hardware.get("threads"):
        torch.set_num_threads(int(cfg.hardware.threads))
    trained_on = machine(cfg.hardware.accelerator)
    shared(lambda: check_machine(run_dir, trained_on))
    pl.seed_everything(cfg.seed, verbose=False)
    data = build_data(cfg)
    data.setup()
    iterations_per_epoch = data.iterations_per_epoch(world_size())
    total, eval_every = check_lengths(cfg, iterations_per_epoch)
    checkpoint_every = _checkpoint_every(cfg, iterations_per_epoch, eval_every)
    control = cfg.prune.get("control")
    apply_control = control_fn(control) if control else None
    module = Classifier(
        build_model(cfg),
        num_classes=cfg.dataset.num_classes,
        optimizer=hydra.utils.instantiate(cfg.optim.optimizer),
        schedule=OmegaConf.to_container(cfg.optim.schedule, resolve=True),
        total_steps=total,
        iterations_per_epoch=iterations_per_epoch,
        compile=bool(cfg.train.get("compile", False)),
    )
    ticket = build_ticket(cfg)
    ticket.parameters_of(module)  # bad layer patterns fail here, before anything is written
    if rows:  # the end of the last finished round: trained weights, masks, rewind point
        restore(module, [ticket], round_dir(run_dir, len(rows) - 1) / CHECKPOINT)

    ticket_dir = ensure_ticket(cfg, run_dir) if control else None
    if is_rank_zero():
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        write_json(run_dir / MACHINE, trained_on)
    loggers = RunLoggers(cfg, run_dir)
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
    )
    try:
        for round_index in range(len(rows), cfg.prune.rounds + 1):
            partial = round_dir(run_dir, round_index) / CHECKPOINT
            resume_from = shared(lambda partial=partial: partial if partial.is_file() else None)
            if resume_from is not None:  # masks and rewind point of the interrupted round; a bad file fails here
                restore(module, [ticket], resume_from)
            elif round_index and apply_control is not None:
                if control == "reinit" and ticket.round_index == 0:
                    reinit_rewind_point(cfg, module, ticket, run_dir)
                ticket_mask = Mask(torch.load(round_dir(ticket_dir, round_index) / "mask.pt"))
                draws = torch.Generator().manual_seed(stream(cfg.seed, f"control/{control}/round{round_index}"))
                ticket.advance(module, mask=apply_control(ticket_mask, ticket.mask.cpu(), draws))
            elif round_index:
                ticket.advance(module)
            else:
                ticket.apply_mask(module)
            progress.start(round_index, ticket.mask.weights_remaining())
            if round_index == 0 and resume_from is None and cfg.train.get("share_dense", True):
                row = dense_round(cfg, module, ticket, data, run_dir, settings, loggers)
            else:
                row = train_round(cfg, module, ticket, data, run_dir, round_index, settings, loggers, resume_from)
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
        print(f"\n{format_table(rows)}\n\nresults: {run_dir}")
    return summary


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
    machine: dict | None = None  # what of this machine changes the numbers (see lth.provenance)


def dense_round(
    cfg: DictConfig,
    module: Classifier,
    ticket: LotteryTicket,
    data: ImageData,
    run_dir: Path,
    settings: RoundSettings,
    loggers: RunLoggers,
) -> dict:
    """Round 0, taken from the runs that share it when one of them trained it, else trained and offered to them.

    Rank 0 holds the store's lock and decides; under DDP the other ranks follow (they train or restore with it).
    """
    store = dense_dir(cfg, run_dir, settings.machine or machine(cfg.hardware.accelerator))
    with locked(store.with_name(f".{store.name}.lock")) if is_rank_zero() else nullcontext():
        row = shared(lambda: adopt_dense(store, run_dir))
        if row is not None:
            restore(module, [ticket], round_dir(run_dir, 0) / CHECKPOINT)
            if is_rank_zero():
                log.info("round 0 (dense) taken from %s", store)
            return row
        row = train_round(cfg, module, ticket, data, run_dir, 0, settings, loggers, None)
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
) -> dict:
    """Train one round from the current (masked, rewound) weights, or from ``resume_from``; return its row."""
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
        RoundCheckpoint(where / CHECKPOINT, settings.checkpoint_every, start=start),
    ]
    if settings.rank_report:
        callbacks.append(RankReport(run_dir / "ranks", ticket))
    trainer = build_trainer(
        cfg, run_dir, steps, settings.eval_every, callbacks, loggers.for_round(round_index), start=start
    )
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=data, ckpt_path=str(resume_from) if resume_from else None)
    except DivergedError as error:
        raise RunError(f"round {round_index}: {error}; rounds before it are kept (resume=true continues)") from None
    seconds = time.perf_counter() - start
    if round_index == 0 and ticket.rewind_state is not None and trainer.is_global_zero:
        save_tensors(run_dir / "rewind.pt", ticket.rewind_state)

    final_test_acc = _test_acc(trainer, module, data)
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
