"""What masking costs per training step, against the alternatives, and how a whole IMP round spends its time.

Side by side in one process, on the same model (LeNet-300-100 in :class:`~lth.lightning.module.Classifier`,
Adam 1.2e-3), the same random MNIST-shaped tensors in a :class:`~lth.data.TensorBatches` and the same batch size:

- (a) ``dense``: Lightning training, no pruning;
- (b) ``ticket``: our :class:`~lth.lightning.callback.LotteryTicket` (mask multiplied after every optimiser step), its
  mask set before the fit by ``advance`` at the sparsity's rate (``rewind="none"``: nothing to rewind);
- (c) ``ModelPruning``: Lightning's callback, global L1 unstructured over the same tensors, lottery-ticket reset on,
  ``amount`` = the sparsity, applied once at the end of the warm-up epoch (``apply_pruning=lambda e: e == 0``);
- (d) ``plain loop``: PyTorch alone over the same batches (forward, ``zero_grad``, backward, ``step``, then
  ``torch._foreach_mul_`` of the masks), no learning-rate scheduler, no logging;
- (b+) with ``--compile``: (b) with the network compiled (``Classifier(compile=True)``; compiled in the warm-up).

Step time, identical for every variant: the time between consecutive ends of training steps (Lightning's
``on_train_batch_end``, or the end of an iteration of the plain loop) within one epoch, from the second epoch on;
an epoch is ``--warmup`` steps, so the first epoch of every fit is its warm-up (and ModelPruning prunes at its end).
Each variant fits in its own Trainer; after one untimed pass over all variants, every repeat runs all of them once,
in an order rotated (and reversed every other repeat) from repeat to repeat. A repeat's value is the median step
of its fit; the tables give the median over repeats, the min–max over repeats, and ratios taken within a repeat.

Also measured: (e) one prune-and-rewind (``LotteryTicket.advance``, global 20%) of ResNet-18 (11M weights) after a
one-step round 0; (f) whole IMP rounds run by :func:`lth.run.loop.train_round` with the default config on MNIST-shaped
generated data (55K training / 5K validation / 10K test images, validation every 100 iterations, evaluation batch
1000, CSV logger), split into training steps and everything else, against (d) for the same steps and mask;
(g) ``python train.py --help`` and ``python train.py prune.rate=2`` (a bad value, refused); (h) with ``--stacked N
[N ...]``: the per-member time of a LeNet-300-100 round (round 0, ``--stacked-steps`` iterations on generated
MNIST-shaped data, one evaluation) for N runs trained as one stack (``train.engine=stacked``), as N stacks of one,
and as N separate Lightning runs, side by side (:func:`lth.tools.stack_timing.compare`, with its member-independence
check), written to its own section of docs/performance.md; with ``--stacked-sweep``: the wall time of a whole sweep
(``--sweep-seeds`` x ``--sweep-controls``, ``--sweep-rounds`` prunings of ``--stacked-steps`` iterations), each way
``python train.py -m ...`` in a fresh process, through ``hydra/launcher=stacked`` against the basic launcher
(:func:`lth.tools.stack_timing.time_sweeps`), into the same section (``--stacked-only``: (h) alone). The tables are
printed, the numbers written to ``--json``, and the tables into the results section of docs/performance.md with
``--write-docs`` (``--out FILE``: into that file instead). A bad argument is one line on stderr, exit code 2, and
nothing written.

Usage: python scripts/benchmark.py [--model lenet300] [--batch-size 60] [--steps 500] [--warmup 100]
       [--threads 1 2] [--repeats 7] [--round-steps 1000] [--compile] [--stacked N [N ...]] [--stacked-steps 200]
       [--stacked-sweep] [--sweep-seeds 3] [--sweep-controls null reinit random_prune] [--sweep-rounds 2]
       [--stacked-only] [--json PATH] [--write-docs | --out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import ModelPruning

from lth.config.run import RunConfig
from lth.core.errors import ConfigError
from lth.core.masks import Mask, prunable_parameters, prune
from lth.data import TensorBatches
from lth.lightning.callback import LotteryTicket
from lth.lightning.module import Classifier
from lth.models import LeNet5, LeNet300100, ResNet18
from lth.state.artifacts import write_text
from lth.tools.cli import (
    ArgumentParser,
    command_line,
    docs_or_file,
    integer,
    number,
    one_line_errors,
    output_file,
    print_and_write,
)
from lth.tools.stack_timing import CONTROLS

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"
DOC = REPO / "docs" / "performance.md"  # what --write-docs rewrites (its section only)
MODELS: dict[str, Callable[[], torch.nn.Module]] = {
    "lenet300": lambda: LeNet300100(1, 28, 10),
    "lenet5": lambda: LeNet5(1, 28, 10),
}
LR = 1.2e-3
PAPER_ROUND = 50_000  # iterations of a LeNet-300-100 round in Frankle & Carbin (2019)


# -- (a)-(d): step time ------------------------------------------------------------------------------


def classifier(model: str, compile: bool = False) -> Classifier:
    """The network ``model`` in the project's LightningModule, always from the same initialisation."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Classifier(MODELS[model](), num_classes=10, optimizer=partial(torch.optim.Adam, lr=LR), compile=compile)


def within_epochs(stamps: list[tuple[int, float]], first_epoch: int = 1) -> list[float]:
    """Differences of consecutive ``(epoch, time)`` stamps of the same epoch, from ``first_epoch`` on."""
    return [b - a for (ea, a), (eb, b) in zip(stamps, stamps[1:], strict=False) if ea == eb >= first_epoch]


def bare_trainer(max_steps: int, callbacks: list) -> pl.Trainer:
    """A CPU Trainer that does nothing but train: no logger, checkpoint, progress bar or summary."""
    return pl.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )


class StepClock(pl.Callback):
    """Stamps the end of every training step with its epoch."""

    def __init__(self) -> None:
        self.stamps: list[tuple[int, float]] = []

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: object, batch: object, batch_idx: int
    ) -> None:
        self.stamps.append((trainer.current_epoch, time.perf_counter()))


def weights_remaining(module: torch.nn.Module) -> float:
    """Non-zero fraction of the prunable weights (pruned weights are exactly zero in every variant)."""
    params = prunable_parameters(module).values()
    return sum(int(p.count_nonzero()) for p in params) / sum(p.numel() for p in params)


def lightning_steps(kind: str, sparsity: float, model: str, data: TensorBatches, steps: int) -> tuple[float, float]:
    """Median step time of one Lightning fit of variant ``kind``, and the weights remaining at its end."""
    module = classifier(model, compile=kind == "compiled ticket")
    callbacks: list[pl.Callback] = []
    if kind in ("ticket", "compiled ticket"):
        ticket = LotteryTicket(rate=sparsity, rewind="none")
        ticket.advance(module)
        callbacks.append(ticket)
    elif kind == "ModelPruning":
        targets = [(module.get_submodule(n.rsplit(".", 1)[0]), "weight") for n in prunable_parameters(module)]
        callbacks.append(
            ModelPruning(
                "l1_unstructured",
                parameters_to_prune=targets,
                amount=lambda epoch: sparsity,
                apply_pruning=lambda epoch: epoch == 0,
                use_global_unstructured=True,
                use_lottery_ticket_hypothesis=True,
                verbose=0,
            )
        )
    clock = StepClock()
    bare_trainer(len(data) + steps, [*callbacks, clock]).fit(module, train_dataloaders=data)
    return statistics.median(within_epochs(clock.stamps)), weights_remaining(module)


def plain_loop(net: torch.nn.Module, mask: Mask | None, data: TensorBatches, steps: int) -> list[tuple[int, float]]:
    """Train ``net`` for ``steps`` iterations with Adam, masks multiplied after each step; ``(epoch, end)`` stamps."""
    params = prunable_parameters(net)
    weights = [p.data for n, p in params.items()] if mask is not None else []
    factors = [mask[n].to(p.dtype) for n, p in params.items()] if mask is not None else []
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    stamps: list[tuple[int, float]] = []
    epoch = 0
    while len(stamps) < steps:
        for x, y in data:
            loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if weights:
                torch._foreach_mul_(weights, factors)
            stamps.append((epoch, time.perf_counter()))
            if len(stamps) == steps:
                break
        epoch += 1
    return stamps


def plain_steps(sparsity: float, model: str, data: TensorBatches, steps: int) -> tuple[float, float]:
    """Median step time of the plain loop (masked unless ``sparsity`` is 0) and its weights remaining."""
    net = classifier(model).model
    mask = None
    if sparsity:
        params = prunable_parameters(net)
        mask = prune({n: p.detach() for n, p in params.items()}, Mask.ones_like(params), sparsity)
        with torch.no_grad():
            for n, p in params.items():
                p.mul_(mask[n])
    stamps = plain_loop(net, mask, data, len(data) + steps)
    return statistics.median(within_epochs(stamps)), weights_remaining(net)


def variants(sparsities: list[float], compiled: bool) -> list[tuple[str, float]]:
    """(kind, sparsity) of every variant: (a), (b) and (c) at each sparsity, (d) dense and at each sparsity, and
    with ``compiled`` (b) with ``Classifier(compile=True)``."""
    return [
        ("dense", 0.0),
        *[("ticket", s) for s in sparsities],
        *[("ModelPruning", s) for s in sparsities],
        ("plain loop", 0.0),
        *[("plain loop", s) for s in sparsities],
        *[("compiled ticket", s) for s in sparsities if compiled],
    ]


def step_times(args: argparse.Namespace, data: TensorBatches) -> dict:
    """Per variant: the median step (s) of each repeat and the weights remaining; variants interleaved."""
    todo = variants(args.sparsity, args.compile)

    def run(kind: str, sparsity: float, steps: int) -> tuple[float, float]:
        if kind == "plain loop":
            return plain_steps(sparsity, args.model, data, steps)
        return lightning_steps(kind, sparsity, args.model, data, steps)

    for kind, sparsity in todo:  # one untimed pass: imports, allocator, caches
        run(kind, sparsity, len(data))
    results = {key: {"seconds": [], "weights_remaining": None} for key in todo}
    for r in range(args.repeats):
        order = todo[r % len(todo) :] + todo[: r % len(todo)]
        for key in order[::-1] if r % 2 else order:
            seconds, remaining = run(*key, args.steps)
            results[key]["seconds"].append(seconds)
            results[key]["weights_remaining"] = remaining
    return results


# -- (e): prune and rewind of ResNet-18 --------------------------------------------------------------


def one_step_fit(module: Classifier, ticket: LotteryTicket, x: torch.Tensor, y: torch.Tensor) -> None:
    """Round 0 cut to one step: it records the rewind point and changes the weights."""
    bare_trainer(1, [ticket]).fit(module, train_dataloaders=TensorBatches(x, y, len(y)))


def prune_rewind(rounds: int) -> dict:
    """Seconds of ``advance`` (prune 20% globally, rewind to the initial weights, mask) for ResNet-18, round after
    round, and of the pruning alone (:func:`lth.core.masks.prune` with the same arguments, just before)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = Classifier(ResNet18(3, 32, 10), num_classes=10, optimizer=partial(torch.optim.Adam, lr=LR))
        x, y = torch.randn(4, 3, 32, 32), torch.randint(10, (4,))
    ticket = LotteryTicket(rate=0.2)
    one_step_fit(module, ticket, x, y)
    params = ticket.parameters_of(module)
    advance, prune_only, remaining = [], [], []
    for _ in range(rounds):
        start = time.perf_counter()
        prune({n: p.detach() for n, p in params.items()}, ticket.mask, ticket.rate)
        prune_only.append(time.perf_counter() - start)
        start = time.perf_counter()
        ticket.advance(module)
        advance.append(time.perf_counter() - start)
        remaining.append(ticket.mask.weights_remaining())
    return {
        "weights": ticket.mask.total(),
        "advance_seconds": advance,
        "prune_seconds": prune_only,
        "weights_remaining": remaining,
    }


# -- (f): a whole IMP round --------------------------------------------------------------------------


class TimedTicket(LotteryTicket):
    """The run's callback, also stamping the round: start of training, step ends, evaluations and tests, and
    the time inside its own per-step hook (the mask multiply)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reset_clock()

    def reset_clock(self) -> None:
        """Forget the stamps of the previous round."""
        self.train_start = 0.0
        self.mask_seconds = 0.0
        self.step_ends: list[float] = []
        self.windows: dict[str, list[tuple[float, float]]] = {"validation": [], "test": []}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self.train_start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: object, batch: object, batch_idx: int
    ) -> None:
        start = time.perf_counter()
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        end = time.perf_counter()
        self.mask_seconds += end - start
        self.step_ends.append(end)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.windows["validation"].append((time.perf_counter(), 0.0))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.windows["validation"][-1] = (self.windows["validation"][-1][0], time.perf_counter())

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.windows["test"].append((time.perf_counter(), 0.0))

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.windows["test"][-1] = (self.windows["test"][-1][0], time.perf_counter())

    def seconds(self, name: str) -> float:
        """Total seconds inside the ``validation`` or ``test`` windows."""
        return sum(end - start for start, end in self.windows[name])

    def training_seconds(self) -> float:
        """From the start of training to the end of the last step, less the evaluations in between."""
        last = self.step_ends[-1]
        inside = sum(end - start for start, end in self.windows["validation"] if end <= last)
        return last - self.train_start - inside


def round_config(tmp: Path, steps: int, batch_size: int) -> RunConfig:
    """The default config, on 55K/5K/10K generated MNIST-shaped images, ``steps`` iterations, CPU, CSV logger."""
    from hydra import compose, initialize_config_dir

    from lth.config.entry import load_run
    from lth.config.identity import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return load_run(
            compose(
                "config",
                overrides=[
                    "dataset=synthetic",
                    "dataset.source.train_size=60000",
                    "dataset.source.test_size=10000",
                    "dataset.val_size=5000",
                    f"train.steps={steps}it",
                    "train.eval_every=100it",
                    f"train.batch_size={batch_size}",
                    "train.eval_batch_size=1000",
                    "hardware=cpu",
                    "logger=csv",
                    f"paths.output_dir={tmp}",
                ],
            )
        )


def imp_rounds(args: argparse.Namespace) -> dict:
    """Round 0 untimed, then ``--round-repeats`` pruning rounds, each followed by the plain loop on its mask."""

    from lth.config.lengths import check_lengths
    from lth.run.build import build_classifier, build_data, build_loggers, build_model, quiet_lightning
    from lth.run.build import iterations_per_epoch as steps_per_epoch
    from lth.run.methods import run_flops
    from lth.run.rounds import Round, RoundSettings, train_round

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = round_config(Path(tmp), args.round_steps, args.batch_size)
        quiet_lightning()
        pl.seed_everything(cfg.seed, verbose=False)
        data = build_data(cfg)
        data.setup()
        iterations_per_epoch = steps_per_epoch(cfg, data, 1)
        lengths = check_lengths(cfg.train, cfg.prune.rewind, cfg.optim.schedule, iterations_per_epoch)
        total, eval_every = lengths.total, lengths.eval_every
        module = build_classifier(cfg, total, iterations_per_epoch)
        ticket = TimedTicket(rate=cfg.prune.rate, scope=cfg.prune.scope, rewind=cfg.prune.rewind)
        flops = run_flops(cfg, build_model(cfg), accumulate=1, world_size=1)
        settings = RoundSettings(total, iterations_per_epoch, eval_every, None, True, flops=flops)
        run_dir = Path(tmp) / "run"
        r = Round(cfg, module, ticket, data, run_dir, settings, build_loggers(cfg, run_dir))
        train_x, train_y = data.split("train")
        ticket.apply_mask(module)
        train_round(r, 0)
        for round_index in range(1, args.round_repeats + 1):
            ticket.reset_clock()
            start = time.perf_counter()
            ticket.advance(module)
            advanced = time.perf_counter()
            rewound = {k: v.clone() for k, v in module.model.state_dict().items()}
            train_round(r, round_index)
            wall = time.perf_counter() - start
            net = build_model(cfg)
            net.load_state_dict(rewound)
            batches = TensorBatches(train_x, train_y, args.batch_size, shuffle=True, seed=data.seed)
            plain_start = time.perf_counter()
            plain_loop(net, Mask({k.removeprefix("model."): m for k, m in ticket.mask.items()}), batches, total)
            rows.append(
                {
                    "round": round_index,
                    "steps": len(ticket.step_ends),
                    "evaluations": len(ticket.windows["validation"]),
                    "wall": wall,
                    "prune_rewind": advanced - start,
                    "training_steps": ticket.training_seconds(),
                    "mask_hook": ticket.mask_seconds,
                    "validation": ticket.seconds("validation"),
                    "test": ticket.seconds("test"),
                    "plain_loop": time.perf_counter() - plain_start,
                }
            )
    return {"rounds": rows}


# -- (g): train.py --help ----------------------------------------------------------------------------


def help_seconds(repeats: int) -> list[float]:
    """Wall seconds of ``python train.py --help`` in a fresh process, ``repeats`` times."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, str(REPO / "train.py"), "--help"], cwd=REPO, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return times


def bad_value_seconds(repeats: int) -> list[float]:
    """Wall seconds of ``python train.py prune.rate=2`` in a fresh process: refused (one line, exit code 2)."""
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            start = time.perf_counter()
            command = [sys.executable, str(REPO / "train.py"), "prune.rate=2", f"paths.output_dir={tmp}"]
            result = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            if result.returncode != 2:
                raise RuntimeError(f"train.py prune.rate=2 exited with {result.returncode}: {result.stderr[-500:]}")
    return times


# -- (h): members of a stack against separate runs --------------------------------------------------


STACKED_START, STACKED_END = "<!-- benchmark-stacked:start -->", "<!-- benchmark-stacked:end -->"
SWEEP_START, SWEEP_END = "<!-- benchmark-stacked-sweep:start -->", "<!-- benchmark-stacked-sweep:end -->"


def stacked_section(args: argparse.Namespace, command: str) -> str:
    """(h): per-member round time of stacks of each ``--stacked`` size against as many separate runs, as Markdown."""
    from lth.tools.stack_timing import compare, table

    before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            compare(
                "lenet300", n, args.stacked_steps, Path(tmp) / str(n), max(args.stacked), ["hardware.accelerator=cpu"]
            )
            for n in args.stacked
        ]
    return "\n".join(
        [
            f"`{command}`",
            "",
            f"CPU ({platform.processor() or platform.machine()}), {os.cpu_count()} cores, {torch.get_num_threads()} "
            f"torch thread(s), torch {torch.__version__}. Load averages before: {loads(before)}; after: "
            f"{loads(os.getloadavg())}. LeNet-300-100, round 0 of {args.stacked_steps} iterations (batch 60, one "
            "evaluation), generated MNIST-shaped data; the three ways run one after another in one process.",
            "",
            table(rows),
        ]
    )


def sweep_section(args: argparse.Namespace, command: str) -> str:
    """(h), ``--stacked-sweep``: a sweep's wall time through the stacked launcher against the basic one, Markdown."""
    from lth.tools.stack_timing import Sweep, sweep_table, time_sweeps

    sweep = Sweep(args.sweep_seeds, tuple(args.sweep_controls), args.stacked_steps, args.sweep_rounds, args.threads[0])
    before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        row = time_sweeps(sweep, Path(tmp))
    return "\n".join(
        [
            f"`{command}`",
            "",
            f"CPU ({platform.processor() or platform.machine()}), {os.cpu_count()} cores, torch {torch.__version__}. "
            f"Load averages before: {loads(before)}; after: {loads(os.getloadavg())}. `python train.py -m` sweeps "
            f"(seed x prune.control={','.join(sweep.controls)}) of LeNet-300-100 on generated MNIST-shaped data "
            f"(dataset=synthetic), hardware.threads={sweep.threads}, logger=none; each sweep a fresh process, one "
            "after the other.",
            "",
            sweep_table(row),
        ]
    )


# -- report --------------------------------------------------------------------------------------------


def spread(values: list[float], scale: float = 1.0, fmt: str = ".2f") -> str:
    """``median (min–max)`` of ``values`` times ``scale``."""
    m, lo, hi = (scale * v for v in (statistics.median(values), min(values), max(values)))
    return f"{m:{fmt}} ({lo:{fmt}}–{hi:{fmt}})"


def label(kind: str, sparsity: float) -> str:
    letter = {"dense": "a", "ticket": "b", "ModelPruning": "c", "plain loop": "d", "compiled ticket": "b+"}[kind]
    return f"({letter}) {kind}" + (f", {100 * sparsity:.0f}% pruned" if sparsity else "")


def step_table(results: dict) -> tuple[str, dict]:
    """The step-time table of one thread count, and the targets' numbers from it."""
    dense = results[("dense", 0.0)]["seconds"]
    lines = [
        "| variant | weights remaining | ms per step: median (min–max) | vs (a) dense, paired: median (min–max) |",
        "|---|---:|---:|---:|",
    ]
    for (kind, sparsity), r in results.items():
        ratios = [v / d for v, d in zip(r["seconds"], dense, strict=True)]
        lines.append(
            f"| {label(kind, sparsity)} | {100 * r['weights_remaining']:.1f}% | {spread(r['seconds'], 1e3)} | "
            f"{spread(ratios, fmt='.3f')}x |"
        )
    targets = {}
    for (kind, sparsity), r in results.items():
        if kind != "ticket":
            continue
        ours = [v - d for v, d in zip(r["seconds"], dense, strict=True)]
        theirs = [v - d for v, d in zip(results[("ModelPruning", sparsity)]["seconds"], dense, strict=True)]
        targets[sparsity] = {
            "ticket_vs_dense": statistics.median(v / d for v, d in zip(r["seconds"], dense, strict=True)),
            "ticket_extra_ms": 1e3 * statistics.median(ours),
            "ModelPruning_extra_ms": 1e3 * statistics.median(theirs),
            "extra_share": statistics.median(ours) / (statistics.median(theirs) or float("nan")),
        }
    return "\n".join(lines), targets


def round_table(rows: list[dict], round_steps: int) -> tuple[str, dict]:
    """Where a round's time goes (median seconds over the timed rounds), its share, and the paper-length projection."""
    med = {key: statistics.median(r[key] for r in rows) for key in rows[0] if key != "round"}
    other = med["wall"] - med["training_steps"] - med["prune_rewind"] - med["validation"] - med["test"]
    parts = [
        ("training steps", med["training_steps"]),
        (f"validation ({int(med['evaluations'])} x 5000 samples)", med["validation"]),
        ("test (final and early-stop weights, 2 x 10000 samples)", med["test"]),
        ("prune + rewind (advance)", med["prune_rewind"]),
        ("Trainer setup, checkpoint, files, teardown", other),
    ]
    lines = ["| part of a round | seconds (median) | share |", "|---|---:|---:|"]
    lines += [f"| {name} | {seconds:.3f} | {100 * seconds / med['wall']:.1f}% |" for name, seconds in parts]
    lines.append(f"| whole round ({round_steps} iterations) | {med['wall']:.3f} | 100% |")
    lines.append(f"| (d) plain loop, same steps and mask | {med['plain_loop']:.3f} | |")
    step = med["training_steps"] / med["steps"]
    per_eval = med["validation"] / med["evaluations"]
    fixed = med["wall"] - med["training_steps"] - med["validation"]
    evals = PAPER_ROUND // 100
    projected = (evals * per_eval + fixed) / (PAPER_ROUND * step + evals * per_eval + fixed)
    numbers = {
        "training_vs_plain": med["training_steps"] / med["plain_loop"],
        "overhead_share": 1 - med["training_steps"] / med["wall"],
        "overhead_share_paper_round": projected,
        "ms_per_step": 1e3 * step,
        "ms_per_evaluation": 1e3 * per_eval,
        "us_mask_hook_per_step": 1e6 * med["mask_hook"] / med["steps"],
        "fixed_seconds": fixed,
    }
    return "\n".join(lines), numbers


def loads(averages: tuple[float, ...]) -> str:
    """Load averages as ``uptime`` prints them."""
    return ", ".join(f"{a:.2f}" for a in averages)


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def report(args: argparse.Namespace, results: dict, command: str) -> str:
    """The Markdown section: machine state, the tables, and each target's number."""
    out = [
        f"`{command}`",
        "",
        f"CPU ({platform.processor() or platform.machine()}), {os.cpu_count()} cores, torch {torch.__version__}, "
        f"pytorch-lightning {pl.__version__}. Load averages (1, 5, 15 min, as `uptime` prints them) before each "
        "thread count: "
        + ", ".join(f"{t} thread(s): {loads(results[t]['load_before'])}" for t in args.threads)
        + f"; after: {loads(results['load_after'])}. Batch {args.batch_size}, {args.model}, {args.repeats} repeats "
        f"of {args.steps} timed steps after a {args.warmup}-step warm-up epoch. The variants run side by side, "
        "interleaved: where other work loads the machine, the paired ratios are the figures to read, not the "
        "milliseconds.",
    ]
    targets_lines = ["| target | threads | measured | |", "|---|---:|---|---|"]
    for t in args.threads:
        table, targets = step_table(results[t]["steps"])
        out += ["", f"**Step time, {t} thread(s)**", "", table]
        for s, n in targets.items():
            targets_lines.append(
                f"| (b)/(a) <= 1.05 at {100 * s:.0f}% | {t} | {n['ticket_vs_dense']:.3f} | "
                f"{verdict(n['ticket_vs_dense'] <= 1.05)} |"
            )
            if t == 1:  # compared as a difference: a ratio means nothing where (c) measured no faster than (a)
                ours, theirs = n["ticket_extra_ms"], n["ModelPruning_extra_ms"]
                share = f"{n['extra_share']:.2f}" if theirs > 0 else "(c) no slower than (a)"
                targets_lines.append(
                    f"| (b)-(a) <= 0.2 x ((c)-(a)) at {100 * s:.0f}% | 1 | {ours:.3f} ms vs {theirs:.3f} ms: {share} | "
                    f"{verdict(ours <= 0.2 * theirs)} |"
                )
        e = results[t]["prune_rewind"]
        out += [
            "",
            f"**Prune + rewind of ResNet-18 ({e['weights']:,} prunable weights), {t} thread(s)**: advance "
            f"{spread(e['advance_seconds'], fmt='.3f')} s over {len(e['advance_seconds'])} rounds "
            f"(weights remaining {100 * e['weights_remaining'][0]:.0f}% to {100 * e['weights_remaining'][-1]:.0f}%), "
            f"of which pruning {spread(e['prune_seconds'], fmt='.3f')} s.",
        ]
        targets_lines.append(
            f"| ResNet-18 prune + rewind < 1 s | {t} | {max(e['advance_seconds']):.3f} s (slowest) | "
            f"{verdict(max(e['advance_seconds']) < 1)} |"
        )
        rounds = results[t].get("round")
        if rounds:
            table, n = round_table(rounds["rounds"], args.round_steps)
            out += [
                "",
                f"**An IMP round, {t} thread(s)** (median of {len(rounds['rounds'])} pruning rounds; "
                f"{n['ms_per_step']:.2f} ms per step, of which {n['us_mask_hook_per_step']:.0f} µs in the ticket's "
                f"per-step hook (the mask multiply), {n['ms_per_evaluation']:.0f} ms per evaluation, "
                f"{n['fixed_seconds']:.2f} s per round besides steps and evaluations)",
                "",
                table,
            ]
            targets_lines += [
                f"| round's training steps <= 1.25 x (d) | {t} | {n['training_vs_plain']:.2f}x | "
                f"{verdict(n['training_vs_plain'] <= 1.25)} |",
                f"| everything but training steps <= 10% of a round | {t} | {100 * n['overhead_share']:.1f}% of a "
                f"{args.round_steps}-iteration round; {100 * n['overhead_share_paper_round']:.1f}% projected for "
                f"the paper's {PAPER_ROUND:,} | {verdict(n['overhead_share_paper_round'] <= 0.10)} |",
            ]
    if results.get("help"):
        targets_lines.append(
            f"| `python train.py --help` < 5 s | - | {spread(results['help'], fmt='.2f')} s | "
            f"{verdict(statistics.median(results['help']) < 5)} |"
        )
    if results.get("bad_value"):
        targets_lines.append(
            f"| `python train.py prune.rate=2` refused < 2 s | - | {spread(results['bad_value'], fmt='.2f')} s | "
            f"{verdict(statistics.median(results['bad_value']) < 2)} |"
        )
    out += ["", "**Targets**", "", *targets_lines]
    return "\n".join(out)


def parser() -> ArgumentParser:
    """The command line, every value range-checked as it is parsed; nothing is written to docs/ unless asked."""
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="lenet300", help="default: lenet300")
    parser.add_argument("--batch-size", type=integer(1), default=60, help="default: 60")
    parser.add_argument("--steps", type=integer(2), default=500, help="timed steps per fit, >= 2 (default: 500)")
    parser.add_argument(
        "--warmup", type=integer(2), default=100, help="steps per epoch, the first one untimed, >= 2 (default: 100)"
    )
    parser.add_argument(
        "--sparsity",
        type=number(0, 1, open_low=True, open_high=True),
        nargs="+",
        default=[0.5, 0.9],
        help="fractions pruned, each in (0, 1) (default: 0.5 0.9)",
    )
    parser.add_argument("--threads", type=integer(1), nargs="+", default=[1, 2], help="torch threads (default: 1 2)")
    parser.add_argument("--repeats", type=integer(1), default=7, help="timed fits per variant (default: 7)")
    parser.add_argument(
        "--resnet-rounds", type=integer(1), default=5, help="ResNet-18 prune + rewind rounds (default: 5)"
    )
    parser.add_argument(
        "--round-steps",
        type=integer(100),
        default=1000,
        help="iterations of an IMP round, >= 100 (one validation per 100) (default: 1000)",
    )
    parser.add_argument("--round-repeats", type=integer(0), default=3, help="timed IMP rounds; 0: none (default: 3)")
    parser.add_argument(
        "--help-repeats",
        type=integer(0),
        default=3,
        help="runs of train.py --help and a bad value; 0: none (default: 3)",
    )
    parser.add_argument("--compile", action="store_true", help="also (b) with the network compiled (torch.compile)")
    parser.add_argument(
        "--stacked", type=integer(1), nargs="+", default=[], help="(h): stack sizes to time (default: none)"
    )
    parser.add_argument("--stacked-steps", type=integer(2), default=200, help="(h): iterations of a round (200)")
    parser.add_argument(
        "--stacked-sweep", action="store_true", help="(h): time a whole sweep, stacked against the basic launcher"
    )
    parser.add_argument("--sweep-seeds", type=integer(1), default=3, help="(h) sweep: seeds 0..n-1 (default: 3)")
    parser.add_argument(
        "--sweep-controls",
        choices=CONTROLS,
        nargs="+",
        default=list(CONTROLS),
        help="(h) sweep: prune.control values (default: null reinit random_prune)",
    )
    parser.add_argument("--sweep-rounds", type=integer(0), default=2, help="(h) sweep: prune.rounds (default: 2)")
    parser.add_argument("--stacked-only", action="store_true", help="only (h) (needs --stacked or --stacked-sweep)")
    parser.add_argument("--json", type=output_file, help="write every number here")
    docs_or_file(parser, DOC, "the tables")
    return parser


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    """Parse ``argv``, run every measurement per thread count, print the report; write it to docs/performance.md
    with ``--write-docs`` or to ``--out``, and the numbers to ``--json``. Bad input is one line, exit code 2."""
    args = parser().parse_args(argv)
    command = command_line("benchmark", argv)
    if args.stacked_only and not (args.stacked or args.stacked_sweep):
        raise ConfigError("--stacked-only", "needs --stacked N [N ...] or --stacked-sweep")
    if len(set(args.sweep_controls)) < len(args.sweep_controls):
        raise ConfigError("--sweep-controls", f"got {' '.join(args.sweep_controls)}; each value at most once")
    if args.stacked:
        torch.set_num_threads(args.threads[0])
        print_and_write(stacked_section(args, command), args, DOC, STACKED_START, STACKED_END)
    if args.stacked_sweep:
        print_and_write(sweep_section(args, command), args, DOC, SWEEP_START, SWEEP_END)
    if args.stacked_only:
        return

    from lth.run.build import quiet_lightning

    quiet_lightning()
    warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.warmup * args.batch_size, 1, 28, 28, generator=generator)
    y = torch.randint(10, (len(x),), generator=generator)
    data = TensorBatches(x, y, args.batch_size, shuffle=True)
    results: dict = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        results[threads] = {"load_before": os.getloadavg(), "steps": step_times(args, data)}
        results[threads]["prune_rewind"] = prune_rewind(args.resnet_rounds)
        if args.round_repeats:
            results[threads]["round"] = imp_rounds(args)
    results["load_after"] = os.getloadavg()
    results["help"] = help_seconds(args.help_repeats) if args.help_repeats else []
    results["bad_value"] = bad_value_seconds(args.help_repeats) if args.help_repeats else []
    text = report(args, results, command)
    print_and_write(text, args, DOC, START, END)
    if args.json:
        serialisable = {
            str(t): {**r, "steps": [{"kind": k, "sparsity": s, **v} for (k, s), v in r["steps"].items()]}
            for t, r in results.items()
            if isinstance(t, int)
        }
        write_text(
            args.json,
            json.dumps(
                {
                    "command": command,
                    "cpu_count": os.cpu_count(),
                    "torch": torch.__version__,
                    "load_after": results["load_after"],
                    "help_seconds": results["help"],
                    "bad_value_seconds": results["bad_value"],
                    "threads": serialisable,
                },
                indent=2,
            )
            + "\n",
        )
        print(f"numbers written to {args.json}")


if __name__ == "__main__":
    main()
