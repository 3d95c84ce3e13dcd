"""The stacked engine (``train.engine=stacked``, ``hydra/launcher=stacked``): members are independent of their stack,
a stacked sweep writes ordinary run folders, a killed stack resumes exactly, a member that diverges ends alone, what
does not stack is refused; the benchmark times stacks and whole sweeps."""

from __future__ import annotations

import csv
import shlex
import signal
from pathlib import Path

import pytest
import torch

from lth.config.identity import identity, run_id
from lth.config.run import migrate
from lth.run.signals import Interrupted
from lth.state.artifacts import ROUND_COLUMNS, read_rounds
from lth.state.store import CHECKPOINT
from tests.conftest import FAST, run_folders, run_main, typed

STACKED = ["-m", "hydra/launcher=stacked"]


@pytest.mark.parametrize("model", ["lenet300", "conv2"])
def test_a_member_s_outputs_and_gradients_do_not_depend_on_its_stack(model: str) -> None:
    from torch.func import functional_call, stack_module_state, vmap

    from lth.models import ConvNet, LeNet300100
    from lth.run.stacked import stackable_copy

    torch.manual_seed(0)
    shape = (1, 28, 28) if model == "lenet300" else (3, 32, 32)
    nets = [LeNet300100(1, 28, 10) if model == "lenet300" else ConvNet(3, 32, 10) for _ in range(4)]
    x, y = torch.randn(4, 16, *shape), torch.randint(0, 10, (4, 16))
    base = stackable_copy(nets[0])  # convolutions as products of unfolded patches

    def grads(members: list[int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        params, _ = stack_module_state([nets[k] for k in members])
        logits = vmap(lambda p, xb: functional_call(base, p, (xb,)))(params, x[members])
        vmap(torch.nn.functional.cross_entropy)(logits, y[members]).sum().backward()
        return logits.detach(), {k: v.grad for k, v in params.items()}

    alone_logits, alone = grads([3])
    assert torch.allclose(alone_logits[0], nets[3](x[3]), atol=1e-5)  # the network's own function
    for others in ([0, 3], [0, 1, 2, 3]):
        stack_logits, stacked = grads(others)
        assert torch.equal(alone_logits[0], stack_logits[-1])
        for name, grad in alone.items():
            assert torch.equal(grad[0], stacked[name][-1]), name


def test_the_engine_names_the_run_and_old_run_ids_stand(make_cfg) -> None:
    plain = typed(make_cfg()).plain
    stacked = typed(make_cfg("train.engine=stacked")).plain
    assert "engine" not in identity(plain)["train"]
    assert identity(stacked)["train"]["engine"] == "stacked"
    assert run_id(stacked) != run_id(plain)
    old = {**plain, "train": {k: v for k, v in plain["train"].items() if k != "engine"}}  # written before the key
    assert run_id(migrate(old)) == run_id(plain)


def test_each_engine_trains_only_its_own_runs(make_cfg, tmp_path: Path) -> None:
    from lth.core.errors import ConfigError
    from lth.run.loop import train as lightning_train
    from lth.run.stack import train_stack

    with pytest.raises(ConfigError, match="^train.engine: got lightning"):
        train_stack([typed(make_cfg())], [tmp_path / "run"], 1)
    with pytest.raises(ConfigError, match="^train.engine: stacked runs are trained by lth.run.engine.train"):
        lightning_train(typed(make_cfg("train.engine=stacked")), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (
            [STACKED[1], "prune.method=early_bird", "prune.target_sparsity=0.5", "prune.rounds=1", "seed=0,1"],
            "prune.method",
        ),
        ([STACKED[1], "prune.rewind=lr", "seed=0,1"], "prune.rewind"),
        ([STACKED[1], "train.engine=lightning", "seed=0,1"], "train.engine"),
        ([STACKED[1], "hydra.launcher.size=0", "seed=0,1"], "hydra.launcher.size"),
        (["train.engine=stacked", "+trainer.gradient_clip_val=1.0"], "trainer"),
        (["train.engine=stacked", "model=resnet20"], "model"),  # BatchNorm's running statistics
    ],
)
def test_what_does_not_stack_is_one_line_and_nothing_is_written(tmp_path: Path, args: list[str], key: str) -> None:
    out = tmp_path / "outputs"
    sweep = ["-m"] if STACKED[1] in args else []
    done = run_main(*sweep, *FAST, f"paths.output_dir={out}", *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}:"), done.stderr
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*")), list(out.rglob("*"))


def test_a_diverged_stacked_run_ends_in_the_plain_run_s_line(tmp_path: Path) -> None:
    args = [*FAST, "optim.optimizer.lr=1e30", f"paths.output_dir={tmp_path / 'out'}"]
    lines = []
    for engine in ("lightning", "stacked"):
        done = run_main(*args, f"train.engine={engine}", cwd=tmp_path)
        assert done.returncode == 3, done.stderr
        lines.append(done.stderr.strip().splitlines()[-1])
    plain = "error: round 0: val_loss is nan at iteration 10; resume=true restarts round 0 from its start"
    assert lines == [plain, plain]


def _step_log(path: Path) -> list[dict[str, str]]:
    """A ``metrics.csv`` step log's rows, empty cells left out."""
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def test_a_stacked_run_logs_the_steps_of_the_lightning_run_of_its_config(tmp_path: Path) -> None:
    args = [*FAST, "prune.rounds=1", "prune.rewind=5it", "logger=csv", f"paths.output_dir={tmp_path / 'out'}"]
    logs = {}
    for engine in ("lightning", "stacked"):
        run_dir = tmp_path / engine
        done = run_main(*args, f"train.engine={engine}", f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        logs[engine] = sorted((run_dir / "logs").glob("round_*/metrics.csv"))
    assert (
        [p.parent.name for p in logs["stacked"]]
        == [p.parent.name for p in logs["lightning"]]
        == ["round_00", "round_01"]
    )
    for plain, stacked in zip(logs["lightning"], logs["stacked"], strict=True):
        with open(plain) as a, open(stacked) as b:
            assert next(csv.reader(a)) == next(csv.reader(b))  # the same columns
        rows, stacked_rows = _step_log(plain), _step_log(stacked)
        assert [sorted(r) for r in rows] == [sorted(r) for r in stacked_rows]  # the same metrics in each row
        assert [(r["step"], r.get("epoch")) for r in rows] == [(r["step"], r.get("epoch")) for r in stacked_rows]
        for row, stacked_row in zip(rows, stacked_rows, strict=True):
            for key, value in row.items():
                assert float(stacked_row[key]) == pytest.approx(float(value), abs=1e-4), (plain, row["step"], key)
    steps = [int(r["step"]) for r in _step_log(logs["stacked"][1]) if "train_loss" in r]
    assert steps == [10, 15, 20, 25, 30]  # round 1 rewound to 5it: every 5 iterations from there


def _files(run_dir: Path) -> dict[str, bytes]:
    """What a run folder's results are: rounds.csv without its timings, and every mask, weights and rewind file."""
    rows = [{k: v for k, v in row.items() if k != "train_seconds"} for row in read_rounds(run_dir / "rounds.csv")]
    found = {"rounds": repr(rows).encode()}
    for path in sorted(run_dir.rglob("*.pt")):
        found[str(path.relative_to(run_dir))] = path.read_bytes()
    return found


@pytest.mark.slow
def test_members_alone_and_in_a_stack_and_a_stopped_stack_resumed_write_the_same_run_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lth.run.stack as stack

    sweep = [*FAST, "train.steps=20it", "seed=0,1", "prune.control=null,reinit,random_prune", "logger=csv"]
    out = tmp_path / "outputs"
    alone = run_main(*STACKED, *sweep, "hydra.launcher.size=1", f"paths.output_dir={out}",
                     f"hydra.sweep.dir={tmp_path / 'alone'}", cwd=tmp_path)  # fmt: skip
    assert alone.returncode == 0, alone.stderr
    fit, calls = stack.fit_stack, []

    def stopped_in_round_1(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == 2:
            raise Interrupted(signal.SIGTERM, 1)  # what the stop signal's handler raises
        return fit(*args, **kwargs)

    monkeypatch.setattr(stack, "fit_stack", stopped_in_round_1)
    together = [*STACKED, *sweep, f"paths.output_dir={out}2", f"hydra.sweep.dir={tmp_path / 'together'}"]  # own round 0
    stopped = run_main(*together, cwd=tmp_path)
    assert stopped.returncode == 143, stopped.stderr
    line = stopped.stderr.strip().splitlines()[-1]
    assert line.startswith("stopped by SIGTERM in round 1; continue with: python train.py -m hydra/launcher=stacked")
    assert all(len(read_rounds(d / "rounds.csv")) == 1 for d in run_folders(tmp_path / "together"))
    monkeypatch.setattr(stack, "fit_stack", fit)
    command = shlex.split(line.partition("continue with: ")[2])
    assert command[-2:] == [f"hydra.sweep.dir={tmp_path / 'together'}", "resume=true"]
    resumed = run_main(*command[2:], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count("restarts from its start") == 6
    folders = run_folders(tmp_path / "alone")
    assert len(folders) == 6
    for folder in folders:
        with open(folder / "rounds.csv") as f:
            assert tuple(next(csv.reader(f))) == ROUND_COLUMNS  # the plain run's columns
        assert (folder / "summary.json").is_file() and (folder / "round_02" / "mask.pt").is_file()
        assert _files(folder) == _files(tmp_path / "together" / folder.name), folder.name
        twin = tmp_path / "together" / folder.name
        logs = sorted(p.relative_to(folder) for p in folder.glob("logs/round_*/metrics.csv"))  # none of a round 0 taken
        assert logs == sorted(p.relative_to(twin) for p in twin.glob("logs/round_*/metrics.csv")), folder.name
        assert {p.parent.name for p in logs} >= {"round_01", "round_02"}
        assert all((folder / p).read_bytes() == (twin / p).read_bytes() for p in logs)  # round 1's restarted afresh


def test_a_stack_trains_a_shared_round_0_once_and_its_folders_are_those_of_each_member_training_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lth.run.stack as stack

    fit, calls = stack.fit_stack, []

    def counted(members, *args):  # noqa: ANN001, ANN002, ANN202
        calls.append((members[0].ticket.round_index, len(members)))
        return fit(members, *args)

    monkeypatch.setattr(stack, "fit_stack", counted)
    sweep = [*FAST, "train.steps=20it", "prune.rounds=1", "seed=0", "prune.control=null,reinit"]
    for name, share in (("shared", "true"), ("each", "false")):
        done = run_main(*STACKED, *sweep, f"train.share_dense={share}", f"paths.output_dir={tmp_path / name}",
                        f"hydra.sweep.dir={tmp_path / name / 'sweep'}", cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert calls == [(0, 1), (1, 2), (0, 2), (1, 2)]  # round 0 once (the ticket), then in each member
    folders = run_folders(tmp_path / "shared" / "sweep")
    assert len(folders) == 2
    for folder in folders:
        assert _files(folder) == _files(tmp_path / "each" / "sweep" / folder.name), folder.name
    assert all((f / "round_00" / "early_stop.pt").is_file() and (f / "rewind.pt").is_file() for f in folders)
    assert (tmp_path / "shared" / "dense").is_dir() and not (tmp_path / "each" / "dense").exists()


@pytest.mark.slow
def test_a_member_that_diverges_ends_alone_and_the_others_train_on_as_in_a_stack_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lth.run.stack as stack

    start_round = stack.start_round

    def seed_1_diverges_in_round_1(r, round_index, *args):  # noqa: ANN001, ANN002, ANN202
        start_round(r, round_index, *args)
        if r.cfg.seed == 1 and round_index == 1:
            next(r.module.parameters()).data.fill_(float("inf"))

    monkeypatch.setattr(stack, "start_round", seed_1_diverges_in_round_1)
    out, done = tmp_path / "outputs", {}
    for name, seeds in (("with", "seed=0,1,2"), ("without", "seed=0,2")):
        done[name] = run_main(*STACKED, *FAST, seeds, f"paths.output_dir={out}", f"hydra.sweep.dir={tmp_path / name}",
                              cwd=tmp_path)  # fmt: skip
    assert done["without"].returncode == 0, done["without"].stderr
    assert done["with"].returncode == 3, done["with"].stderr
    job, line = done["with"].stderr.strip().splitlines()[-2:]
    assert job.startswith("#1 : ") and "seed=1" in job.split()  # the job, as the basic launcher names it
    assert line == (
        "error: round 1: val_loss is nan at iteration 10; the rounds before it are kept, "
        "resume=true restarts round 1 from its start (the end of round 0)"
    )
    folders = {f.name: f for f in run_folders(tmp_path / "with")}
    (diverged,) = [f for f in folders.values() if "seed: 1\n" in (f / "config.yaml").read_text()]
    assert len(read_rounds(diverged / "rounds.csv")) == 1 and not (diverged / "summary.json").exists()
    assert (diverged / "round_00" / CHECKPOINT).is_file()  # round 0 kept
    others = run_folders(tmp_path / "without")
    assert len(others) == 2 and {f.name for f in others} == set(folders) - {diverged.name}
    for folder in others:
        assert (folders[folder.name] / "summary.json").is_file()
        assert _files(folder) == _files(folders[folder.name]), folder.name
    monkeypatch.setattr(stack, "start_round", start_round)
    resumed = run_main(*STACKED, *FAST, "seed=0,1,2", f"paths.output_dir={out}",
                       f"hydra.sweep.dir={tmp_path / 'with'}", "resume=true", cwd=tmp_path)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count("restarts from its start") == 1  # the diverged round, from the end of round 0
    assert len(read_rounds(diverged / "rounds.csv")) == 3 and (diverged / "summary.json").is_file()


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["--stacked-sweep", "--sweep-seeds", "0"], "--sweep-seeds"),
        (["--stacked-sweep", "--sweep-controls", "null", "lr"], "--sweep-controls"),
        (["--stacked-sweep", "--sweep-controls", "reinit", "reinit"], "--sweep-controls"),
        (["--stacked-sweep", "--sweep-rounds", "-1"], "--sweep-rounds"),
    ],
)
def test_the_benchmark_s_sweep_options_refuse_bad_values_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], key: str
) -> None:
    from tests.test_scripts import script

    with pytest.raises(SystemExit) as done:
        script("benchmark")([*args, "--stacked-only", "--out", str(tmp_path / "b.md")])
    assert done.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}: ") and not (tmp_path / "b.md").exists()


@pytest.mark.slow
def test_gpu_check_cpu_form_and_the_benchmark_s_stacked_section_time_stacks_and_sweeps_against_separate_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tests.test_scripts import script

    threads = torch.get_num_threads()
    try:
        script("gpu_check")(["--cpu", "--steps", "2", "--out", str(tmp_path / "gpu.md")])
        sweep = ["--stacked-sweep", "--sweep-seeds", "2", "--sweep-controls", "null", "--sweep-rounds", "1"]
        script("benchmark")(
            ["--stacked", "1", "--stacked-steps", "2", *sweep, "--stacked-only", "--out", str(tmp_path / "b.md")]
        )
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
    gpu = (tmp_path / "gpu.md").read_text()
    rows = [line for line in gpu.splitlines() if line.startswith(("| lenet300 |", "| conv2 |"))]
    assert len(rows) == 3 and "| lenet300 | 2 | 2 |" in gpu and "| conv2 | 2 | 2 |" in gpu
    assert all(row.endswith("| yes |") for row in rows)  # members independent, convolutions included
    bench = (tmp_path / "b.md").read_text()
    assert bench.startswith("<!-- benchmark-stacked:start -->\n`python scripts/benchmark.py --stacked 1")
    (row,) = [line for line in bench.splitlines() if line.startswith("| lenet300 | 1 |")]
    assert row.endswith("| yes |") and row.count("x |") == 2  # stacks of one and Lightning runs, side by side
    (swept,) = [line for line in bench.splitlines() if line.startswith("| 2 | 2 | 2 |")]  # jobs, rounds, iterations
    stacked_s, basic_s, ratio, folders = [cell.strip() for cell in swept.split("|")[4:8]]
    assert float(stacked_s) > 0 and float(basic_s) > 0 and ratio.endswith("x")
    assert folders == "2 / 2"  # both sweeps, as processes of train.py -m, wrote every job's run folder


@pytest.mark.slow
def test_members_of_other_rates_and_granularities_rewound_to_a_step_are_the_same_alone_and_stacked(
    tmp_path: Path,
) -> None:
    sweep = [*FAST, "train.steps=20it", "prune.rounds=1", "prune.rewind=10it", "prune.rate=0.2,0.5"]
    sweep.append("prune.granularity=weight,channel,2:4")  # three stacks: the granularity changes how masks apply
    out = tmp_path / "outputs"
    for name, size in (("alone", 1), ("together", 4)):
        done = run_main(*STACKED, *sweep, f"hydra.launcher.size={size}", f"paths.output_dir={out}",
                        f"hydra.sweep.dir={tmp_path / name}", cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr
    folders = run_folders(tmp_path / "alone")
    assert len(folders) == 6
    for folder in folders:
        (_, round1) = read_rounds(folder / "rounds.csv")
        assert round1["early_stop_iteration"] > 10 and round1["train_iterations"] == 20 + 10  # trained from 10it
        assert _files(folder) == _files(tmp_path / "together" / folder.name), folder.name
    channel = [f for f in folders if "granularity: channel" in (f / "config.yaml").read_text()]
    mask = torch.load(channel[0] / "round_01" / "mask.pt")["model.layers.0.weight"]
    weights = torch.load(channel[0] / "round_01" / "early_stop.pt")
    removed = ~mask.any(1)
    assert removed.any() and weights["model.layers.0.bias"][removed].eq(0).all()  # a removed neuron's bias stays 0
