"""``logger=mlflow``: ``python train.py logger=[csv,mlflow] ...`` (in-process, ``train.cli``) on synthetic data,
killed after round 0 and resumed, then the run folder's MLflow store read back with MLflow's client: one run for the
job, continued by the resumed process; its params the run's identity; the per-round results against the weights
remaining; the step metrics on the iteration axis, round after round, with the values of the CSV step log."""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import OmegaConf

pytest.importorskip("mlflow")
pytest.importorskip("sqlalchemy")

import train as train_script  # noqa: E402
from lth.config.identity import identity
from lth.run.loggers import MLFLOW_ID, MLFLOW_STORE, param_key  # noqa: E402
from lth.state.artifacts import ROUND_COLUMNS, read_rounds  # noqa: E402
from lth.state.labels import flatten, label, show  # noqa: E402
from tests.test_logging_names import EVAL_EVERY, REWIND, TOTAL  # noqa: E402
from tests.test_logging_names import SETUP as LOGGED  # noqa: E402

SETUP = [*LOGGED, "logger=[csv,mlflow]"]  # round 1 runs from 6 to 20 on the axis


class Killed(BaseException):
    """Stands for a SIGKILL after round 0."""


def cli(*args: str) -> None:
    """``python train.py *args`` in this process."""
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        train_script.cli(list(args))
    except SystemExit as done:
        assert done.code in (0, None), f"train.py exited with {done.code}"
    finally:
        GlobalHydra.instance().clear()


@dataclass
class Job:
    run_dir: Path
    run_id: str  # the MLflow run's id after the killed process
    status_when_killed: str
    client: object  # mlflow.tracking.MlflowClient of the run folder's store


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Job:
    from mlflow.tracking import MlflowClient

    from lth.run.loggers import RunLoggers

    root = tmp_path_factory.mktemp("mlflow")
    run_dir = root / "run"
    args = [*SETUP, f"paths.output_dir={root / 'out'}", f"hydra.run.dir={run_dir}"]
    log_round = RunLoggers.log_round

    def killed_after_round_0(self: RunLoggers, row: dict, sparsity: dict) -> None:
        log_round(self, row, sparsity)
        raise Killed

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["train.py"])
        patch.setenv("HYDRA_MAIN_MODULE", "__main__")  # Hydra finds conf/ beside train.py, as when run as a script
        patch.setenv("OMP_NUM_THREADS", "1")
        patch.setattr(RunLoggers, "log_round", killed_after_round_0)
        with pytest.raises(Killed):
            cli(*args)
        client = MlflowClient(f"sqlite:///{run_dir / 'logs' / MLFLOW_STORE}")
        run_id = (run_dir / "logs" / MLFLOW_ID).read_text().strip()
        status = client.get_run(run_id).info.status
        patch.setattr(RunLoggers, "log_round", log_round)
        cli(*args, "resume=true")
    return Job(run_dir, run_id, status, client)


def history(job: Job, key: str) -> dict[int, float]:
    """The values of metric ``key`` by step: one value at each step (``round`` and ``iteration`` are logged with
    every row Lightning logs at a step, so more than once, alike)."""
    points = job.client.get_metric_history(job.run_id, key)
    values = {p.step: p.value for p in points}
    assert len({(p.step, p.value) for p in points}) == len(values), f"{key}: two values at a step"
    if key not in ("round", "iteration"):
        assert len(points) == len(values), f"{key} logged twice at a step: {sorted(p.step for p in points)}"
    return values


def test_a_resumed_run_continues_its_mlflow_run(job: Job) -> None:
    assert job.status_when_killed == "FAILED"  # the killed process ended its part
    assert (job.run_dir / "logs" / MLFLOW_ID).read_text().strip() == job.run_id
    experiment = job.client.get_experiment_by_name("lth")
    (run,) = job.client.search_runs([experiment.experiment_id])  # one run for the job, both processes in it
    assert run.info.run_id == job.run_id and run.info.status == "FINISHED"
    assert len(read_rounds(job.run_dir / "rounds.csv")) == 2
    assert sorted(history(job, "rounds/round")) == [0, 1]  # round 0 from the first process, round 1 from the second


def test_params_are_the_runs_identity(job: Job) -> None:
    cfg = OmegaConf.load(job.run_dir / "config.yaml")
    flat = flatten(identity(cfg))
    run = job.client.get_run(job.run_id)
    assert run.data.params == {param_key(k): show(v) for k, v in flat.items()}
    assert run.data.params["train.steps"] == f"{TOTAL}it" and run.data.params["prune.rewind"] == f"{REWIND}it"
    assert not any(key.startswith(("logger", "hardware.threads", "paths")) for key in run.data.params)  # run-only
    assert run.info.run_name == label(flat)  # as W&B's, what sets it apart from the default config
    assert run.data.tags["lth.run_dir"] == str(job.run_dir)


def test_round_results_are_logged_against_the_weights_remaining(job: Job) -> None:
    rows = read_rounds(job.run_dir / "rounds.csv")
    remaining = history(job, "rounds/weights_remaining")  # step: the round
    assert remaining == pytest.approx({row["round"]: row["weights_remaining"] for row in rows})
    assert remaining[1] < remaining[0] == 1.0
    for column in ROUND_COLUMNS:
        logged = history(job, f"rounds/{column}")
        assert logged == pytest.approx({row["round"]: float(row[column]) for row in rows}), column


def csv_log(run_dir: Path, round_index: int) -> list[dict[str, str]]:
    with open(run_dir / "logs" / f"round_{round_index:02d}" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_step_metrics_are_on_the_iteration_axis_round_after_round(job: Job) -> None:
    val_loss, iteration, round_ = history(job, "val_loss"), history(job, "iteration"), history(job, "round")
    for row in read_rounds(job.run_dir / "rounds.csv"):
        k, start = row["round"], (REWIND if row["round"] else 0)
        offset = k * TOTAL  # round k's iteration i is step k * train.steps + i: never going back over the run
        evaluated = [i for i in range(start + 1, TOTAL + 1) if i % EVAL_EVERY == 0 or i == TOTAL]
        steps = [s for s in sorted(val_loss) if offset < s <= offset + TOTAL]
        assert steps == [offset + i for i in evaluated]
        assert all(iteration[s] == s - offset and round_[s] == k for s in steps)
        in_csv = {int(r["step"]): float(r["val_loss"]) for r in csv_log(job.run_dir, k) if r.get("val_loss")}
        assert {s - offset: val_loss[s] for s in steps} == pytest.approx(in_csv)  # the CSV log's values
        for name in ("final_test_acc", "test_acc"):  # once per round, at its last iteration, as rounds.csv has it
            (step,) = [s for s in history(job, name) if offset < s <= offset + TOTAL]
            assert step == offset + TOTAL and history(job, name)[step] == pytest.approx(row[name])
    trained = history(job, "train_loss")
    assert trained and all(0 < s <= 2 * TOTAL for s in trained)


def test_the_store_is_under_the_run_folder(job: Job) -> None:
    logs = job.run_dir / "logs"
    assert (logs / MLFLOW_STORE).is_file()
    assert job.client.get_experiment_by_name("lth").artifact_location == (logs / "mlartifacts").as_uri()
    assert not (Path.cwd() / "mlruns").exists() and not (Path.cwd() / "mlartifacts").exists()


def test_mlflow_alone_writes_only_its_store(make_cfg, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from tests.conftest import train

    run_dir = tmp_path / "run"
    train(make_cfg("logger=mlflow", "prune.rounds=1", "train.steps=10it", "train.eval_every=5it"), run_dir=run_dir)
    logs = run_dir / "logs"
    assert sorted(p.name for p in logs.iterdir()) == [MLFLOW_STORE, MLFLOW_ID]  # no round_XX folders
    client = MlflowClient(f"sqlite:///{logs / MLFLOW_STORE}")
    run = client.get_run((logs / MLFLOW_ID).read_text().strip())
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "rounds/test_acc")] == [0, 1]
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_loss")) == [5, 10, 15, 20]


def test_other_ranks_open_no_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytorch_lightning.utilities import rank_zero_only

    from lth.run.loggers import IterationAxis, MLflowRun, NoRun

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    run = MLflowRun(log_dir=tmp_path / "logs", name="run", params={"seed": 0}, id_file=tmp_path / "logs" / MLFLOW_ID)
    logger = run.for_round(0, IterationAxis(0), 0, None)
    assert isinstance(logger, NoRun)
    logger.log_metrics({"val_loss": 1.0}, step=3)
    run.log_round({"round": 0, "test_acc": 0.5}, {"layers": {}})
    run.finish()
    assert not (tmp_path / "logs").exists()


def test_without_mlflow_it_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from lth.core.errors import ConfigError
    from lth.run.loggers import check_mlflow

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "alembic" else find_spec(name))
    check_mlflow("http://127.0.0.1:5000")  # a server needs no database library here
    with pytest.raises(ConfigError, match=r"^logger: mlflow needs alembic: pip install 'lth\[mlflow\]'$"):
        check_mlflow("sqlite:///run/logs/mlflow.db")
    assert param_key("prune.layer_rates.features.*") == "prune.layer_rates.features._"
