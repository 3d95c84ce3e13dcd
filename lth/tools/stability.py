"""Instability analysis (Frankle et al. 2020, "Linear Mode Connectivity and the Lottery Ticket Hypothesis").

A network is *stable* when two copies trained from the same point with different data orders end in one
linearly connected basin: the test error along the straight path ``(1 - α)·θ_A + α·θ_B`` never rises more
than 2% above the mean of the two ends. That rise, ``max over α of err(α) - (err(0) + err(1)) / 2``, is the
*barrier*. For a finished run, each round's ticket (its mask, the weights of ``rewind.pt`` times the mask; round 0
is the dense network) is trained twice from the rewind point with two data seeds, and the path is evaluated.
Where the model has BatchNorm, its running statistics are recomputed at every α on training batches, since
averaged weights do not fit either copy's statistics.

The pure functions (:func:`~lth.tools.connectivity.interpolate`, :func:`~lth.tools.connectivity.barrier`,
:func:`~lth.tools.connectivity.recompute_batchnorm`, :func:`~lth.tools.connectivity.error_rate`) are in
:mod:`lth.tools.connectivity` and know nothing of runs; :func:`analyse` trains the copies with the run's own
building blocks (``lth.run.loop``).
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch
from torch import nn

from lth.config.entry import run_of
from lth.config.lengths import check_lengths
from lth.config.run import RunConfig, thawed
from lth.core.catalog import KEEPS_TRAINED_WEIGHTS
from lth.core.errors import ConfigError, MissingFileError
from lth.core.masks import Mask
from lth.core.steps import Step
from lth.data import ImageData
from lth.run.build import (
    Span,
    build_classifier,
    build_data,
    build_ticket,
    build_trainer,
    iterations_per_epoch,
    quiet_lightning,
)
from lth.state.artifacts import check_state, read_tensors, round_dir, write_json, write_text
from lth.tools.connectivity import State, alphas, barrier, error_curve, has_batchnorm, relative_distance
from lth.tools.runs import read_config, run_file

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger("lth")

STABLE_BELOW = 0.02  # a barrier under 2% test error counts as stable (Frankle et al. 2020)
COLUMNS = ("round", "weights_remaining", "test_error_0", "test_error_1", "barrier", "stable")

# -- training the copies (the run's building blocks) ----------------------------------------------


def load_config(run_dir: Path, data_dir: str | Path | None = None, steps: str | None = None) -> RunConfig:
    """The resolved config a run left in ``run_dir/config.yaml``, with ``paths.data_dir`` and ``train.steps``
    replaced where given (a shorter ``train.steps`` also shortens ``train.eval_every``).

    A missing folder or file is a :class:`~lth.core.errors.MissingFileError`; a config that is unreadable or that a run
    would refuse is a :class:`~lth.core.errors.ConfigError` naming the file, and ``steps`` that do not fit the run one
    naming ``steps``.
    """
    cfg = read_config(run_file(run_dir, "config.yaml"))
    if data_dir is not None:
        cfg = cfg.but(**{"paths.data_dir": str(data_dir)})
    if steps is not None:
        # the copies are evaluated at their end only: the evaluation cadence follows, which keeps the config valid
        plain = {**thawed(cfg.plain), "train": {**thawed(cfg.plain["train"]), "steps": steps, "eval_every": steps}}
        try:
            cfg = run_of(plain)
        except ConfigError as error:
            raise ConfigError("steps", f"{steps!r} does not fit this run ({error})") from None
    return cfg


def available_rounds(run_dir: Path) -> list[int]:
    """The rounds of a run whose mask is on disk, in order."""
    return sorted(int(p.parent.name.removeprefix("round_")) for p in Path(run_dir).glob("round_*/mask.pt"))


def rewind_iteration(cfg: RunConfig, ipe: int) -> int:
    """The iteration of round 0 that ``rewind.pt`` holds: k for a rewind to a Step (``ipe`` iterations per epoch),
    else 0."""
    rewind = cfg.prune.rewind
    return rewind.to_iterations(ipe) if isinstance(rewind, Step) else 0


def train_copy(
    cfg: RunConfig, data: ImageData, start: Mapping[str, torch.Tensor], mask: Mask, data_seed: int, run_dir: Path
) -> State:
    """Train ``start`` (a Classifier state dict) under ``mask`` on the data order of ``data_seed``; return the end.

    Training runs from the rewind point to the end of ``train.steps`` with the learning-rate schedule resumed
    there, as a pruning round would. ``start`` is not modified. Everything but the data order is the same for
    every seed: the global random state is reseeded with ``cfg.seed`` before each copy.
    """
    ipe = iterations_per_epoch(cfg, data)
    total = check_lengths(cfg.train, cfg.prune.rewind, cfg.optim.schedule, ipe).total
    module = build_classifier(cfg, total, ipe)
    module.load_state_dict(start)
    ticket = build_ticket(cfg)
    # round_index 1: a retraining round (no rewind point recorded, the schedule fast-forwarded to k); the mask is
    # applied at the start and after every step, and `advance` is never called, so it stays the mask given here
    ticket.load_state_dict({"round_index": 1, "mask": dict(mask), "rewind_state": None, "round0_steps": None})
    steps = total - rewind_iteration(cfg, ipe)
    trainer = build_trainer(cfg, run_dir, Span(steps, steps), [ticket], [])
    # only the order changes: the train/val split was drawn by the run's seed when `data` was set up, and
    # ImageData draws each epoch's order (and augmentation) from `seed` whenever a training loader is made
    data.seed = data_seed
    pl.seed_everything(cfg.seed, verbose=False)
    trainer.fit(module, datamodule=data)
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


@dataclass(frozen=True)
class StabilityOptions:
    """What :func:`analyse` is asked for: the ``rounds`` (all with a mask on disk if None), the two ``data_seeds``
    of the copies, ``num_alphas`` points on the path and ``bn_batches`` training batches that set BatchNorm's
    statistics."""

    rounds: Sequence[int] | None = None
    data_seeds: tuple[int, int] = (1, 2)
    num_alphas: int = 11
    bn_batches: int = 50

    def check(self) -> None:
        """Raise a :class:`~lth.core.errors.ConfigError` naming the first option out of its range."""
        if len(self.data_seeds) != 2 or len(set(self.data_seeds)) != 2:
            raise ConfigError("data_seeds", f"got {list(self.data_seeds)}; allowed: two different seeds")
        if self.num_alphas < 2:
            raise ConfigError("alphas", f"got {self.num_alphas}; allowed: at least 2 points on the path (its two ends)")
        if self.bn_batches < 1:
            raise ConfigError("bn_batches", f"got {self.bn_batches}; allowed: at least 1 training batch")


@dataclass(frozen=True)
class _Analysis:
    """What every round of an analysis shares, read and checked before the first copy trains."""

    run_dir: Path
    cfg: RunConfig  # on one device
    data: ImageData
    model: nn.Module
    start: State  # the rewind point
    masks: dict[int, Mask]
    norm_batches: list  # the training batches that set BatchNorm's statistics (none without BatchNorm)
    batchnorm: bool
    steps: int
    trained_steps: int


def _check_rewind_point(run_dir: Path, cfg: RunConfig) -> None:
    """Raise a :class:`~lth.core.errors.MissingFileError` saying why if the run has no ``rewind.pt``."""
    rewind_path = run_dir / "rewind.pt"
    if not rewind_path.is_file():
        rewind = cfg.prune.rewind
        why = (
            f"this run has prune.rewind={rewind}, which saves none"
            if cfg.prune.rewinds_to.has(KEEPS_TRAINED_WEIGHTS)
            else "the run folder lost it"
        )
        raise MissingFileError(
            str(rewind_path),
            f"is missing: the copies start from the rewind point, which runs with prune.rewind=init or a Step "
            f"(like 500it) save; {why}",
        )


def _rounds(run_dir: Path, asked: Sequence[int] | None) -> list[int]:
    """The rounds ``asked`` (all with a mask if None), once each; one without a mask is an error."""
    found = available_rounds(run_dir)
    rounds = list(dict.fromkeys(found if asked is None else asked))
    missing = sorted(set(rounds) - set(found))
    if missing:
        raise ConfigError("rounds", f"{run_dir} has no mask for round(s) {missing}; it has {found}")
    if not rounds:
        raise MissingFileError(str(run_dir / "round_00" / "mask.pt"), "is missing: the run has no round with a mask")
    return rounds


def _read_masks(run_dir: Path, rounds: Sequence[int], cfg: RunConfig, model: nn.Module) -> dict[int, Mask]:
    """The mask of each of ``rounds``, each checked against ``model``."""
    ticket = build_ticket(cfg)
    masks = {}
    for round_index in rounds:
        path = round_dir(run_dir, round_index) / "mask.pt"
        masks[round_index] = Mask(read_tensors(path))
        masks[round_index].check_against(ticket.parameters_of(model), source=str(path))
    return masks


def _prepare(run_dir: Path, cfg: RunConfig, rounds: Sequence[int], bn_batches: int) -> _Analysis:
    """The data, the model, the rewind point and the masks of ``rounds``, the config on one device."""
    quiet_lightning()
    if cfg.hardware.threads:
        torch.set_num_threads(cfg.hardware.threads)
    # one process trains the copies one after the other, on one device
    cfg = cfg.but(**{"hardware.devices": 1, "hardware.num_nodes": 1, "hardware.strategy": "auto"})

    data = build_data(cfg)
    data.setup()
    ipe = iterations_per_epoch(cfg, data)
    total = check_lengths(cfg.train, cfg.prune.rewind, cfg.optim.schedule, ipe).total
    model = build_classifier(cfg, total, ipe)
    # every file is read and checked before the first copy trains: a bad one fails at once and writes nothing
    rewind_path = run_dir / "rewind.pt"
    start = read_tensors(rewind_path)
    check_state(start, model, rewind_path)
    masks = _read_masks(run_dir, rounds, cfg, model)
    batchnorm = has_batchnorm(model)
    # the same training batches (the run's own first ones) set the BatchNorm statistics at every α of every round
    norm_batches = list(itertools.islice(data.train_dataloader(), bn_batches)) if batchnorm else []
    trained = total - rewind_iteration(cfg, ipe)
    return _Analysis(run_dir, cfg, data, model, start, masks, norm_batches, batchnorm, total, trained)


def _round(analysis: _Analysis, round_index: int, data_seeds: tuple[int, int], points: Sequence[float]) -> dict:
    """Train the two copies of round ``round_index``, evaluate the path between them at ``points``, log the row and
    return it."""
    began = time.perf_counter()
    cfg, data, model, mask = analysis.cfg, analysis.data, analysis.model, analysis.masks[round_index]
    a, b = (train_copy(cfg, data, analysis.start, mask, seed, analysis.run_dir) for seed in data_seeds)
    model.to(data.device())
    errors = error_curve(model, a, b, points, data.test_dataloader(), analysis.norm_batches)
    height = barrier(errors)
    row = {
        "round": round_index,
        "weights_remaining": mask.weights_remaining(),
        "test_error_0": errors[0],
        "test_error_1": errors[-1],
        "barrier": height,
        "stable": height < STABLE_BELOW,
        "relative_distance": relative_distance(a, b, [n for n, _ in model.named_parameters()]),
        "errors": errors,
        "seconds": round(time.perf_counter() - began, 3),
    }
    log.info(
        "round %d | weights remaining %.1f%% | error %.2f%% .. %.2f%% | barrier %.2f%% | %s | %.1fs",
        round_index,
        100 * row["weights_remaining"],
        100 * row["test_error_0"],
        100 * row["test_error_1"],
        100 * height,
        "stable" if row["stable"] else "unstable",
        row["seconds"],
    )
    return row


def analyse(
    run_dir: Path,
    cfg: RunConfig,
    options: StabilityOptions | None = None,
    on_round: Callable[[dict], None] | None = None,
) -> dict:
    """The instability of each round of the run in ``run_dir`` as ``options`` (:class:`StabilityOptions`, its
    defaults if None) ask.

    Returns ``{"rounds": [row, ...], ...settings}``; each row has the columns of :data:`COLUMNS` plus the
    whole curve (``errors`` at ``alphas``) and the ``relative_distance`` between the two copies. ``on_round``
    is called with the result so far after every round (to write it as it grows). The copies train one after
    the other on one device, whatever ``hardware.devices`` the run used.
    """
    run_dir = Path(run_dir)
    options = StabilityOptions() if options is None else options
    options.check()
    _check_rewind_point(run_dir, cfg)
    rounds = _rounds(run_dir, options.rounds)
    analysis = _prepare(run_dir, cfg, rounds, options.bn_batches)
    result: dict[str, Any] = {
        "run_dir": str(run_dir),
        "data_seeds": list(options.data_seeds),
        "rewind": str(analysis.cfg.prune.rewind),
        "steps": analysis.steps,
        "trained_steps": analysis.trained_steps,
        "alphas": alphas(options.num_alphas),
        "batchnorm": f"recomputed at every α on {len(analysis.norm_batches)} training batches"
        if analysis.batchnorm
        else "none in the model: running statistics not recomputed",
        "stable_below": STABLE_BELOW,
        "rounds": [],
    }
    for round_index in rounds:
        result["rounds"].append(_round(analysis, round_index, options.data_seeds, result["alphas"]))
        if on_round is not None:
            on_round(result)
    return result


# -- outputs --------------------------------------------------------------------------------------


def write_results(run_dir: Path, result: dict) -> tuple[Path, Path]:
    """Write ``instability.csv`` (the columns of :data:`COLUMNS`) and ``instability.json`` (everything) atomically."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(result["rounds"])
    paths = Path(run_dir) / "instability.csv", Path(run_dir) / "instability.json"
    write_text(paths[0], out.getvalue())
    write_json(paths[1], result)
    return paths


def stability_table(result: dict) -> str:
    """The per-round table printed at the end (percentages for people, fractions in files)."""
    head = "round  weights remaining  error α=0  error α=1  barrier  stable"
    lines = [head, "-" * len(head)]
    for r in result["rounds"]:
        lines.append(
            f"{r['round']:>5}  {100 * r['weights_remaining']:>16.1f}%  {100 * r['test_error_0']:>8.2f}%  "
            f"{100 * r['test_error_1']:>8.2f}%  {100 * r['barrier']:>6.2f}%  {'yes' if r['stable'] else 'no':>6}"
        )
    return "\n".join(lines)


def stability_figure(result: dict) -> Figure:
    """Test error against α, one line per round."""
    from matplotlib.figure import Figure  # matplotlib is needed for figures only

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for r in result["rounds"]:
        label = f"round {r['round']} ({100 * r['weights_remaining']:.1f}% remaining)"
        ax.plot(result["alphas"], [100 * e for e in r["errors"]], marker="o", markersize=3, label=label)
    seeds = result["data_seeds"]
    ax.set_xlabel(f"α: (1 - α)·copy A (data seed {seeds[0]}) + α·copy B (data seed {seeds[1]})")
    ax.set_ylabel("Test error (%)")
    ax.set_title("Test error between two copies trained from the rewind point")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig
