"""Instability analysis (Frankle et al. 2020, "Linear Mode Connectivity and the Lottery Ticket Hypothesis").

A network is *stable* when two copies trained from the same point with different data orders end in one
linearly connected basin: the test error along the straight path ``(1 - α)·θ_A + α·θ_B`` never rises more
than 2% above the mean of the two ends. That rise, ``max over α of err(α) - (err(0) + err(1)) / 2``, is the
*barrier*. For a finished run, each round's ticket (its mask, the weights of ``rewind.pt`` times the mask; round 0
is the dense network) is trained twice from the rewind point with two data seeds, and the path is evaluated.
Where the model has BatchNorm, its running statistics are recomputed at every α on training batches, since
averaged weights do not fit either copy's statistics.

The pure functions (:func:`interpolate`, :func:`barrier`, :func:`recompute_batchnorm`, :func:`error_rate`) know
nothing of runs; :func:`analyse` trains the copies with the run's own building blocks (``lth.run.loop``).
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from lth.config.entry import run_of
from lth.config.lengths import check_lengths
from lth.config.run import RunConfig, thawed
from lth.core.catalog import KEEPS_TRAINED_WEIGHTS
from lth.core.errors import ConfigError, MissingFileError
from lth.core.masks import Mask
from lth.core.steps import Step
from lth.data import ImageData
from lth.run.build import (
    build_classifier,
    build_data,
    build_ticket,
    build_trainer,
    iterations_per_epoch,
    quiet_lightning,
)
from lth.state.artifacts import check_state, read_tensors, round_dir, write_json, write_text
from lth.tools.runs import read_config, run_file

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger("lth")

STABLE_BELOW = 0.02  # a barrier under 2% test error counts as stable (Frankle et al. 2020)
COLUMNS = ("round", "weights_remaining", "test_error_0", "test_error_1", "barrier", "stable")

State = dict[str, torch.Tensor]
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


# -- the path between two networks (pure) ---------------------------------------------------------


def alphas(count: int) -> list[float]:
    """``count`` evenly spaced points of [0, 1], both ends included (11 gives 0, 0.1, ..., 1)."""
    if count < 2:
        raise ConfigError("alphas", f"got {count}; allowed: at least 2 points on the path (its two ends)")
    return [i / (count - 1) for i in range(count)]


def interpolate(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], alpha: float) -> State:
    """The state dict ``(1 - alpha)·a + alpha·b``; ``alpha`` 0 and 1 return copies of ``a`` and ``b`` bit for bit.

    Integer entries (BatchNorm's batch counters) are taken from ``a``. Weights that are zero in both stay zero,
    so two copies trained under one mask interpolate to a network under that mask.
    """
    if a.keys() != b.keys():
        raise ValueError(f"the state dicts differ in keys: {sorted(set(a) ^ set(b))[:3]}")
    if alpha == 0:
        return {k: v.clone() for k, v in a.items()}
    if alpha == 1:
        return {k: v.clone() for k, v in b.items()}
    return {k: (1 - alpha) * a[k] + alpha * b[k] if a[k].is_floating_point() else a[k].clone() for k in a}


def barrier(errors: Sequence[float]) -> float:
    """The error barrier of a path: its highest error minus the mean error of its two ends."""
    if len(errors) < 2:
        raise ValueError(f"a path needs at least its two ends, got {len(errors)} errors")
    return max(errors) - (errors[0] + errors[-1]) / 2


def relative_distance(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], names: Iterable[str]) -> float:
    """``‖a - b‖ / ‖a‖`` over the entries ``names`` (how far apart two copies ended, relative to their size)."""
    names = list(names)
    diff = math.sqrt(sum(float((a[n].double() - b[n].double()).pow(2).sum()) for n in names))
    size = math.sqrt(sum(float(a[n].double().pow(2).sum()) for n in names))
    return diff / size if size else math.inf


# -- BatchNorm and evaluation (pure: a model and batches in, numbers out) ---------------------------


def has_batchnorm(model: nn.Module) -> bool:
    """True if ``model`` has a BatchNorm layer that tracks running statistics."""
    return any(isinstance(m, _BatchNorm) and m.track_running_stats for m in model.modules())


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, batches: Iterable[tuple[torch.Tensor, Any]]) -> bool:
    """Replace every BatchNorm's running statistics by their plain average over ``batches``; False if none.

    The statistics are reset, then the batches go through the model with only the BatchNorm layers in train
    mode (dropout stays off) and ``momentum=None`` (a cumulative average, not an exponential one). Modes and
    momenta are restored afterwards. The inputs are moved to the device of the model.
    """
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not norms:
        return False
    modes = {m: m.training for m in model.modules()}
    momenta = [m.momentum for m in norms]
    device = next(model.parameters()).device
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    for x, _ in batches:
        model(x.to(device))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    for m, training in modes.items():
        m.train(training)
    return True


@torch.no_grad()
def error_rate(model: nn.Module, batches: Batches) -> float:
    """The fraction of the samples in ``batches`` that ``model`` (in eval mode) classifies wrongly."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    wrong = total = 0
    for x, y in batches:
        y = y.to(device)
        wrong += int((model(x.to(device)).argmax(dim=1) != y).sum())
        total += len(y)
    model.train(was_training)
    if not total:
        raise ValueError("no samples to evaluate")
    return wrong / total


def error_curve(
    model: nn.Module,
    a: Mapping[str, torch.Tensor],
    b: Mapping[str, torch.Tensor],
    points: Sequence[float],
    test_batches: Batches,
    bn_batches: Sequence[tuple[torch.Tensor, Any]] = (),
) -> list[float]:
    """Test error of ``model`` loaded with :func:`interpolate` ``(a, b, α)`` at each α of ``points``.

    With ``bn_batches``, BatchNorm statistics are recomputed on them at every α (see :func:`recompute_batchnorm`).
    ``model`` is left holding the last point.
    """
    errors = []
    for alpha in points:
        model.load_state_dict(interpolate(a, b, alpha))
        if bn_batches:
            recompute_batchnorm(model, bn_batches)
        errors.append(error_rate(model, test_batches))
    return errors


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
    trainer = build_trainer(cfg, run_dir, steps, steps, [ticket], [])
    # only the order changes: the train/val split was drawn by the run's seed when `data` was set up, and
    # ImageData draws each epoch's order (and augmentation) from `seed` whenever a training loader is made
    data.seed = data_seed
    pl.seed_everything(cfg.seed, verbose=False)
    trainer.fit(module, datamodule=data)
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def analyse(
    run_dir: Path,
    cfg: RunConfig,
    rounds: Sequence[int] | None = None,
    data_seeds: tuple[int, int] = (1, 2),
    num_alphas: int = 11,
    bn_batches: int = 50,
    on_round: Callable[[dict], None] | None = None,
) -> dict:
    """The instability of each round of the run in ``run_dir`` (all rounds with a mask by default).

    Returns ``{"rounds": [row, ...], ...settings}``; each row has the columns of :data:`COLUMNS` plus the
    whole curve (``errors`` at ``alphas``) and the ``relative_distance`` between the two copies. ``on_round``
    is called with the result so far after every round (to write it as it grows). The copies train one after
    the other on one device, whatever ``hardware.devices`` the run used.
    """
    run_dir = Path(run_dir)
    if len(data_seeds) != 2 or len(set(data_seeds)) != 2:
        raise ConfigError("data_seeds", f"got {list(data_seeds)}; allowed: two different seeds")
    if num_alphas < 2:
        raise ConfigError("alphas", f"got {num_alphas}; allowed: at least 2 points on the path (its two ends)")
    if bn_batches < 1:
        raise ConfigError("bn_batches", f"got {bn_batches}; allowed: at least 1 training batch")
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
    found = available_rounds(run_dir)
    rounds = list(dict.fromkeys(found if rounds is None else rounds))
    missing = sorted(set(rounds) - set(found))
    if missing:
        raise ConfigError("rounds", f"{run_dir} has no mask for round(s) {missing}; it has {found}")
    if not rounds:
        raise MissingFileError(str(run_dir / "round_00" / "mask.pt"), "is missing: the run has no round with a mask")
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
    start = read_tensors(rewind_path)
    check_state(start, model, rewind_path)
    ticket = build_ticket(cfg)
    masks = {}
    for round_index in rounds:
        path = round_dir(run_dir, round_index) / "mask.pt"
        masks[round_index] = Mask(read_tensors(path))
        masks[round_index].check_against(ticket.parameters_of(model), source=str(path))
    batchnorm = has_batchnorm(model)
    # the same training batches (the run's own first ones) set the BatchNorm statistics at every α of every round
    norm_batches = list(itertools.islice(data.train_dataloader(), bn_batches)) if batchnorm else []
    result: dict[str, Any] = {
        "run_dir": str(run_dir),
        "data_seeds": list(data_seeds),
        "rewind": str(cfg.prune.rewind),
        "steps": total,
        "trained_steps": total - rewind_iteration(cfg, ipe),
        "alphas": alphas(num_alphas),
        "batchnorm": f"recomputed at every α on {len(norm_batches)} training batches"
        if batchnorm
        else "none in the model: running statistics not recomputed",
        "stable_below": STABLE_BELOW,
        "rounds": [],
    }
    parameter_names = [n for n, _ in model.named_parameters()]
    for round_index in rounds:
        began = time.perf_counter()
        mask = masks[round_index]
        a, b = (train_copy(cfg, data, start, mask, seed, run_dir) for seed in data_seeds)
        model.to(data.device())
        errors = error_curve(model, a, b, result["alphas"], data.test_dataloader(), norm_batches)
        height = barrier(errors)
        row = {
            "round": round_index,
            "weights_remaining": mask.weights_remaining(),
            "test_error_0": errors[0],
            "test_error_1": errors[-1],
            "barrier": height,
            "stable": height < STABLE_BELOW,
            "relative_distance": relative_distance(a, b, parameter_names),
            "errors": errors,
            "seconds": round(time.perf_counter() - began, 3),
        }
        result["rounds"].append(row)
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
