"""``python train.py --help``: a page that fits a terminal, written before Hydra runs and without torch.

:func:`help_page` gives the usage, the config groups (the option each command chooses marked), the keys people set
most with their values under the command's overrides, and where the rest is: ``--help keys`` (:func:`keys_page`,
every key of :mod:`lth.config.schema` with its default, what is allowed and what it does; the README's table in
plain text), ``--cfg job`` and ``--hydra-help``. Every line is wrapped to the terminal's width
(:func:`shutil.get_terminal_size`: ``COLUMNS``, else the terminal, else 80).
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Mapping

from omegaconf import DictConfig

from lth.config.schema import KEYS

GROUPS = ("model", "dataset", "optim", "prune", "hardware", "logger", "trainer", "experiment", "hydra/launcher")
# the keys people set most, in the order a run reads them
COMMON_KEYS = (
    "train.steps",
    "train.eval_every",
    "train.batch_size",
    "optim.optimizer.lr",
    "prune.rate",
    "prune.rounds",
    "prune.target_sparsity",
    "prune.rewind",
    "prune.method",
    "prune.control",
    "seed",
    "paths.data_dir",
    "paths.output_dir",
    "train.progress",
    "resume",
)
NARROWEST = 40  # below this a terminal is taken as 40 wide (lines would break mid-word)


def width() -> int:
    """The terminal's width in characters (``COLUMNS`` first; 80 where there is no terminal)."""
    return max(shutil.get_terminal_size().columns, NARROWEST)


def rows(pairs: list[tuple[str, str]], columns: int, indent: int = 2) -> list[str]:
    """Two columns wrapped to ``columns``: each left text, then its right text from a shared column (or on the
    lines below it, indented, where the left text is too long or the terminal too narrow for two columns)."""
    left_width = min(max((len(left) for left, _ in pairs), default=0) + 2, 32)
    two_columns = columns - indent - left_width >= 30
    lines = []
    for left, right in pairs:
        if two_columns and len(left) + 2 <= left_width:
            wrapped = textwrap.wrap(right, columns - indent - left_width) or [""]
            lines.append(" " * indent + left.ljust(left_width) + wrapped[0])
            lines += [" " * (indent + left_width) + line for line in wrapped[1:]]
        else:
            below = " " * (indent + 4)
            lines += textwrap.wrap(left, columns, initial_indent=" " * indent, subsequent_indent=below)
            lines += textwrap.wrap(right, columns, initial_indent=below, subsequent_indent=below)
    return [line.rstrip() for line in lines]


def help_page(overrides: list[str]) -> str:
    """The ``--help`` page for a command with ``overrides`` (``keys`` among them: :func:`keys_page`)."""
    if "keys" in overrides:
        return keys_page([o for o in overrides if o != "keys"])
    from lth.config.table import default_text

    columns = width()
    configs, options = _composed(overrides, [""])
    cfg = configs[""]
    choices = cfg.hydra.runtime.choices
    groups = [
        (f"{group}=", ", ".join(f"{o}*" if o == choices.get(group) else o for o in options[group])) for group in GROUPS
    ]
    by_name = {entry.key: entry for entry in KEYS}
    keys = [(f"{key}={default_text(by_name[key], configs).strip('`')}", by_name[key].help) for key in COMMON_KEYS]
    more = [
        ("--help keys", "every key: its default, what is allowed, what it does (README.md, section Keys)"),
        ("--cfg job", "the config a command composes, in full"),
        ("--hydra-help", "Hydra's own options (--multirun, --config-name, --info, ...)"),
    ]
    usage = textwrap.TextWrapper(columns, subsequent_indent=" " * 11)
    lines = [
        *usage.wrap("usage: python train.py [group=option ...] [key=value ...]"),
        *usage.wrap("       python train.py -m key=a,b ...   (a sweep: one job per value)"),
        "",
        *textwrap.wrap(
            "Iterative magnitude pruning as the config says: train, prune, rewind, retrain, round after round; "
            "each run's results in its folder under paths.output_dir.",
            columns,
        ),
        "",
        *textwrap.wrap("Config groups (group=option; * marks the one this command chooses):", columns),
        *rows(groups, columns),
        "",
        *textwrap.wrap("Keys set most (key=value as this command has it):", columns),
        *rows([(left, right.replace("`", "")) for left, right in keys], columns),
        "",
        *textwrap.wrap("More (python train.py [overrides] <option>):", columns),
        *rows(more, columns),
    ]
    return "\n".join(lines) + "\n"


def keys_page(overrides: list[str]) -> str:
    """``--help keys``: every key (the README's table as text), its value under ``overrides`` and the presets that
    have it, what is allowed, whether it is run-only, and what it does."""
    from lth.config.table import default_text

    columns = width()
    configs, _ = _composed(overrides, list(dict.fromkeys(["", *(entry.where for entry in KEYS)])))
    pairs = []
    for entry in KEYS:
        value = default_text(entry, configs).replace("`", "")
        run_only = " Run-only: not part of the run's identity." if entry.run_only else ""
        allowed = f"{entry.allowed}; {entry.also}" if entry.also else entry.allowed
        pairs.append((f"{entry.key}: {value}", f"{entry.help}. Allowed: {allowed}.{run_only}".replace("`", "")))
    head = textwrap.wrap(
        "Every key with its value under this command (unset: add it with +key=value), what it does and what is "
        "allowed; set one with key=value. README.md, section Keys, has the same table.",
        columns,
    )
    return "\n".join([*head, "", *rows(pairs, columns, indent=0)]) + "\n"


def _composed(overrides: list[str], wheres: list[str]) -> tuple[dict[str, DictConfig], Mapping[str, list[str]]]:
    """The config of ``overrides`` (a sweep's: its first job's) and each of ``wheres`` (Hydra's node included, by
    ``where``), and each group's options as Hydra has them (its launcher plugins included)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lth.config.command_line import CONF, compose_job, jobs_of

    overrides = jobs_of(overrides, multirun=True)[0].overrides if overrides else []  # a sweep: its first job
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3", job_name="train"):
        configs = {where: compose_job([*overrides, *where.split()]) for where in wheres}
        loader = GlobalHydra.instance().config_loader()
        return configs, {group: sorted(loader.get_group_options(group)) for group in GROUPS}
