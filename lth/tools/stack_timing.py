"""What a member of a stack costs against a separate run, and whether members stay independent on this device.

:func:`compare` trains ``members`` runs (seeds 0..n-1, round 0 of ``steps`` iterations, one evaluation at its end)
of a model on generated data three ways, each in its own output folder: as one stack (``train.engine=stacked``,
:func:`lth.run.stack.train_stack`), as separate stacks of one (the same engine, one run after another), and, up to
``lightning_max`` members, as separate runs of the Lightning engine (:func:`lth.run.loop.train`). The wall time of
each way over the members is the per-member time of a round. The stack and the stacks of one must write the same
run folders bit for bit (rows without their timings, masks, weights): that is the member-independence check.
:func:`step_compare` times training steps of networks stacked with ``vmap`` against the same networks alone, without
the engine, for models the engine refuses (convolutions: their stacked kernels are grouped convolutions, whose
numbers change with the stack's size). ``scripts/benchmark.py`` (section h) and ``scripts/gpu_check.sh`` call them.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

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


def run_configs(model: str, members: int, steps: int, accelerator: str, out: Path) -> list[RunConfig]:
    """``members`` runs of ``model`` (seeds 0..n-1) on generated data of its shape, ``train.engine=stacked``: round 0
    only, ``steps`` iterations evaluated once at the end, no logger, outputs under ``out``."""
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
                        f"hardware.accelerator={accelerator}",
                        f"seed={seed}",
                        f"paths.output_dir={out}",
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


def compare(model: str, members: int, steps: int, accelerator: str, out: Path, lightning_max: int = 0) -> dict:
    """Per-member seconds of a round: one stack of ``members``, stacks of one, and (up to ``lightning_max``
    members) separate Lightning runs; and whether the stack's run folders equal the stacks of one's."""
    from lth.run.loop import train as lightning_train
    from lth.run.stack import train_stack

    timings: dict[str, float | None] = {}
    folders: dict[str, list[Path]] = {}
    for way, size in (("stacked", members), ("separate", 1)):
        cfgs = run_configs(model, members, steps, accelerator, out / way)
        folders[way] = [Path(c.output_dir) / "runs" / run_id(c.plain) for c in cfgs]
        timings[way] = _timed(lambda cfgs=cfgs, way=way, size=size: train_stack(cfgs, folders[way], size)) / members
    timings["lightning"] = None
    if members <= lightning_max:
        plain = [c.but(**{"train.engine": "lightning"}) for c in run_configs(model, members, steps, accelerator, out)]
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


def _networks(model: str, members: int) -> list[torch.nn.Module]:
    """``members`` networks of ``model`` for its generated data's shape, seeds 0..n-1."""
    from lth.models import ConvNet, LeNet300100

    nets = []
    for seed in range(members):
        torch.manual_seed(seed)
        nets.append(LeNet300100(1, 28, 10) if model == "lenet300" else ConvNet(3, 32, 10))
    return nets


def _stacked_steps(nets: list[torch.nn.Module], x: torch.Tensor, y: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` Adam steps of the networks as one vmapped stack on the batch ``x``, ``y`` (one per member); the
    last step's logits."""
    from torch.func import functional_call, stack_module_state, vmap

    params, _ = stack_module_state(nets)
    params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    base = copy.deepcopy(nets[0]).to("meta")
    forward = vmap(lambda p, xb: functional_call(base, p, (xb,)))
    optimizer = torch.optim.Adam(params.values(), lr=1.2e-3)
    for _ in range(steps):
        logits = forward(params, x)
        optimizer.zero_grad(set_to_none=True)
        vmap(F.cross_entropy)(logits, y).sum().backward()
        optimizer.step()
    return logits.detach()


def _separate_steps(nets: list[torch.nn.Module], x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    """The same steps, each network alone with its own optimiser, one after another."""
    for k, net in enumerate(nets):
        optimizer = torch.optim.Adam(net.parameters(), lr=1.2e-3)
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(net(x[k]), y[k]).backward()
            optimizer.step()


def step_compare(model: str, members: int, steps: int, device: torch.device, batch: int = 60) -> dict:
    """Per-member seconds of a training step (Adam, batch 60, generated data) of ``members`` networks of ``model``
    as one vmapped stack and as separate networks; and whether the stack's last logits of its last member equal
    that member's stacked alone (member independence of the kernels, without the engine)."""
    shape = (1, 28, 28) if model == "lenet300" else (3, 32, 32)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(members, batch, *shape, generator=generator).to(device)
    y = torch.randint(10, (members, batch), generator=generator).to(device)
    nets = [n.to(device) for n in _networks(model, members)]
    _stacked_steps(nets, x, y, 1)  # warm-up
    seconds = {}
    for way, run in (("stacked", _stacked_steps), ("separate", _separate_steps)):
        _sync(device)
        started = time.perf_counter()
        run(copy.deepcopy(nets), x, y, steps)
        _sync(device)
        seconds[way] = (time.perf_counter() - started) / (steps * members)
    together = _stacked_steps(nets, x, y, 2)[-1]
    alone = _stacked_steps(nets[-1:], x[-1:], y[-1:], 2)[0]
    return {"model": model, "members": members, "steps": steps, **seconds, "independent": torch.equal(together, alone)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_table(rows: Sequence[dict]) -> str:
    """:func:`step_compare`'s rows as a Markdown table: milliseconds per member-step and the stack's speed-up."""
    lines = [
        "| model | members | stacked ms/member-step | separate ms/member-step | speed-up | members independent |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['members']} | {1000 * r['stacked']:.3f} | {1000 * r['separate']:.3f} "
            f"| {r['separate'] / r['stacked']:.2f}x | {'yes' if r['independent'] else 'NO'} |"
        )
    return "\n".join(lines)
