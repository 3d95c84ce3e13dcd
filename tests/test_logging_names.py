"""One name per logged value, on the iteration axis of ``rounds.csv``: the step logs (CSV, TensorBoard, W&B) of a
round hold ``final_test_acc`` and ``test_acc`` once each, with the values of ``rounds.csv``; every step metric is
logged at its iteration on the README's axis (a round rewound to k logs from k + 1, an evaluation after iteration
i at i); a resumed run continues its W&B run."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lth.run.loggers import WANDB_ID, IterationAxis, RoundsWandbLogger
from lth.state.artifacts import read_rounds
from lth.state.labels import run_label
from tests.conftest import FAST, run_folders, run_main, typed

TOTAL, EVAL_EVERY, REWIND = 20, 4, 6
SETUP = [
    "dataset=synthetic",
    "train.batch_size=100",
    f"train.steps={TOTAL}it",
    f"train.eval_every={EVAL_EVERY}it",
    "prune.rounds=1",
    f"prune.rewind={REWIND}it",  # 6 is not a multiple of 4: round 1 runs from 6 to 20
    "hardware=cpu",
    "hardware.threads=1",
]


def evaluations(start: int) -> list[int]:
    """The axis points a round starting at ``start`` is evaluated at."""
    return [i for i in range(start + 1, TOTAL + 1) if i % EVAL_EVERY == 0 or i == TOTAL]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("names")
    done = run_main(*SETUP, "logger=[csv,tensorboard]", "paths.output_dir=out", "hydra.run.dir=out/run", cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "out" / "run"


def csv_log(run: Path, round_index: int) -> list[dict[str, str]]:
    with open(run / "logs" / f"round_{round_index:02d}" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def steps_of(rows: list[dict[str, str]], column: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[column])) for r in rows if r.get(column)]


def test_each_test_accuracy_is_logged_once_under_its_rounds_csv_name(run: Path) -> None:
    for row in read_rounds(run / "rounds.csv"):
        rows = csv_log(run, row["round"])
        for name in ("final_test_acc", "test_acc"):
            ((step, value),) = steps_of(rows, name)  # once per round, at the round's last iteration
            assert step == TOTAL and value == pytest.approx(row[name])
        assert len(steps_of(rows, "final_test_loss")) == len(steps_of(rows, "test_loss")) == 1


def test_step_metrics_are_logged_at_their_iteration_on_the_axis(run: Path) -> None:
    for row in read_rounds(run / "rounds.csv"):
        start = REWIND if row["round"] else 0
        rows = csv_log(run, row["round"])
        evaluated = [step for step, _ in steps_of(rows, "val_loss")]
        assert evaluated == evaluations(start)  # where rounds.csv counts: 4, 8, ... (from 8 when rewound to 6)
        assert row["early_stop_iteration"] in evaluated
        assert dict(steps_of(rows, "val_loss"))[row["early_stop_iteration"]] == pytest.approx(row["val_loss"])
        trained = [step for step, _ in steps_of(rows, "train_loss")]
        assert trained and all(start < step <= TOTAL for step in trained) and set(evaluated) <= set(trained)
        lr_column = next(c for c in rows[0] if c.startswith("lr-"))
        assert [step for step, _ in steps_of(rows, lr_column)] == trained  # the rate of each logged iteration


def test_tensorboard_holds_the_same_names_and_axis(run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for row in read_rounds(run / "rounds.csv"):
        events = EventAccumulator(str(run / "logs" / f"round_{row['round']:02d}"))
        events.Reload()
        for name in ("final_test_acc", "test_acc"):
            (scalar,) = events.Scalars(name)
            assert scalar.step == TOTAL and scalar.value == pytest.approx(row[name], abs=1e-6)
        start = REWIND if row["round"] else 0
        assert [s.step for s in events.Scalars("val_loss")] == evaluations(start)


def test_tensorboard_holds_the_identity_as_hparams_and_the_rounds_against_weights_remaining(run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    events = EventAccumulator(str(run / "logs" / "rounds"))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    session = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    hparams = {key: getattr(value, value.WhichOneof("kind")) for key, value in session.hparams.items()}
    assert hparams["prune.rate"] == pytest.approx(0.2) and hparams["train.steps"] == f"{TOTAL}it"
    assert hparams["dataset.name"] == "synthetic" and "hardware.threads" not in hparams  # identity keys only
    assert "_hparams_/experiment" not in content  # TensorBoard gathers the sweep's keys from all its sessions
    assert {"rounds/test_acc", "rounds/weights_remaining", "rounds/train_flops"} <= set(events.Tags()["scalars"])
    rows = read_rounds(run / "rounds.csv")
    for name in ("test_acc", "val_loss"):
        by_round = events.Scalars(f"rounds/{name}")
        assert [s.step for s in by_round] == [row["round"] for row in rows]
        by_remaining = events.Scalars(f"by_weights_remaining/{name}")  # hundredths of a percent: 10000 dense
        assert [s.step for s in by_remaining] == [round(10000 * row["weights_remaining"]) for row in rows]
        assert [s.value for s in by_remaining] == pytest.approx([row[name] for row in rows], abs=1e-6)
    assert [s.step for s in by_remaining][0] == 10000 > [s.step for s in by_remaining][1]
    for folder in ("rounds", "round_00"):  # Lightning's hparams.yaml holds the identity too
        assert "prune.rate: 0.2" in (run / "logs" / folder / "hparams.yaml").read_text()


def test_a_sweeps_jobs_are_named_by_the_keys_it_varies(tmp_path: Path) -> None:
    sweep = ["-m", *FAST, "prune.rounds=1", "dataset.image_size=16", "prune.rate=0.2,0.4", "hydra.sweep.dir=sweep"]
    done = run_main(*sweep, "paths.output_dir=out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    aliases = tmp_path / "sweep" / "by-label"
    rest = "dataset=synthetic,train.steps=30it,train.eval_every=10it,dataset.image_size=16,prune.rounds=1"
    # the job at the default's rate is named by it too; dataset.source.image_size copies dataset.image_size: left out
    assert sorted(p.name for p in aliases.iterdir()) == [f"prune.rate=0.2,{rest}", f"prune.rate=0.4,{rest}"]
    assert {os.readlink(p) for p in aliases.iterdir()} == {f"../{run.name}" for run in run_folders(tmp_path / "sweep")}


def test_a_swept_group_and_a_swept_value_name_the_job_even_at_the_default(make_cfg: Callable) -> None:
    cfg = typed(make_cfg(fast=False))
    assert run_label(cfg.plain) == "default"
    assert run_label(cfg.plain, (("model", "lenet300"), ("seed", "0"))) == "model=lenet300,seed=0"
    conv = typed(make_cfg("model=conv2", "seed=3", "dataset=synthetic", fast=False))
    swept = (("seed", "3"), ("train.eval_batch_size", "10"))  # a run-only key names nothing
    assert run_label(conv.plain, swept) == "seed=3,model=conv2,dataset=synthetic"
    assert run_label(conv.plain, (("data_seed", "null"),)).startswith("data_seed=null,model=conv2,")
    # the ticket a control job trains (prune.control null) is named by its own value, not the job's
    control = typed(make_cfg("prune.control=random_prune", fast=False))
    ticket = control.but(**{"prune.control": None})
    assert run_label(control.plain, (("prune.control", "random_prune"),)) == "prune.control=random_prune"
    assert run_label(ticket.plain, (("prune.control", "random_prune"),)) == "prune.control=null"


def test_a_resumed_rounds_csv_log_keeps_its_rows_and_gets_the_hparams(tmp_path: Path) -> None:
    from lth.run.loggers import CSVRounds

    folder = tmp_path / "logs" / "round_00"
    folder.mkdir(parents=True)
    (folder / "metrics.csv").write_text("step,val_loss\n4,1.0\n8,0.5\n12,0.4\n")  # 12: after the checkpoint at 9
    kind = CSVRounds({"_target_": "pytorch_lightning.loggers.CSVLogger"}, tmp_path / "logs", {"prune.rate": 0.2})
    kind.for_round(0, IterationAxis(0), None, resumed_at=9)
    assert (folder / "metrics.csv").read_text().split() == ["step,val_loss", "4,1.0", "8,0.5"]
    assert (folder / "hparams.yaml").read_text() == "prune.rate: 0.2\n"


class _Recorder:
    """Stands in for a wandb run: keeps what is logged."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def log(self, row: dict) -> None:
        self.rows.append(row)


def test_wandb_steps_are_the_axis_shifted_by_the_rounds_before(tmp_path: Path) -> None:
    run = _Recorder()
    logger = RoundsWandbLogger(save_dir=str(tmp_path), experiment=run)
    for k, start in ((0, 0), (1, REWIND), (1, REWIND)):  # round 1 again: a later process resuming it
        logger.start_round(k, offset=k * TOTAL, axis=IterationAxis(start))
        logger.log_metrics({"val_loss": 1.0}, step=9)  # Lightning's batch index 9: iteration start + 10
    assert [row["iteration"] for row in run.rows] == [10, 16, 16]
    assert [row["trainer/global_step"] for row in run.rows] == [10, 36, 36]
    assert [row["round"] for row in run.rows] == [0, 1, 1]


@pytest.fixture
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """W&B offline, its settings and caches under tmp_path."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb_home"))
    yield
    wandb.teardown()


class Killed(BaseException):
    """Stands for a SIGKILL after round 0."""


def test_a_resumed_run_continues_its_wandb_run(make_cfg, tmp_path: Path, offline_wandb, monkeypatch) -> None:
    import lth.run.loop
    from tests.conftest import train

    run_dir = tmp_path / "run"
    write_rounds = lth.run.loop.write_rounds

    def killed_after_round_0(path: Path, rows: list[dict]) -> None:
        write_rounds(path, rows)
        raise Killed

    monkeypatch.setattr(lth.run.loop, "write_rounds", killed_after_round_0)
    overrides = ["logger=wandb", "train.steps=20it", "prune.rounds=1"]
    with pytest.raises(Killed):
        train(make_cfg(*overrides), run_dir=run_dir)
    run_id = (run_dir / "logs" / WANDB_ID).read_text().strip()
    assert run_id
    monkeypatch.setattr(lth.run.loop, "write_rounds", write_rounds)

    train(make_cfg(*overrides, "resume=true"), run_dir=run_dir)
    assert len(read_rounds(run_dir / "rounds.csv")) == 2
    assert (run_dir / "logs" / WANDB_ID).read_text().strip() == run_id
    parts = sorted((run_dir / "logs" / "wandb").glob("offline-run-*"))
    assert len(parts) == 2  # one per process, both parts of the same W&B run (`wandb sync` merges them)
    for part in parts:
        (record,) = part.glob("run-*.wandb")
        assert record.name == f"run-{run_id}.wandb"
