"""A config group given a list of its options on the command line (``logger=[csv,tensorboard]``), checked before
Hydra composes the job: Hydra merges the options, so a nested list is a traceback inside it, and an option named
twice, an empty list or ``none`` among others would be taken without a word.
"""

from __future__ import annotations

from lth.config.key import CONF, group_options
from lth.config.yaml_file import load_yaml
from lth.core.errors import ConfigError


def _preset_holds(group: str, option: str) -> set[str]:
    """The options that preset ``option`` of ``group`` stands for: itself, those of its defaults list (logger=many:
    csv, tensorboard, wandb), or none for an empty preset (logger=none)."""
    file = CONF / group / f"{option}.yaml"
    content = load_yaml(file, resolve=False) if file.is_file() else {option: {}}
    defaults = content.get("defaults") if isinstance(content, dict) else None
    if defaults is not None:
        return set().union(*(_preset_holds(group, str(d)) for d in defaults if isinstance(d, str)))
    return {option} if content else set()


def check_group_lists(overrides: list[str]) -> None:
    """A config group given a list (``logger=[csv,tensorboard]``): a flat, non-empty list of its options, each
    standing for loggers (or other presets) that no other one in it stands for; an empty preset (``none``) only alone.
    Checked before Hydra composes the job (a nested list is a traceback inside Hydra)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(overrides):
        group, value = override.key_or_group, override.value()
        if not isinstance(value, list) or not (CONF / group).is_dir():
            continue
        leaves = [o for o in group_options(group) if _preset_holds(group, o) == {o}]
        example = f"{group}=[{leaves[0]},{leaves[-1]}]" if leaves else f"{group}=[a,b]"
        if not value or not all(isinstance(v, str) for v in value):
            alone = f", or {group}=none" if (CONF / group / "none.yaml").is_file() else ""
            raise ConfigError(
                group, f"got {override.input_line}; allowed: a list of its options, e.g. {example}{alone}"
            )
        seen: dict[str, str] = {}
        for option in value:
            holds = _preset_holds(group, option)
            if not holds and len(value) > 1:
                raise ConfigError(group, f"{option} in a list of several; allowed: {group}={option} alone, or a list")
            twice = next((o for o in sorted(holds) if o in seen), None)
            if twice is not None:
                where = "" if twice == option and seen[twice] == option else f" ({seen[twice]} and {option} hold it)"
                raise ConfigError(group, f"{twice} twice in {override.input_line}{where}; name each one once")
            seen.update(dict.fromkeys(holds, option))
