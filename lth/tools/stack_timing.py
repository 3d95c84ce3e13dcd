"""What a member of a stack costs against a separate run, and whether members stay independent on this device.

:func:`compare` trains ``members`` runs (seeds 0..n-1, round 0 of ``steps`` iterations, one evaluation at its end)
of a model on generated data three ways, each in its own output folder: as one stack (``train.engine=stacked``,
:func:`lth.run.stack.train_stack`), as separate stacks of one (the same engine, one run after another), and, up to
``lightning_max`` members, as separate runs of the Lightning engine (:func:`lth.run.loop.train`). The wall time of
each way over the members is the per-member time of a round. The stack and the stacks of one must write the same
run folders bit for bit (rows without their timings, masks, weights): that is the member-independence check.
``scripts/benchmark.py`` (section h) and ``scripts/gpu_check.sh`` call it.

:func:`time_sweeps` times a whole sweep (:class:`Sweep`: seeds x controls of LeNet-300-100 on generated data) as a
user runs it, ``python train.py -m ...`` in a fresh process, through ``hydra/launcher=stacked`` and through the basic
launcher, one after the other: process start, every job's setup, rounds and files count.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lth.config.identity import run_id
from lth.config.run import RunConfig
from lth.state.artifacts import read_rounds

REPO = Path(__file__).resolve().parents[2]
SHAPES = {  # generated data of the shape the model is trained on in the papers
    "lenet300": ["dataset=synthetic"],
    "conv2": [
        "dataset=synthetic",
        "dataset.channels=3",
        "dataset.image_size=32",
        "dataset.mean=[0.5,0.5,0.5]",
        "dataset.std=[0.25,0.25,0.25]",
    ],
}


def run_configs(model: str, members: int, steps: int, out: Path, extra: Sequence[str] = ()) -> list[RunConfig]:
    """``members`` runs of ``model`` (seeds 0..n-1) on generated data of its shape, ``train.engine=stacked``: round 0
    only, ``steps`` iterations evaluated once at the end, no logger, outputs under ``out``; ``extra``: more
    overrides (the device, smaller splits)."""
    from hydra import compose, initialize_config_dir

    from lth.config.entry import load_run
    from lth.config.identity import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return [
            load_run(
                compose(
                    "config",
                    overrides=[
                        f"model={model}",
                        "train.engine=stacked",
                        *SHAPES[model],
                        f"train.steps={steps}it",
                        f"train.eval_every={steps}it",
                        "train.progress=false",
                        "train.save_weights=true",
                        "prune.rounds=0",
                        "logger=none",
                        f"seed={seed}",
                        f"paths.output_dir={out}",
                        *extra,
                    ],
                )
            )
            for seed in range(members)
        ]


def _results(run_dir: Path) -> dict[str, bytes]:
    """A run folder's results: its rows without timings, and every tensor file it holds."""
    rows = [{k: v for k, v in row.items() if k != "train_seconds"} for row in read_rounds(run_dir / "rounds.csv")]
    tensors = {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*.pt"))}
    return {"rounds": repr(rows).encode(), **tensors}


def _timed(train: object) -> float:
    started = time.perf_counter()
    train()  # type: ignore[operator]
    return time.perf_counter() - started


def compare(model: str, members: int, steps: int, out: Path, lightning_max: int = 0, extra: Sequence[str] = ()) -> dict:
    """Per-member seconds of a round: one stack of ``members``, stacks of one, and (up to ``lightning_max``
    members) separate Lightning runs; and whether the stack's run folders equal the stacks of one's. ``extra``:
    overrides of every run (:func:`run_configs`)."""
    from lth.run.loop import train as lightning_train
    from lth.run.stack import train_stack

    timings: dict[str, float | None] = {}
    folders: dict[str, list[Path]] = {}
    for way, size in (("stacked", members), ("separate", 1)):
        cfgs = run_configs(model, members, steps, out / way, extra)
        folders[way] = [Path(c.output_dir) / "runs" / run_id(c.plain) for c in cfgs]
        timings[way] = _timed(lambda cfgs=cfgs, way=way, size=size: train_stack(cfgs, folders[way], size)) / members
    timings["lightning"] = None
    if members <= lightning_max:
        plain = [c.but(**{"train.engine": "lightning"}) for c in run_configs(model, members, steps, out, extra)]
        timings["lightning"] = _timed(lambda: [lightning_train(c) for c in plain]) / members
    same = all(_results(a) == _results(b) for a, b in zip(folders["stacked"], folders["separate"], strict=True))
    return {"model": model, "members": members, "steps": steps, **timings, "independent": same}


def table(rows: Sequence[dict]) -> str:
    """The comparison as a Markdown table: seconds per member-round, and the stack's speed-up over each."""

    def cell(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    lines = [
        "| model | members | steps | stacked s/member | separate (stacks of one) s/member | speed-up "
        "| Lightning runs s/member | speed-up | members independent |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        light = r["lightning"]
        gain = "–" if light is None else f"{light / r['stacked']:.2f}x"
        lines.append(
            f"| {r['model']} | {r['members']} | {r['steps']} | {cell(r['stacked'])} | {cell(r['separate'])} "
            f"| {r['separate'] / r['stacked']:.2f}x | {cell(light)} | {gain} | {'yes' if r['independent'] else 'NO'} |"
        )
    return "\n".join(lines)


CONTROLS = ("null", "reinit", "random_prune")  # prune.control's values a sweep may take (null: the ticket)


@dataclass(frozen=True)
class Sweep:
    """A sweep of ``seeds`` (0..n-1) x ``controls`` of LeNet-300-100 on generated data: rounds of ``steps`` iterations
    (one evaluation each), ``rounds`` prunings (``prune.rounds``), ``threads`` torch threads a process."""

    seeds: int
    controls: tuple[str, ...]
    steps: int
    rounds: int
    threads: int = 1

    @property
    def jobs(self) -> int:
        return self.seeds * len(self.controls)

    def command(self, out: Path, stacked: bool) -> list[str]:
        """``python train.py -m ...`` for the sweep, its outputs and sweep folder under ``out``."""
        return [
            sys.executable,
            str(REPO / "train.py"),
            "-m",
            *(["hydra/launcher=stacked"] if stacked else []),
            f"seed={','.join(str(s) for s in range(self.seeds))}",
            f"prune.control={','.join(self.controls)}",
            *SHAPES["lenet300"],
            f"train.steps={self.steps}it",
            f"train.eval_every={self.steps}it",
            f"prune.rounds={self.rounds}",
            "train.progress=false",
            "logger=none",
            "hardware.accelerator=cpu",
            f"hardware.threads={self.threads}",
            f"paths.output_dir={out}",
            f"hydra.sweep.dir={out / 'sweep'}",
        ]


def _time_sweep(sweep: Sweep, out: Path, stacked: bool) -> tuple[float, int]:
    """Wall seconds of the sweep in a fresh process, and how many finished run folders its sweep folder holds."""
    started = time.perf_counter()
    done = subprocess.run(sweep.command(out, stacked), cwd=out.parent, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(
            f"the {'stacked' if stacked else 'basic'} sweep exited {done.returncode}: {done.stderr[-800:]}"
        )
    return seconds, sum(1 for d in (out / "sweep").iterdir() if (d / "summary.json").is_file())


def time_sweeps(sweep: Sweep, out: Path) -> dict:
    """The sweep through ``hydra/launcher=stacked``, then through the basic launcher, each in its own folder under
    ``out``: their wall seconds and the run folders each wrote (every job's, and the tickets its controls need)."""
    found = {}
    for way in ("stacked", "basic"):
        (out / way).mkdir(parents=True, exist_ok=True)
        found[way] = _time_sweep(sweep, out / way, way == "stacked")
    return {"sweep": sweep, **{way: seconds for way, (seconds, _) in found.items()},
            "folders": {way: count for way, (_, count) in found.items()}}  # fmt: skip


def sweep_table(row: dict) -> str:
    """The sweep comparison as a Markdown table: wall seconds each way and the basic launcher's over the stack's."""
    sweep = row["sweep"]
    return "\n".join(
        [
            "| jobs | rounds | iterations per round | stacked s | basic s | ratio (basic / stacked) "
            "| run folders written (stacked / basic) |",
            "|---:|---:|---:|---:|---:|---:|---|",
            f"| {sweep.jobs} | {sweep.rounds + 1} | {sweep.steps} | {row['stacked']:.1f} | {row['basic']:.1f} "
            f"| {row['basic'] / row['stacked']:.2f}x | {row['folders']['stacked']} / {row['folders']['basic']} |",
        ]
    )
