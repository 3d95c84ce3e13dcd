"""The command line of ``python train.py``, checked before Hydra makes a folder and before torch is imported.

Every job it describes (each job of a sweep) is composed as Hydra will compose it and validated, and Hydra's own
errors (an unknown group option or key, a sweep without ``-m``) become one line ``error: <key>: <what is
allowed>`` (:class:`~lth.core.errors.ConfigError`). Overrides of :data:`REPLACED_MAPPINGS` are rewritten so that
``key=<mapping>`` replaces the mapping instead of merging into it. A sweep is composed as few times as it needs:
jobs that differ from job 0 in plain values are checked on copies of its config (:func:`with_values`), and Hydra's
basic launcher and ``hydra/launcher=stacked`` compose a job from the one before it the same way
(:class:`ComposedInTurn`, lth/tools/sweeper.py).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from omegaconf import DictConfig, OmegaConf, open_dict

from lth.config.groups import check_group_lists
from lth.config.hardware import Launch, check_hardware
from lth.config.validate import check_output_folder, new_key_allowed, unknown_key, validate
from lth.core.errors import ConfigError

CONF = Path(__file__).resolve().parents[2] / "conf"
# ``key=<mapping>`` replaces these mappings as a whole (Hydra would merge it into the old one and, the config
# being closed to new keys, refuse every new pattern): the command line sets ``key=null`` then ``+key=<mapping>``
REPLACED_MAPPINGS = ("prune.layer_rates",)
_CHECKED: set[frozenset[str]] = set()  # the sweep jobs of the last command line checked (was_checked)


@dataclass(frozen=True)
class CommandJob:
    """One job of the command line: all its overrides, the swept ones that tell it from the others, and those
    that are not Hydra's own (``task``: the job as the sweeper hands it to the launcher)."""

    overrides: list[str]
    swept: list[str]
    task: list[str]


def _raise_argument_error(message: str) -> NoReturn:
    match = re.match(r"argument (\S+): (.*)", message)
    raise ConfigError(*(match.groups() if match else ("arguments", message)))


@dataclass(frozen=True)
class Command:
    """The command line for Hydra (``argv``, overrides of :data:`REPLACED_MAPPINGS` rewritten), and whether every
    job it describes was composed and validated (``checked``: not for ``--help``, another sweeper, ...)."""

    argv: list[str]
    checked: bool


def check_command_line(argv: list[str]) -> Command:
    """The command line for Hydra; for a command that trains, every job composed and validated first. Raise
    :class:`ConfigError` for the first bad one."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    parser.error = _raise_argument_error  # type: ignore[method-assign]  # one line, not argparse's usage
    args = parser.parse_args(argv)
    rewritten = {text: replace_mapping(text) for text in args.overrides}
    argv = [part for text in argv for part in rewritten.get(text, [text])]
    overrides = [part for text in args.overrides for part in rewritten[text]]
    trains = not (args.help or args.hydra_help or args.info or args.shell_completion or args.cfg)
    other_sweeper = any(text.lstrip("+").startswith("hydra/sweeper=") for text in overrides)  # it makes the jobs
    checked = trains and not (args.config_path or args.config_dir or args.experimental_rerun or other_sweeper)
    _CHECKED.clear()
    if checked:
        multirun = args.multirun or "hydra.mode=MULTIRUN" in overrides
        check_jobs(overrides, multirun=multirun, config_name=args.config_name or "config")
    return Command(argv, checked)


def was_checked(job: Sequence[str]) -> bool:
    """Whether the last command line checked in this process composed and validated the sweep job ``job`` (its
    overrides as Hydra's basic sweeper hands them to the launcher; ``hydra.*`` overrides left out)."""
    return frozenset(job) in _CHECKED


def replace_mapping(text: str) -> list[str]:
    """``prune.layer_rates={model.out: 0.1}`` -> ``prune.layer_rates=null``, ``+prune.layer_rates={...}``."""
    key, sep, value = text.partition("=")
    if sep and key in REPLACED_MAPPINGS and value.lstrip().startswith("{"):
        return [f"{key}=null", f"+{key}={value}"]
    return [text]


def parse_overrides(overrides: list[str]) -> list:
    """Hydra's parsed ``Override`` of each text; one that cannot be read is a :class:`ConfigError` naming its key."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser, parsed = OverridesParser.create(), []
    for text in overrides:
        try:
            parsed += parser.parse_overrides([text])
        except OverrideParseException as error:
            key = text.partition("=")[0].lstrip("+~") or text
            raise ConfigError(key, f"cannot read {text!r} ({_first_line(error)}); write key=value") from None
    return parsed


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def jobs_of(overrides: list[str], multirun: bool) -> list[CommandJob]:
    """The jobs that ``overrides`` describe: one, or under ``-m`` one per combination of swept values (as Hydra's
    basic sweeper makes them; a later override of the same key wins)."""
    import itertools

    parsed = parse_overrides(overrides)
    sweeps = [(o, text) for o, text in zip(parsed, overrides, strict=True) if o.is_sweep_override()]
    if sweeps and not multirun:
        override, text = sweeps[0]
        raise ConfigError(
            override.key_or_group,
            f"{text.partition('=')[2]} is several values; add -m to run one job per value, or write a list as [a,b]",
        )
    choices: dict[str, list[str]] = {}
    for override, text in zip(parsed, overrides, strict=True):
        key = override.get_key_element()
        if not override.is_sweep_override():  # under -m written as the sweeper writes it, for the launcher
            choices[key] = [f"{key}={override.get_value_element_as_str()}" if multirun else text]
        elif override.is_discrete_sweep():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            raise ConfigError(
                override.key_or_group,
                "an interval sweep needs a sweeper plugin (hydra/sweeper=...); list the values or use range()",
            )
    swept = {o.get_key_element() for o, _ in sweeps}
    hydra = {o.get_key_element() for o in parsed if o.is_hydra_override()}
    return [
        CommandJob(
            list(combo),
            [t for t, key in zip(combo, choices, strict=True) if key in swept],
            [t for t, key in zip(combo, choices, strict=True) if key not in hydra],
        )
        for combo in itertools.product(*choices.values())
    ]


def check_jobs(overrides: list[str], multirun: bool, config_name: str = "config") -> None:
    """Compose and validate every job of ``overrides`` (nothing is written); raise the first job's error, naming
    the job when there are several. Jobs that differ from the first in plain values alone are not composed again:
    the first's config takes their values (:func:`with_values`), as Hydra applies value overrides last."""
    from hydra import initialize_config_dir

    jobs = jobs_of(overrides, multirun)
    first: DictConfig | None = None  # job 0 as composed, before it was validated
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3", job_name="train"):
        for index, job in enumerate(jobs):
            try:
                check_group_lists(job.overrides)
                cfg = with_values(first, job.swept) if first is not None else None
                cfg = cfg if cfg is not None else compose_job(job.overrides, config_name)
                if index == 0 and len(jobs) > 1:
                    first = copy.deepcopy(cfg)
                check_job(job.overrides, multirun, cfg, config_name, new_keys=index == 0)
            except ConfigError as error:
                if len(jobs) == 1:
                    raise
                raise ConfigError(error.key, f"{error.message} (sweep job {index}: {' '.join(job.swept)})") from None
    if multirun:  # the sweeper need not compose them again (lth.tools.sweeper)
        _CHECKED.update(frozenset(job.task) for job in jobs)


def with_values(first: DictConfig, swept: list[str]) -> DictConfig | None:
    """``first`` (a sweep's job 0, composed) with another job's ``swept`` overrides applied, when each sets a plain
    value (a number, string, bool or null) of a key that is there: what Hydra composes for that job, which applies
    value overrides after the defaults. None when one is a config group, adds or deletes a key, or is Hydra's."""
    from omegaconf.errors import OmegaConfBaseException

    parsed = parse_overrides(swept)
    for o in parsed:
        changes_structure = o.is_add() or o.is_force_add() or o.is_delete() or o.package is not None
        if changes_structure or o.is_hydra_override() or (CONF / o.key_or_group).is_dir():
            return None
        if not isinstance(o.value(), str | int | float | bool | None):
            return None
    cfg = copy.deepcopy(first)
    try:
        for o in parsed:
            OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
    except OmegaConfBaseException:  # a key that is not there: Hydra's own error, from composing the job
        return None
    return cfg


def check_job(overrides: list[str], multirun: bool, cfg: DictConfig, config_name: str, new_keys: bool = True) -> None:
    """Validate one job, ``cfg`` as Hydra composes it from ``overrides``; ``new_keys``: refuse keys added with
    ``+`` that no config group defines (outside :data:`lth.config.validate.OPEN_KEYS`)."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        if new_keys:
            check_new_keys(overrides, cfg, config_name)
        launcher = cfg.hydra.launcher
        target = str(launcher.get("_target_", "")).lower()
        remote = "submitit" in target and "local" not in target  # SLURM: the jobs run on other machines
        validate(cfg, machine=not remote)
        check_hardware(cfg, Launch(multirun, launcher))
        key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        check_output_folder(str(OmegaConf.select(cfg, key)), key)  # where Hydra writes, when set apart
    except OmegaConfBaseException as error:  # an interpolation that cannot be resolved, a value of the wrong type
        raise ConfigError(str(error.full_key or "config"), _first_line(error)) from None


def check_new_keys(overrides: list[str], cfg: DictConfig, config_name: str) -> None:
    """Refuse ``+key=value`` (or ``++``) for a key that the config groups do not define, unless it may be added."""
    parsed = parse_overrides(overrides)
    added = [
        o.key_or_group
        for o in parsed
        if (o.is_add() or o.is_force_add()) and "/" not in o.key_or_group and not (CONF / o.key_or_group).is_dir()
    ]
    if not added:
        return
    base = compose_job([t for t, o in zip(overrides, parsed, strict=True) if o.key_or_group not in added], config_name)
    absent = object()
    for key in added:
        if OmegaConf.select(base, key, default=absent) is absent and not new_key_allowed(cfg, key):
            raise unknown_key(base, key)


def compose_job(overrides: list[str], config_name: str = "config") -> DictConfig:
    """``hydra.compose`` of one job, Hydra's errors turned into one-line :class:`ConfigError`."""
    from hydra import compose
    from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    try:
        return compose(config_name, overrides=overrides, return_hydra_config=True)
    except MissingConfigException as error:
        raise _missing_option(error) from None
    except ConfigCompositionException as error:
        raise _composition_error(error, overrides, config_name) from None
    except OmegaConfBaseException as error:
        raise ConfigError(str(error.full_key or "config"), _first_line(error)) from None
    except HydraException as error:
        raise ConfigError("config", _first_line(error)) from None


def _missing_option(error: Exception) -> ConfigError:
    from hydra.core.global_hydra import GlobalHydra

    missing = getattr(error, "missing_cfg_file", None) or ""
    group, _, option = missing.rpartition("/")
    if not group:
        return ConfigError("config", _first_line(error))
    options = getattr(error, "options", None) or GlobalHydra.instance().config_loader().get_group_options(group)
    return ConfigError(group, f"no option {option!r}; allowed: {', '.join(options)}")


def _composition_error(error: Exception, overrides: list[str], config_name: str) -> ConfigError:
    message = _first_line(error)
    quoted = re.search(r"'([^']+)'", message)
    key = quoted.group(1) if quoted else "config"
    if message.startswith("Could not override"):  # a key that the config does not have
        others = [t for t in overrides if t.partition("=")[0].lstrip("+~") != key]
        try:
            return unknown_key(compose_job(others, config_name), key)
        except ConfigError:
            return ConfigError(key, "no such key")
    if message.startswith("Could not append"):
        return ConfigError(key, f"is set by the config already; write {key}=<value> (no +)")
    if message.startswith("Could not delete"):
        return ConfigError(key, "no such key to delete")
    if "looks like a config group override" in message:
        group = re.findall(r"'([^']+)'", message)[-1]
        return ConfigError(group, "no such config group")
    cause = error.__cause__
    if cause is not None:
        return ConfigError(str(getattr(cause, "full_key", None) or key), _first_line(cause))
    return ConfigError(key, message)


class ComposedInTurn:
    """Hydra's config loader (for Hydra's basic launcher and hydra/launcher=stacked: jobs in turn), but a job that
    differs from the one composed before it in plain values alone is a copy of that job's config with its values
    (:func:`with_values`), and Hydra's record of the job (``hydra.overrides.task``, ``hydra.job.override_dirname``)
    written as Hydra writes it."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.last: tuple[list[str], DictConfig] | None = None  # the job composed before, as composed

    def __getattr__(self, name: str) -> Any:
        if name in ("loader", "last"):  # not set yet (a copy being built): not the loader's
            raise AttributeError(name)
        return getattr(self.loader, name)

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        """The config of the sweep job ``sweep_overrides``, as Hydra's loader composes it."""
        overrides = list(sweep_overrides)
        cfg = self._from_last(overrides)
        if cfg is None:
            cfg = self.loader.load_sweep_config(master_config, overrides)
        else:
            OmegaConf.copy_cache(from_config=master_config, to_config=cfg)
        self.last = (overrides, copy.deepcopy(cfg))
        return cfg

    def _from_last(self, overrides: list[str]) -> DictConfig | None:
        from hydra._internal.config_loader_impl import get_overrides_dirname

        if self.last is None or len(self.last[0]) != len(overrides):
            return None
        before, composed = self.last
        cfg = with_values(composed, [o for o, b in zip(overrides, before, strict=True) if o != b])
        if cfg is None:
            return None
        named = cfg.hydra.job.config.override_dirname
        with open_dict(cfg.hydra):
            cfg.hydra.overrides.task = overrides
            cfg.hydra.job.override_dirname = get_overrides_dirname(
                overrides=parse_overrides(overrides),
                exclude_keys=list(named.exclude_keys),
                item_sep=named.item_sep,
                kv_sep=named.kv_sep,
            )
        return cfg
