"""Every object of a run, built from the config: data, network, classifier, pruning callback, Trainer, callbacks
and loggers.

This is the one place that constructs them; the IMP loop, the instability analysis, export and the benchmark
call it. The Trainer is ``hydra.utils.instantiate(cfg.trainer)`` (a partial of Lightning's ``Trainer`` with the
arguments a user sets under ``trainer.``, e.g. ``trainer.gradient_clip_val=1.0``), completed with where it runs
(``hardware.*``) and the arguments the IMP loop owns (:data:`lth.config.validate.LOOP_OWNED`). Extra Lightning
callbacks come from ``callbacks.<name>`` (each a ``_target_`` and its arguments), one fresh instance per round.
"""

from __future__ import annotations

import inspect
import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from pytorch_lightning.callbacks import LearningRateMonitor

from lth.config.run import RunConfig, thawed
from lth.config.targets import check_per_round
from lth.core.catalog import PRUNES_EVERY_ROUND
from lth.core.errors import ConfigError, first_line
from lth.core.seeds import stream
from lth.data import ImageData
from lth.lightning.callback import ArgumentError, LotteryTicket
from lth.lightning.module import Classifier
from lth.models.ecosystem import check_images
from lth.models.weights import load_weights
from lth.run.loggers import RunLoggers, logging_interval
from lth.run.signals import slurm_plugins


def quiet_lightning() -> None:
    """Silence Lightning's per-fit banners and the warnings that do not apply to in-memory batches."""
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in (
        ".*does not have many workers.*",
        ".*smaller than the logging interval.*",
        ".*LeafSpec.*",
        ".*`isinstance.*treespec.*",
        ".*Experiment logs directory .* exists and is not empty.*",  # a round's step log is restarted or continued
        ".*The `srun` command is available on your system but is not used.*",  # a login node: SLURM runs go by sbatch
    ):
        warnings.filterwarnings("ignore", message=message)


def build_data(cfg: RunConfig) -> ImageData:
    """The dataset of ``cfg.dataset`` read from ``paths.data_dir``, split and batched."""
    data_seed = cfg.data_seed
    return ImageData(
        source=hydra.utils.instantiate(thawed(cfg.dataset.source)),
        root=cfg.data_dir,
        val_size=cfg.dataset.val_size,
        batch_size=cfg.train.batch_size,
        mean=cfg.dataset.mean,
        std=cfg.dataset.std,
        seed=stream(cfg.seed, "data") if data_seed is None else data_seed,
        split_seed=stream(cfg.seed, "split"),
        eval_batch_size=cfg.train.eval_batch_size,
        augment=thawed(cfg.dataset.augment),
        loader=cfg.dataset.loader,
        num_workers=cfg.dataset.num_workers,
        accumulate=accumulation(cfg),
    )


def accumulation(cfg: RunConfig) -> int:
    """Batches per optimiser step (``trainer.accumulate_grad_batches``, 1 when unset)."""
    return int(cfg.trainer.get("accumulate_grad_batches") or 1)


def iterations_per_epoch(cfg: RunConfig, data: ImageData, world_size: int = 1) -> int:
    """Optimiser steps per epoch of one rank (what ``ep`` means in a Step): its batches over the accumulation."""
    return math.ceil(data.batches_per_epoch(world_size) / accumulation(cfg))


def build_model(cfg: RunConfig, init_stream: str = "init") -> torch.nn.Module:
    """The network of ``cfg.model`` for the images of ``cfg.dataset``, initialised from a named stream of the seed,
    then loaded with the pre-trained weights of ``model.weights`` where set.

    ``init_stream="reinit"`` draws a different initialisation from the same distribution (the reinit control): a
    fresh draw from the model's own initialiser, never the pre-trained weights.
    """
    d = cfg.dataset
    model = build_network(cfg.model, (d.channels, d.image_size, d.num_classes), stream(cfg.seed, init_stream))
    if cfg.model.get("weights") and init_stream != "reinit":
        load_weights(model, cfg.model["weights"])
    return model


def build_network(model: Mapping[str, Any], shape: tuple[int, int, int], seed: int) -> torch.nn.Module:
    """The network that ``model`` (a ``model`` config: its ``_target_`` and arguments) describes for images of
    ``shape`` (channels, side, classes), initialised under torch seed ``seed``. A class of the user's own
    (``model._target_``, outside :mod:`lth.models`) gets the shape arguments its signature takes, and is checked to
    take the images (:func:`lth.models.ecosystem.check_images`)."""
    options = {k: thawed(v) for k, v in model.items() if k not in ("name", "weights")}
    shape_args = dict(zip(("in_channels", "image_size", "num_classes"), shape, strict=True))
    own = not str(options.get("_target_", "")).startswith("lth.models.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            network = hydra.utils.instantiate(
                options, _convert_="all", **(_taken(options, shape_args) if own else shape_args)
            )
        except InstantiationException as error:  # a model refusing the dataset's images says so in one line
            if isinstance(error.__cause__, ConfigError):
                raise error.__cause__ from None
            root = error
            while root.__cause__ is not None:
                root = root.__cause__
            raise ConfigError("model", f"{options.get('_target_')} cannot be built ({first_line(root)})") from None
    if own:
        check_images(network, *shape_args.values(), what=str(options.get("_target_")))
    return network


def _taken(options: dict, shape: dict) -> dict:
    """The dataset's shape arguments that the class of ``options`` takes (all of them if it takes ``**kwargs``)."""
    try:
        parameters = inspect.signature(hydra.utils.get_object(options["_target_"])).parameters
    except Exception:  # hydra says what is wrong with the target when it builds it
        return shape
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return shape
    return {k: v for k, v in shape.items() if k in parameters}


def build_classifier(cfg: RunConfig, total: int, iterations_per_epoch: int) -> Classifier:
    """The module a run trains: the network of :func:`build_model`, its optimiser, a schedule over ``total``."""
    return Classifier(
        build_model(cfg),
        num_classes=cfg.dataset.num_classes,
        optimizer=hydra.utils.instantiate(thawed(cfg.optim.optimizer)),
        schedule=thawed(cfg.plain["optim"]["schedule"]),
        total_steps=total,
        iterations_per_epoch=iterations_per_epoch,
        compile=cfg.train.compile,
    )


def build_ticket(cfg: RunConfig) -> LotteryTicket:
    """The pruning callback of ``cfg.prune``; a bad argument is a :class:`ConfigError` naming its key."""
    p = cfg.prune
    try:
        return LotteryTicket(
            rate=p.rate,
            scope=p.scope,
            layer_rates=dict(p.layer_rates) or None,
            target_sparsity=p.target_sparsity,
            rounds=p.rounds,
            include=p.include,
            exclude=p.exclude,
            extra=p.extra,
            rewind=p.rewind,
            granularity=str(p.granularity),
            channel_criterion=p.channel_criterion,
            example_input=torch.zeros(1, cfg.dataset.channels, cfg.dataset.image_size, cfg.dataset.image_size),
            # the trained weights' ranking of a method that prunes every round (the others: magnitude, or own masks)
            **({"criterion": p.method.name} if p.method.has(PRUNES_EVERY_ROUND) else {}),
        )
    except ArgumentError as error:  # validate() refuses these first; configs built in code get here
        key = "prune.method" if error.argument == "criterion" else f"prune.{error.argument.split('[')[0]}"
        raise ConfigError(key, f"got {error.value!r}; allowed: {error.allowed}") from None


def build_loggers(cfg: RunConfig, run_dir: Path) -> RunLoggers:
    """The loggers of ``cfg.logger`` for the run in ``run_dir`` (one per run; each round takes its Lightning ones)."""
    return RunLoggers(cfg, run_dir)


def build_callbacks(cfg: RunConfig) -> list[pl.Callback]:
    """Fresh instances of the Lightning callbacks a user added under ``callbacks.<name>``, in name order."""
    added = cfg.callbacks
    callbacks = []
    for name in sorted(added):
        try:
            callback = hydra.utils.instantiate(thawed(added[name]))
        except InstantiationException as error:
            raise ConfigError(f"callbacks.{name}", f"cannot be built: {str(error).splitlines()[0]}") from None
        if not isinstance(callback, pl.Callback):
            raise ConfigError(f"callbacks.{name}", f"{type(callback).__name__} is not a Lightning Callback")
        check_per_round(f"callbacks.{name}", type(callback))  # validate() did; configs built in code get here
        callbacks.append(callback)
    return callbacks


@dataclass(frozen=True)
class Span:
    """What one fit trains on the iteration axis: ``steps`` iterations from iteration ``start``, evaluated every
    ``eval_every`` iterations."""

    steps: int
    eval_every: int
    start: int = 0


def build_trainer(cfg: RunConfig, run_dir: Path, span: Span, callbacks: list[pl.Callback], loggers: list) -> pl.Trainer:
    """A Trainer for one fit (:class:`Span`): ``cfg.trainer``'s arguments, the hardware, ``loggers``, the user's
    callbacks after ``callbacks``, and validation every ``span.eval_every`` iterations (on the axis when
    ``callbacks`` hold an ``EvaluationCadence``)."""
    max_steps, eval_every, start = span.steps, span.eval_every, span.start
    callbacks = [*callbacks, *build_callbacks(cfg)]
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    arguments = cfg.trainer or {"_target_": "pytorch_lightning.Trainer"}
    chosen = {k: thawed(v) for k, v in arguments.items() if v is not None}
    trainer = hydra.utils.instantiate({**chosen, "_partial_": True})
    hw = cfg.hardware
    return trainer(
        max_steps=max_steps,
        val_check_interval=eval_every * accumulation(cfg),
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        accelerator=hw.accelerator,
        devices=thawed(hw.devices),
        num_nodes=hw.num_nodes,
        strategy=hw.strategy,
        precision=hw.precision,
        logger=loggers or False,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,  # lth.run.progress shows each round's (train.progress)
        log_every_n_steps=logging_interval(eval_every, start, max_steps),  # the loss before every evaluation
        default_root_dir=str(run_dir),
        plugins=slurm_plugins(),  # on SLURM without Lightning's auto-requeue (lth.run.signals requeues and resumes)
    )
