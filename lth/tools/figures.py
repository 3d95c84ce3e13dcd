"""The figures of ``scripts/plot.py``: a metric of the groups of runs read by :mod:`lth.tools.results` against %
weights remaining or what each network cost to train, drawn with matplotlib (needed for figures only)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lth.core.errors import ConfigError
from lth.tools.results import (
    DEFAULT_METRICS,
    METRICS,
    SPREADS,
    X_AXES,
    Group,
    Metric,
    Point,
    check_metric,
    present_sparsities,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _thin_ticks(fig: Figure, ax: Any, ticks: Sequence[float], pad: float = 4.0) -> list[float]:
    """The ``ticks`` (densest first, left to right) whose labels do not overlap once drawn: greedily from the
    left, the sparsest kept in place of its left neighbour where both cannot be."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.ticker import FixedLocator

    ax.xaxis.set_major_locator(FixedLocator(list(ticks)))
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = {}
    for tick in ax.xaxis.get_major_ticks():
        if tick.get_loc() in ticks and tick.label1.get_visible():
            boxes[tick.get_loc()] = tick.label1.get_window_extent(renderer)
    spans = sorted(((box.x0, box.x1, loc) for loc, box in boxes.items()))
    kept: list[tuple[float, float, float]] = []
    for span in spans:
        if not kept or span[0] >= kept[-1][1] + pad:
            kept.append(span)
    if spans and kept[-1] != spans[-1]:  # keep the sparsest round's tick
        while len(kept) > 1 and spans[-1][0] < kept[-1][1] + pad:
            kept.pop()
        kept.append(spans[-1])
    return sorted((loc for _, _, loc in kept), reverse=True)


def figure(
    groups: Sequence[Group], metric: str = "test_acc", spread: str = "minmax", x: str = "weights_remaining"
) -> Figure:
    """``metric`` against % weights remaining (or a cost column, ``x``), one series per group: mean with min-max or
    std error bars.

    For weights remaining the x-axis is logarithmic and decreasing from left to right, as in Frankle & Carbin's
    figures, with ticks at the sparsities of every series' rounds (thinned where their labels would overlap). For
    a cost (``train_iterations``, ``train_flops``, ``train_flops_dense``) it is logarithmic and increasing, each
    point at the mean cost over seeds. The legend sits below the axes, in as many columns as fit, the figure
    taller for each row of it.
    """
    from matplotlib.figure import Figure  # matplotlib is needed for figures only
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    check_metric(metric)
    if x not in X_AXES:
        raise ConfigError("x", f"got {x!r}; allowed: {', '.join(X_AXES)}")
    if spread not in SPREADS:
        raise ConfigError("spread", f"got {spread!r}; allowed: {', '.join(SPREADS)}")
    if x != "weights_remaining":
        return _cost_figure(groups, metric, spread, x)
    shown = METRICS[metric]
    longest = max((len(g.label) for g in groups), default=1)
    columns = max(1, min(len(groups), 72 // (longest + 6)))
    legend_rows = math.ceil(len(groups) / columns)
    fig = Figure(figsize=(6.4, 4.2 + 0.25 * legend_rows), layout="constrained")
    ax = fig.add_subplot()
    for group in groups:
        points = group.points(metric)
        x = [p.weights_remaining for p in points]
        y = [shown.scale * p.mean for p in points]
        err = _error_bars(points, shown, spread)
        ax.errorbar(x, y, yerr=err, label=group.label, marker="o", markersize=3, capsize=3)
    xs = present_sparsities(groups)
    ax.set_xscale("log")
    ax.set_xlim(max(xs) * 1.15, min(xs) / 1.15)  # decreasing: the densest network on the left
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.3g}"))
    ax.set_xlabel("% weights remaining")
    ax.set_ylabel(shown.title)
    ax.set_title(f"mean and {'min–max' if spread == 'minmax' else 'std'} over seeds")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncols=columns, fontsize="small", frameon=False)
    ax.xaxis.set_major_locator(FixedLocator(_thin_ticks(fig, ax, xs)))
    return fig


def _error_bars(points: Sequence[Point], shown: Metric, spread: str) -> Any:
    """Matplotlib's ``yerr`` for ``points``: their std, or the distances to their minimum and maximum."""
    if spread == "std":
        return [shown.scale * p.std for p in points]
    return [[shown.scale * (p.mean - p.low) for p in points], [shown.scale * (p.high - p.mean) for p in points]]


def _cost_figure(groups: Sequence[Group], metric: str, spread: str, x: str) -> Figure:
    """``metric`` against the cost column ``x``: a point per pruned round (every sparsity of every run), the mean of
    the dense networks trained to the end (round 0 but an early-bird's) as a dashed line."""
    from matplotlib.figure import Figure

    shown, cost = METRICS[metric], METRICS[x]
    longest = max((len(g.label) for g in groups), default=1)
    columns = max(1, min(len(groups), 100 // (longest + 6)))
    fig = Figure(figsize=(7.2, 4.2 + 0.25 * math.ceil(len(groups) / columns)), layout="constrained")
    ax = fig.add_subplot()
    dense: list[tuple[float, float]] = []  # (cost, metric) of each group's round 0
    for group in groups:
        pairs = list(zip(group.points(metric), group.points(x), strict=True))
        dense += [(c.mean, p.mean) for p, c in pairs if p.round == 0]
        pairs = [(p, c) for p, c in pairs if p.round > 0]
        points = [p for p, _ in pairs]
        xs = [cost.scale * c.mean for _, c in pairs]
        y = [shown.scale * p.mean for p in points]
        err = _error_bars(points, shown, spread)
        ax.errorbar(xs, y, yerr=err, label=group.label, marker="o", markersize=3, capsize=3, linestyle="none")
    trained = [value for spent, value in dense if spent == max(spent for spent, _ in dense)]  # not stopped early
    if trained:
        ax.axhline(shown.scale * statistics.fmean(trained), color="grey", linestyle="--", linewidth=1, label="dense")
    ax.set_xscale("log")
    ax.set_xlabel(cost.title)
    ax.set_ylabel(shown.title)
    ax.set_title(f"every pruned round; mean and {'min–max' if spread == 'minmax' else 'std'} over seeds")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncols=columns, fontsize="small", frameon=False)
    return fig


def save_figures(
    groups: Sequence[Group],
    out_dir: Path,
    formats: Sequence[str] = ("png",),
    spread: str = "minmax",
    metrics: Sequence[str] = DEFAULT_METRICS,
    x: str = "weights_remaining",
) -> list[Path]:
    """Write a :func:`figure` per metric of ``metrics`` as ``<out_dir>/<metric>.<format>`` (against ``x``:
    ``<metric>_vs_<x>.<format>`` for a cost)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError("out_dir", f"{out_dir} is a file; allowed: a folder (made if missing)")
    suffix = "" if x == "weights_remaining" else f"_vs_{x}"
    figures = {f"{metric}{suffix}": figure(groups, metric, spread, x) for metric in metrics}  # checks before files
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for metric, fig in figures.items():
        for fmt in formats:
            paths.append(out_dir / f"{metric}.{fmt}")
            fig.savefig(paths[-1], dpi=150)
    return paths
