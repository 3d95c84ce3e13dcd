"""Seeing the ticket: loggers (CSV, TensorBoard, W&B offline, none), the per-round progress line, and the
paper's figures and tables built from run folders."""

from __future__ import annotations

import io
import json
import os
import runpy
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lth.run.loggers import RoundsWandbLogger, WandbRun, has_wandb_key, wandb_mode
from lth.run.progress import RoundProgress, format_duration, format_progress
from lth.state.artifacts import read_rounds, write_rounds
from lth.tools.figures import figure
from lth.tools.results import (
    PAPER_SPARSITIES,
    find_runs,
    load_groups,
    markdown_report,
    markdown_table,
    nearest,
    run_labels,
)
from tests.conftest import run_main, train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def wandb_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """W&B's settings, caches and credentials under tmp_path; the session's credentials dropped afterwards."""
    import wandb

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "wandb_home" / "netrc"))
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb_home"))
    yield
    wandb.teardown()


@pytest.fixture
def offline_wandb(wandb_home, monkeypatch: pytest.MonkeyPatch) -> None:
    """W&B offline, as WANDB_MODE says."""
    monkeypatch.setenv("WANDB_MODE", "offline")


# -- loggers ----------------------------------------------------------------------------------------------


def test_wandb_is_one_offline_run_whose_tables_hold_every_round(make_cfg, tmp_path: Path, offline_wandb) -> None:
    import wandb

    run_dir = tmp_path / "run"
    train(make_cfg("logger=wandb", "train.steps=20it"), run_dir=run_dir)

    assert wandb.run is None  # finished: the next job of a sweep starts its own run
    (offline,) = (run_dir / "logs" / "wandb").glob("offline-run-*")  # one W&B run for all rounds
    (record,) = offline.glob("run-*.wandb")
    config = record.read_bytes()  # the resolved config is the run's config
    assert b'"rewind":"init"' in config and str(tmp_path / "outputs").encode() in config

    tables = offline / "files" / "media" / "table"
    assert len(list(tables.glob("rounds_table_*.table.json"))) == 3  # logged after every round

    def last(key: str) -> dict:  # files are named <key>_<step>_<hash>.table.json
        return json.loads(max(tables.glob(f"{key}_*.table.json"), key=lambda p: int(p.name.split("_")[2])).read_text())

    table = last("rounds_table")
    logged = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    rounds = read_rounds(run_dir / "rounds.csv")
    assert [row["round"] for row in logged] == [row["round"] for row in rounds] == [0, 1, 2]
    for got, want in zip(logged, rounds, strict=True):
        assert got == pytest.approx(want)

    layers = last("sparsity_table")
    for k in range(3):
        sparsity = json.loads((run_dir / f"round_{k:02d}" / "sparsity.json").read_text())
        got = {row[1]: row[4] for row in layers["data"] if row[0] == k}
        assert got == pytest.approx({name: v["weights_remaining"] for name, v in sparsity["layers"].items()})


def _run_record_says(record: bytes, field: str, value: str) -> bool:
    """Whether a ``.wandb`` file holds the W&B run's ``field`` = ``value`` (a protobuf length-delimited string)."""
    from wandb.proto import wandb_internal_pb2 as pb

    number = pb.RunRecord.DESCRIPTOR.fields_by_name[field].number
    return bytes([number << 3 | 2, len(value)]) + value.encode() in record


@pytest.mark.slow
def test_each_sweep_job_is_its_own_wandb_run_in_the_sweeps_group(tmp_path: Path, offline_wandb) -> None:
    done = run_main(
        "-m",
        "dataset=synthetic",
        "train.steps=10it",
        "train.eval_every=10it",
        "prune.rounds=1",
        "logger=wandb",
        "seed=0,1",
        "paths.output_dir=out",
        "hydra.sweep.dir=out/lenet_seeds",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    jobs = sorted(p.parent for p in (tmp_path / "out" / "lenet_seeds").glob("*/rounds.csv"))
    assert len(jobs) == 2
    # named as its by-label link (the keys the sweep varies, then what differs from the default), the folder
    # keeping the hash
    links = {os.readlink(p): p.name for p in (tmp_path / "out" / "lenet_seeds" / "by-label").iterdir()}
    names = []
    for job in jobs:
        (record,) = job.glob("logs/wandb/offline-run-*/run-*.wandb")  # one W&B run per job, never merged
        assert _run_record_says(record.read_bytes(), "run_group", "lenet_seeds")
        name = links[f"../{job.name}"]
        assert _run_record_says(record.read_bytes(), "display_name", name)
        names.append(name)
    assert sorted(n.split(",")[0] for n in names) == ["seed=0", "seed=1"]


def test_wandb_is_offline_without_a_key_and_wandb_mode_wins(
    wandb_home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_mode(None) == "offline"
    assert wandb_mode("disabled") == "disabled"
    (tmp_path / "wandb_home").mkdir(exist_ok=True)
    (tmp_path / "wandb_home" / "netrc").write_text("machine api.wandb.ai login user password " + "x" * 40 + "\n")
    assert has_wandb_key() and wandb_mode(None) == "online"  # what `wandb login` writes
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode("online") is None  # left to wandb, which reads WANDB_MODE


def test_wandb_without_a_server_logs_offline_instead_of_hanging(
    wandb_home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    start = time.monotonic()
    run = WandbRun(save_dir=str(tmp_path / "logs"), name="run", config={"seed": 0}, init_timeout=1)
    run.finish()
    assert time.monotonic() - start < 30
    assert run.run.settings.mode == "offline"
    assert list((tmp_path / "logs" / "wandb").glob("offline-run-*/run-*.wandb"))


class _Recorder:
    """Stands in for a wandb run: keeps what is logged."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def log(self, row: dict) -> None:
        self.rows.append(row)


def test_wandb_steps_keep_counting_when_a_round_restarts_lightnings_step(tmp_path: Path) -> None:
    run = _Recorder()
    logger = RoundsWandbLogger(save_dir=str(tmp_path), experiment=run)
    for k in range(3):
        logger.start_round(k)
        for step in (9, 19, 20):  # train, validation, test: Lightning counts from 0 in every fit
            logger.log_metrics({"val_loss": 1.0}, step=step)

    steps = [row["trainer/global_step"] for row in run.rows]
    assert steps == [9, 19, 20, 29, 39, 40, 49, 59, 60]
    assert [row["round"] for row in run.rows] == [0] * 3 + [1] * 3 + [2] * 3


def test_tensorboard_and_csv_together_write_every_round(make_cfg, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    train(make_cfg("logger=[csv,tensorboard]", "train.steps=20it"), run_dir=run_dir)

    for k in range(3):
        assert list((run_dir / "logs" / f"round_{k:02d}").glob("events.out.tfevents.*"))
        assert (run_dir / "logs" / f"round_{k:02d}" / "metrics.csv").is_file()
    events = EventAccumulator(str(run_dir / "logs" / "rounds"))
    events.Reload()
    logged = events.Scalars("rounds/test_acc")
    rounds = read_rounds(run_dir / "rounds.csv")
    assert [e.step for e in logged] == [r["round"] for r in rounds] == [0, 1, 2]
    assert [e.value for e in logged] == pytest.approx([r["test_acc"] for r in rounds])


def test_no_logger_writes_no_logs_folder(make_cfg, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(make_cfg("logger=none", "prune.rounds=1", "train.steps=10it"), run_dir=run_dir)
    assert (run_dir / "rounds.csv").is_file()
    assert not (run_dir / "logs").exists()


def test_logger_many_is_csv_tensorboard_and_wandb(make_cfg) -> None:
    assert list(make_cfg("logger=many").logger) == ["csv", "tensorboard", "wandb"]


# -- progress ---------------------------------------------------------------------------------------------


def test_progress_line_says_round_weights_accuracy_and_time_left() -> None:
    assert format_progress(0, 5, 1.0) == "round 0/5 | weights remaining 100.0%"
    line = format_progress(2, 5, 0.64, last_test_acc=0.9712, seconds_per_round=100)
    assert line == "round 2/5 | weights remaining 64.0% | last test acc 97.12% | 1m40s/round | ~6m40s left"
    assert [format_duration(s) for s in (42, 185, 7620)] == ["42s", "3m05s", "2h07m"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_printed_to_a_terminal_only() -> None:
    quiet = io.StringIO()
    progress = RoundProgress(3, stream=quiet)
    progress.start(0, 1.0)
    progress.end(0.9)
    assert quiet.getvalue() == ""

    terminal = _Terminal()
    progress = RoundProgress(3, stream=terminal)
    progress.start(0, 1.0)
    progress.end(0.9)
    progress.start(1, 0.8)
    first, second = terminal.getvalue().splitlines()
    assert first == "round 0/3 | weights remaining 100.0%"
    assert second.startswith("round 1/3 | weights remaining 80.0% | last test acc 90.00% | 0s/round | ~0s left")


# -- figures and tables -----------------------------------------------------------------------------------

ROUNDS = 10  # weights remaining 0.8^k: 100, 80, 64, 51.2, 41, 32.8, 26.2, 21.0, 16.8, 13.4 %


def _accuracy(control: str | None, seed: int, k: int) -> float:
    """Tickets hold their accuracy, reinitialised networks lose it; seeds differ by a fixed offset."""
    drift = 0.001 * k if control is None else -0.01 * k
    return 0.95 + drift + 0.01 * seed


def _write_run(folder: Path, config: dict, control: str | None, seed: int, rate: float = 0.2) -> None:
    """A run folder of ``ROUNDS`` rounds, each pruning ``rate`` of the surviving weights."""
    config = json.loads(json.dumps(config))
    config["seed"] = seed
    if control is not None:
        config["prune"]["control"] = control  # the ticket's config has no such key
    folder.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(config), folder / "config.yaml")
    rows = [
        {
            "round": k,
            "weights_remaining": (1 - rate) ** k,
            "early_stop_iteration": 1000 - 50 * k + 10 * seed,
            "val_loss": 0.1,
            "val_acc": 0.95,
            "test_acc": _accuracy(control, seed, k),
            "final_test_acc": 0.95,
            "train_seconds": 1.0,
        }
        for k in range(ROUNDS)
    ]
    write_rounds(folder / "rounds.csv", rows)


@pytest.fixture
def sweep(make_cfg, tmp_path: Path) -> Path:
    """A sweep folder: the ticket and its random-reinit control, two seeds each."""
    config = OmegaConf.to_container(make_cfg(), resolve=True)
    root = tmp_path / "multirun" / "2024-01-01_00-00-00"
    for control in (None, "reinit"):
        for seed in (0, 1):
            _write_run(root / f"{control or 'ticket'}-{seed}", config, control, seed)
    (root / "multirun.yaml").write_text("not a run\n")
    return root.parent


def test_runs_are_found_recursively_and_grouped_by_config_without_seed(sweep: Path) -> None:
    assert len(find_runs([sweep])) == 4
    groups = load_groups([sweep])
    assert [g.label for g in groups] == ["ticket", "prune.control=reinit"]
    assert [[r.config.get("prune.control") for r in g.runs] for g in groups] == [[None, None], ["reinit", "reinit"]]
    assert [sorted(r.path.name for r in g.runs) for g in groups] == [["ticket-0", "ticket-1"], ["reinit-0", "reinit-1"]]


def test_label_is_what_differs_between_groups(make_cfg, tmp_path: Path) -> None:
    for rate in (0.1, 0.2):
        for seed in (0, 1):
            config = OmegaConf.to_container(make_cfg(f"prune.rate={rate}"), resolve=True)
            _write_run(tmp_path / "runs" / f"{rate}-{seed}", config, None, seed)
    assert [g.label for g in load_groups([tmp_path / "runs"])] == ["prune.rate=0.1", "prune.rate=0.2"]
    assert [g.label for g in load_groups([tmp_path / "runs"], ignore=["seed", "prune.rate"])] == ["ticket"]


def test_figure_plots_mean_and_min_max_over_seeds_against_decreasing_weights_remaining(sweep: Path) -> None:
    groups = load_groups([sweep])
    fig = figure(groups, "test_acc", spread="minmax")
    (ax,) = fig.axes

    assert ax.get_xscale() == "log"
    left, right = ax.get_xlim()
    assert left > 100 > 13 > right  # 100% on the left, the sparsest round on the right
    assert ax.get_xlabel() == "% weights remaining"
    assert ax.get_ylabel() == "Test accuracy at early stop (%)"
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["ticket", "prune.control=reinit"]

    ticket, reinit = ax.containers
    x, y = ticket.lines[0].get_data()
    assert list(x) == pytest.approx([100 * 0.8**k for k in range(ROUNDS)])
    assert list(y) == pytest.approx([100 * (0.955 + 0.001 * k) for k in range(ROUNDS)])
    assert list(reinit.lines[0].get_ydata()) == pytest.approx([100 * (0.955 - 0.01 * k) for k in range(ROUNDS)])
    (bars,) = ticket.lines[2]  # vertical error bars from the lower to the higher seed
    low, high = bars.get_segments()[3][:, 1]
    assert (low, high) == pytest.approx((100 * 0.953, 100 * 0.963))

    its = figure(groups, "early_stop_iteration", spread="std")
    y = its.axes[0].containers[0].lines[0].get_ydata()
    assert list(y) == pytest.approx([1005 - 50 * k for k in range(ROUNDS)])


def test_table_rows_are_the_papers_sparsities_with_mean_and_std(sweep: Path) -> None:
    groups = load_groups([sweep])
    assert nearest(groups[0].points("test_acc"), 51.3).round == 3
    assert nearest(groups[0].points("test_acc"), 7.0) is None

    lines = markdown_table(groups, "test_acc", PAPER_SPARSITIES).splitlines()
    assert lines[0] == "| weights remaining | ticket (n=2) | prune.control=reinit (n=2) |"
    rows = {line.split(" | ")[0].lstrip("| "): line.strip("| ").split(" | ")[1:] for line in lines[2:]}
    assert list(rows) == ["100.0%", "51.3%", "21.1%", "13.5%"]  # 7% and sparser were never reached
    assert rows["100.0%"] == ["95.50 ± 0.71", "95.50 ± 0.71"]
    assert rows["51.3%"] == ["95.80 ± 0.71 (at 51.20%)", "92.50 ± 0.71 (at 51.20%)"]
    assert rows["21.1%"] == ["96.20 ± 0.71 (at 20.97%)", "88.50 ± 0.71 (at 20.97%)"]

    text = markdown_report(groups, PAPER_SPARSITIES)
    assert "## Test accuracy at early stop (%)" in text
    assert "## Early-stop iteration" in text
    assert "| 13.5% | 555 ± 7 (at 13.42%) | 555 ± 7 (at 13.42%) |" in text


def test_scripts_write_figures_and_the_report(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    plot = runpy.run_path(str(REPO / "scripts" / "plot.py"))["main"]
    plot([str(sweep), "--out", str(tmp_path / "figures"), "--format", "png", "svg", "--spread", "std"])
    names = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert sorted(Path(line).name for line in capsys.readouterr().out.splitlines()) == names
    assert names == ["early_stop_iteration.png", "early_stop_iteration.svg", "test_acc.png", "test_acc.svg"]
    assert "prune.control=reinit" in (tmp_path / "figures" / "test_acc.svg").read_text()

    reporter = runpy.run_path(str(REPO / "scripts" / "report.py"))["main"]
    reporter([str(sweep), "--out", str(tmp_path / "report.md")])
    assert capsys.readouterr().out == (tmp_path / "report.md").read_text()
    assert "| 100.0% | 95.50 ± 0.71 | 95.50 ± 0.71 |" in (tmp_path / "report.md").read_text()

    with pytest.raises(SystemExit):
        reporter([str(tmp_path / "figures")])  # no run folders there


def test_one_broken_run_folder_is_skipped_in_one_line_and_the_rest_are_reported_and_plotted(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    broken = sweep / "2024-01-01_00-00-00" / "ticket-0"
    (broken / "config.yaml").write_text("prune: [unclosed\n")
    reporter = runpy.run_path(str(REPO / "scripts" / "report.py"))["main"]
    reporter([str(sweep)])  # returns: exit code 0
    out, err = capsys.readouterr()
    assert "| ticket (n=1) | prune.control=reinit (n=2) |" in out and "| 100.0% | 96.00 | 95.50 ± 0.71 |" in out
    (line,) = err.splitlines()
    assert line.startswith(f"skipped {broken}: config.yaml: cannot be read (")
    plot = runpy.run_path(str(REPO / "scripts" / "plot.py"))["main"]
    plot([str(sweep), "--out", str(tmp_path / "figures")])
    out, err = capsys.readouterr()
    assert [Path(p).name for p in out.splitlines()] == ["test_acc.png", "early_stop_iteration.png"]
    assert err.splitlines() == [line]


@pytest.mark.parametrize("script", ["report", "plot"])
def test_ignore_of_a_key_no_run_has_is_refused_in_one_line_naming_the_allowed_keys(
    script: str, sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    main = runpy.run_path(str(REPO / "scripts" / f"{script}.py"))["main"]
    with pytest.raises(SystemExit) as stop:
        main([str(sweep), "--ignore", "seed", "prune.rat", "--out", str(tmp_path / "out")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "error: --ignore: no run's config has the key 'prune.rat'; allowed: a key of the runs' config.yaml, such as "
        "those that differ between them: seed, prune.control"
    ]
    assert not (tmp_path / "out").exists()
    main([str(sweep), "--ignore", "prune", "--out", str(tmp_path / "out")])  # a section pools every key in it


@pytest.fixture
def rates(make_cfg, tmp_path: Path) -> Path:
    """Six configs, one seed each: pruning rates 0.2, 0.5 and 0.3, each as the ticket and its reinit control."""
    root = tmp_path / "rates"
    for rate in (0.2, 0.5, 0.3):
        config = OmegaConf.to_container(make_cfg(f"prune.rate={rate}"), resolve=True)
        for control in (None, "reinit"):
            _write_run(root / f"{rate}-{control or 'ticket'}", config, control, 0, rate=rate)
    return root


def test_figure_ticks_are_every_series_sparsities_and_the_legend_is_outside_the_axes(rates: Path) -> None:
    groups = load_groups([rates])
    assert len(groups) == 6
    fig = figure(groups, "test_acc")
    (ax,) = fig.axes
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()

    union = {round(100 * (1 - rate) ** k, 6) for rate in (0.2, 0.5, 0.3) for k in range(ROUNDS)}
    ticks = [round(t, 6) for t in ax.get_xticks()]
    assert set(ticks) <= union and len(ticks) >= 6
    assert ticks[0] == 100 and ticks[-1] == round(100 * 0.5 ** (ROUNDS - 1), 6)  # the sparsest: a rate-0.5 round
    assert any(t not in {round(100 * 0.8**k, 6) for k in range(ROUNDS)} for t in ticks)  # not the first series only
    labels = [t for t in ax.get_xticklabels() if t.get_text()]
    assert [t.get_text() for t in labels] == [f"{t:.3g}" for t in ax.get_xticks()]  # 100, 70, ..., 0.195
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
    assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:], strict=False))  # tick labels never overlap

    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "prune.rate=0.2, ticket",
        "prune.rate=0.3, ticket",
        "prune.rate=0.5, ticket",
        "prune.rate=0.2, prune.control=reinit",
        "prune.rate=0.3, prune.control=reinit",
        "prune.rate=0.5, prune.control=reinit",
    ]
    box, figure_box = legend.get_window_extent(renderer), fig.bbox
    assert figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1 and figure_box.y0 <= box.y0 and box.y1 <= figure_box.y1
    for artist in (ax, ax.yaxis.label, ax.xaxis.label):
        assert not box.overlaps(artist.get_window_extent(renderer))  # never over the data or the axis labels


def test_labels_are_the_differing_keys_without_nulls_or_what_the_model_implies() -> None:
    lenet = {"model.name": "lenet300", "model.hidden": (300, 100), "model._target_": "LeNet", "prune.rate": 0.2}
    conv = {"model.name": "conv2", "model.depth": 2, "model.hidden": (256, 256), "model._target_": "ConvNet"}
    assert run_labels([lenet, {**conv, "prune.rate": 0.2}]) == ["model.name=lenet300", "model.name=conv2"]
    deeper = {**conv, "model.depth": 4, "model.name": "conv4"}
    assert run_labels([conv, deeper]) == ["model.name=conv2", "model.name=conv4"]
    assert run_labels([conv, {**conv, "model.depth": 4}]) == ["model.depth=2", "model.depth=4"]
    assert run_labels([conv, {**conv, "train.note": None}]) == ["ticket", "ticket"]  # null here, absent there
    control = {**conv, "prune.control": "shuffle", "optim.lr": 0.0002, "data.mean": (0.1307,)}
    assert run_labels([{**conv, "optim.lr": 0.0002, "data.mean": (0.5,)}, control]) == [
        "data.mean=[0.5], ticket",
        "data.mean=[0.1307], prune.control=shuffle",
    ]
    long = run_labels([{"a": "x" * 100}, {"a": "y"}])
    assert long[0] == "a=" + "x" * 23 + "…" and long[1] == "a=y"


def test_report_rows_are_the_sparsities_reached_with_short_headers(rates: Path) -> None:
    tickets = load_groups([rates / f"{rate}-ticket" for rate in (0.2, 0.3, 0.5)])  # labelled among themselves
    lines = markdown_table(tickets, "test_acc").splitlines()
    assert lines[0] == "| weights remaining | prune.rate=0.2 (n=1) | prune.rate=0.3 (n=1) | prune.rate=0.5 (n=1) |"
    rows = {line.split(" | ")[0].lstrip("| "): line.strip("| ").split(" | ")[1:] for line in lines[2:]}
    union = sorted({100 * (1 - rate) ** k for rate in (0.2, 0.3, 0.5) for k in range(ROUNDS)}, reverse=True)
    assert len(rows) == len(union) == 3 * ROUNDS - 2  # 100% is every rate's round 0
    assert list(rows)[:8] == ["100.0%", "80.0%", "70.0%", "64.0%", "51.2%", "50.0%", "49.0%", "40.96%"]
    assert rows["100.0%"] == ["95.00", "95.00", "95.00"]
    assert rows["80.0%"] == ["95.10", "—", "—"]
    assert rows["50.0%"] == ["—", "—", "95.10"]  # exact rounds only: no "(at 51.20%)" for rate 0.5
    text = markdown_report(load_groups([rates]))
    assert text.startswith("mean ± std over the n seeds of each column, at each sparsity the rounds reached")
    assert max(len(line.split(" | ")[1]) for line in text.splitlines() if line.startswith("| weights")) < 40


def test_plot_writes_into_the_folder_given_and_draws_the_metrics_asked(
    sweep: Path, capsys: pytest.CaptureFixture
) -> None:
    plot = runpy.run_path(str(REPO / "scripts" / "plot.py"))["main"]
    plot([str(sweep), "--metric", "final_test_acc"])
    assert capsys.readouterr().out.split() == [str(sweep / "figures" / "final_test_acc.png")]
    fig = figure(load_groups([sweep]), "final_test_acc")
    assert fig.axes[0].get_ylabel() == "Test accuracy at the end of training (%)"

    reporter = runpy.run_path(str(REPO / "scripts" / "report.py"))["main"]
    reporter([str(sweep), "--paper", "--metric", "test_acc"])
    text = capsys.readouterr().out
    assert "| 51.3% | 95.80 ± 0.71 (at 51.20%) | 92.50 ± 0.71 (at 51.20%) |" in text
    assert "## Early-stop iteration" not in text
    reporter([str(sweep)])
    assert "| 51.2% | 95.80 ± 0.71 | 92.50 ± 0.71 |" in capsys.readouterr().out
