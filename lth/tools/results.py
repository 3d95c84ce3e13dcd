"""Results of many runs read back for figures and tables (``scripts/plot.py``, ``scripts/report.py``).

A run folder is any folder holding ``rounds.csv`` and ``config.yaml``: one run, several, or a multirun sweep
are searched recursively. Runs are grouped by their identity (:func:`lth.config.validate.identity`) without ``seed``,
so the seeds of one config pool into one series; a group's label is what sets it apart from the other groups
(``prune.rate=0.1``, ``prune.control=reinit``), and a run without ``prune.control`` is the ticket. Each round
of a group is summarised over its seeds: mean, sample standard deviation, minimum and maximum. The figures drawn
from the groups are in :mod:`lth.tools.figures`.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lth.config.schema import governor
from lth.core.errors import ConfigError, MissingFileError
from lth.state.artifacts import read_plain, read_rounds
from lth.tools.listing import config_identity
from lth.tools.runs import read_each

PAPER_SPARSITIES = (100.0, 51.3, 21.1, 13.5, 7.0, 3.6, 1.9)  # % weights remaining in Frankle & Carbin's figures
CONTROL = "prune.control"
METHOD = "prune.method"
TICKET = "ticket"
SPREADS = ("minmax", "std")


@dataclass(frozen=True)
class Metric:
    """A column of ``rounds.csv`` as shown: its title, the factor from the file to the figure, decimals."""

    title: str
    scale: float
    digits: int


METRICS = {
    "test_acc": Metric("Test accuracy at early stop (%)", 100.0, 2),
    "early_stop_iteration": Metric("Early-stop iteration", 1.0, 0),
    "final_test_acc": Metric("Test accuracy at the end of training (%)", 100.0, 2),
    "train_iterations": Metric("Training iterations the network cost", 1.0, 0),
    "train_flops": Metric("Training TFLOP the network cost (as the masks allow)", 1e-12, 2),
    "train_flops_dense": Metric("Training TFLOP the network cost (dense)", 1e-12, 2),
}
X_AXES = ("weights_remaining", "train_iterations", "train_flops", "train_flops_dense")  # plot.py --x
DEFAULT_METRICS = ("test_acc", "early_stop_iteration")  # what the report and the figures show unless told


@dataclass(frozen=True)
class Run:
    """One run folder: its identity flattened to dotted keys, and its rows of ``rounds.csv``."""

    path: Path
    config: dict[str, Any]
    rounds: list[dict]


@dataclass(frozen=True)
class Point:
    """One round of a group, over its seeds: weights remaining in %, the metric's mean, spread and count."""

    round: int
    weights_remaining: float
    mean: float
    std: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class Group:
    """The runs of one config (seeds pooled), labelled by what differs from the other groups."""

    label: str
    config: dict[str, Any]
    runs: tuple[Run, ...]

    @property
    def seeds(self) -> int:
        """How many seeds the group pools (runs pooled over other keys as well count once per seed)."""
        return len({run.config.get("seed") for run in self.runs})

    def points(self, metric: str) -> list[Point]:
        """``metric`` (a ``rounds.csv`` column, as in the file) summarised per round and sparsity, in round order.

        Runs pooled over a key that changes how far they prune (``--ignore prune.target_sparsity``) give a point
        per sparsity reached; a row that several runs hold alike (a round 0 they shared, a ticket trained again by
        a control) counts once.
        """
        by_round: dict[tuple[int, float], list[dict]] = defaultdict(list)
        seen: set[tuple] = set()
        for run in self.runs:
            for row in run.rounds:
                numbers = tuple(sorted((k, v) for k, v in row.items() if k != "train_seconds"))
                if numbers not in seen:  # the same training, shared or repeated, counts once
                    seen.add(numbers)
                    by_round[(row["round"], -round(row["weights_remaining"], 9))].append(row)
        points = []
        for index, _ in sorted(by_round):
            rows = by_round[(index, _)]
            if metric not in rows[0]:
                raise ConfigError("metric", f"{metric} is not in rounds.csv of {self.label} (made before it existed)")
            values = [float(row[metric]) for row in rows]
            points.append(
                Point(
                    round=index,
                    weights_remaining=100 * statistics.fmean(row["weights_remaining"] for row in rows),
                    mean=statistics.fmean(values),
                    std=statistics.stdev(values) if len(values) > 1 else 0.0,
                    low=min(values),
                    high=max(values),
                    n=len(values),
                )
            )
        return points


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"prune": {"rate": 0.2}}`` -> ``{"prune.rate": 0.2}``; lists become tuples (hashable)."""
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: tuple(tree) if isinstance(tree, list) else tree}


def find_runs(paths: Iterable[Path]) -> list[Path]:
    """Every run folder at or under ``paths``, sorted."""
    csvs = (csv for path in paths for csv in Path(path).rglob("rounds.csv"))
    return sorted({csv.parent for csv in csvs if (csv.parent / "config.yaml").is_file()})


def read_run(path: Path) -> Run:
    """The run in folder ``path``; a config or ``rounds.csv`` that cannot be read, or a ``rounds.csv`` without
    rows, is a one-line :class:`~lth.core.errors.ConfigError` naming the file."""
    config_path, rounds_path = path / "config.yaml", path / "rounds.csv"
    config = read_plain(config_path)
    rounds = read_rounds(rounds_path)
    if not rounds:
        raise ConfigError(str(rounds_path), "has a header and no rows: no round finished")
    flat = flatten(config_identity(config, config_path))
    flat.setdefault(METHOD, "magnitude")  # the identity leaves the default method out; a label names it
    return Run(path=path, config=flat, rounds=rounds)


LABEL_VALUE_CHARS = 24  # a longer value is cut, with an ellipsis


def _show(value: Any) -> str:
    """A config value as a label shows it: strings bare, lists compact (``[300,100]``), long values cut."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= LABEL_VALUE_CHARS else text[: LABEL_VALUE_CHARS - 1] + "…"


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def label_keys(configs: Sequence[dict[str, Any]]) -> list[str]:
    """The dotted keys that tell ``configs`` apart, in the order they first appear.

    A key absent from some configs and null in the others does not count. A key under a section with a ``name``
    (``model.depth`` under ``model.name``) is left out when the section's name differs and decides the key's value
    (a model's own keys, its ``_target_`` included, come with the model); so is a method's option
    (``prune.early_bird.window``) that ``prune.method`` decides.
    """
    keys = dict.fromkeys(k for config in configs for k in config)
    differing = [k for k in keys if len({_key(config.get(k)) for config in configs}) > 1]

    def implied(key: str) -> bool:
        parts = key.split(".")
        deciders = [".".join(parts[:cut]) + ".name" for cut in range(len(parts) - 1, 0, -1)]
        if governor(key) == METHOD:  # an option only its method reads
            deciders.append(METHOD)
        for name in deciders:
            if name == key or name not in differing:
                continue
            values: dict[str, str] = {}
            if all(values.setdefault(_key(c.get(name)), _key(c.get(key))) == _key(c.get(key)) for c in configs):
                return True
        return False

    return [k for k in differing if not implied(k)]


def run_labels(configs: Sequence[dict[str, Any]]) -> list[str]:
    """A short label per config (flattened, dotted keys): ``key=value`` for each of :func:`label_keys` it sets,
    ``ticket`` for a config without ``prune.control`` where the control tells them apart (last); null values
    unshown."""
    keys = sorted(label_keys(configs), key=lambda k: k == CONTROL)

    def label(config: dict[str, Any], nulls: bool) -> str:
        parts = []
        for k in keys:
            if k == CONTROL and config.get(k) is None:
                parts.append(TICKET)
            elif config.get(k) is not None or nulls:
                parts.append(f"{k}={_show(config.get(k))}")
        if not parts:  # nothing differs: say whether it is the ticket or a control
            control = config.get(CONTROL)
            parts = [TICKET if control is None else f"{CONTROL}={_show(control)}"]
        return ", ".join(parts)

    labels = [label(config, nulls=False) for config in configs]
    if len(set(labels)) < len(labels):  # told apart only by a key some set and others leave out
        labels = [label(config, nulls=True) for config in configs]
    return labels


def _ignored(key: str, ignore: Sequence[str]) -> bool:
    return any(key == name or key.startswith(f"{name}.") for name in ignore)


def check_ignore(runs: Sequence[Run], ignore: Sequence[str]) -> None:
    """Refuse a key of ``ignore`` that no run's config holds (a typo would pool nothing, silently) in one line
    naming the keys that differ between the runs, those worth pooling over."""
    for name in ignore:
        if not any(_ignored(key, [name]) for run in runs for key in run.config):
            differ = ", ".join(label_keys([run.config for run in runs])) or "none (the runs are all one config)"
            raise ConfigError(
                "--ignore",
                f"no run's config has the key {name!r}; allowed: a key of the runs' config.yaml, such as "
                f"those that differ between them: {differ}",
            )


def group_runs(runs: Sequence[Run], ignore: Sequence[str] = ("seed",)) -> list[Group]:
    """Runs with the same config but for the ``ignore`` keys as one group each, the ticket first; a key of
    ``ignore`` that no run has is a :class:`~lth.core.errors.ConfigError` (:func:`check_ignore`)."""
    check_ignore(runs, ignore)
    members: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        config = {k: v for k, v in run.config.items() if not _ignored(k, ignore)}
        members[tuple(sorted(config.items()))].append(run)
    configs = [dict(key) for key in members]
    labels = run_labels(configs)
    runs_of = [tuple(same) for same in members.values()]
    groups = [Group(label, config, same) for label, config, same in zip(labels, configs, runs_of, strict=True)]
    return sorted(groups, key=lambda g: (g.config.get(CONTROL) is not None, g.label))


def load_groups(paths: Iterable[Path], ignore: Sequence[str] = ("seed",)) -> list[Group]:
    """Find, read and group the runs under ``paths``.

    A path that does not exist, or no run folder under any of them, is a :class:`~lth.core.errors.MissingFileError`.
    A run folder that cannot be read is skipped with one line on stderr (:func:`~lth.tools.runs.read_each`); none
    readable is an error.
    """
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.exists():
            raise MissingFileError(str(path), "no such file or folder")
    found = find_runs(paths)
    if not found:
        where = ", ".join(str(p) for p in paths)
        raise MissingFileError(where, "no run folder (rounds.csv and config.yaml side by side) in it or below it")
    return group_runs(read_each(found, read_run, ", ".join(str(p) for p in paths)), ignore)


def add_group_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the run folders to read (``paths``) and the config keys pooled over (``--ignore``), as
    :func:`load_groups` takes them: ``load_groups(args.paths, ignore=args.ignore)``."""
    parser.add_argument("paths", nargs="+", type=Path, help="run folders, or folders searched for them (sweeps)")
    parser.add_argument("--ignore", nargs="*", default=["seed"], help="config keys pooled over (default: seed)")


def add_metric_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """Add ``--metric``: the :data:`METRICS` shown, one ``what`` (a figure, a table) for each."""
    parser.add_argument(
        "--metric",
        nargs="+",
        choices=list(METRICS),
        default=list(DEFAULT_METRICS),
        help=f"{what} for each (default: {' '.join(DEFAULT_METRICS)})",
    )


def nearest(points: Sequence[Point], percent: float, tolerance: float = 0.1) -> Point | None:
    """The point closest to ``percent`` weights remaining (on a log scale), if within ``tolerance`` (relative)."""
    close = [p for p in points if p.weights_remaining > 0 and abs(p.weights_remaining / percent - 1) <= tolerance]
    return min(close, key=lambda p: abs(math.log(p.weights_remaining / percent)), default=None)


def present_sparsities(groups: Sequence[Group]) -> list[float]:
    """The % weights remaining of every round of ``groups`` (their union), densest first; rounds of different
    groups within 0.1% (relative) of each other are one."""
    points = (p for g in groups for p in g.points("weights_remaining"))
    values = sorted((p.weights_remaining for p in points if p.weights_remaining > 0), reverse=True)
    merged: list[float] = []
    for value in values:
        if not merged or abs(value / merged[-1] - 1) > 1e-3:
            merged.append(value)
    return merged


def _percent(value: float) -> str:
    """``51.3%``, ``40.96%``: one decimal when that is exact, else two."""
    return f"{value:.1f}%" if abs(value - round(value, 1)) < 1e-9 else f"{value:.2f}%"


def _cell(point: Point | None, percent: float, metric: Metric, seeds: int) -> str:
    if point is None:
        return "—"
    mean, std = metric.scale * point.mean, metric.scale * point.std
    text = f"{mean:.{metric.digits}f}" + (f" ± {std:.{metric.digits}f}" if point.n > 1 else "")
    if point.n != seeds:  # some seeds did not reach this round
        text += f" (n={point.n})"
    if abs(point.weights_remaining - percent) >= 0.05:  # the nearest round is not the row's sparsity
        text += f" (at {point.weights_remaining:.2f}%)"
    return text


def _rows(
    groups: Sequence[Group], sparsities: Sequence[float] | None, tolerance: float | None
) -> tuple[list[float], float]:
    """The rows and tolerance a table uses: given, or the sparsities present and (nearly) exact matches."""
    if sparsities is None:
        return present_sparsities(groups), 1e-3 if tolerance is None else tolerance
    return list(sparsities), 0.1 if tolerance is None else tolerance


def markdown_table(
    groups: Sequence[Group],
    metric: str = "test_acc",
    sparsities: Sequence[float] | None = None,
    tolerance: float | None = None,
) -> str:
    """``metric`` at each of ``sparsities`` (% weights remaining) as a Markdown table: a row per sparsity that
    some group reaches within ``tolerance`` (relative), a column per group headed by its label and seed count,
    cells ``mean ± std`` over seeds.

    ``sparsities`` None: the sparsities the groups' rounds reached (:func:`present_sparsities`), ``tolerance``
    then 0.1% unless given; with ``sparsities`` given (:data:`PAPER_SPARSITIES`, say) it is 10% unless given.
    """
    sparsities, tolerance = _rows(groups, sparsities, tolerance)
    check_rows(sparsities, tolerance)
    shown = METRICS[metric]
    header = ["weights remaining", *(f"{g.label} (n={g.seeds})".replace("|", "\\|") for g in groups)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for percent in sparsities:
        points = [nearest(g.points(metric), percent, tolerance) for g in groups]
        if any(p is not None for p in points):
            cells = [_percent(percent)]
            cells += [_cell(p, percent, shown, g.seeds) for p, g in zip(points, groups, strict=True)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check_rows(sparsities: Sequence[float], tolerance: float) -> None:
    """Raise a :class:`~lth.core.errors.ConfigError` unless every sparsity is in (0, 100] and ``tolerance`` >= 0."""
    for percent in sparsities:
        if not (isinstance(percent, int | float) and 0 < percent <= 100):
            raise ConfigError("sparsities", f"got {percent!r}; allowed: % weights remaining in (0, 100]")
    if not (isinstance(tolerance, int | float) and math.isfinite(tolerance) and tolerance >= 0):
        raise ConfigError("tolerance", f"got {tolerance!r}; allowed: a number >= 0 (relative distance)")


def markdown_report(
    groups: Sequence[Group],
    sparsities: Sequence[float] | None = None,
    tolerance: float | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> str:
    """A Markdown section per metric of ``metrics``, each with its :func:`markdown_table` (same arguments)."""
    for metric in metrics:
        check_metric(metric)
    rows, within = _rows(groups, sparsities, tolerance)
    check_rows(rows, within)
    where = (
        "at each sparsity the rounds reached"
        if sparsities is None
        else f"at the round nearest each sparsity (within {100 * within:g}% of it)"
    )
    sections = [f"mean ± std over the n seeds of each column, {where}"]
    for metric in metrics:
        sections += [f"## {METRICS[metric].title}", markdown_table(groups, metric, sparsities, tolerance)]
    return "\n\n".join(sections) + "\n"


def check_metric(metric: str) -> None:
    """Raise a :class:`~lth.core.errors.ConfigError` unless ``metric`` is one of :data:`METRICS`."""
    if metric not in METRICS:
        raise ConfigError("metric", f"got {metric!r}; allowed: {', '.join(METRICS)}")
