"""The README's key table, rendered from :mod:`lth.config.schema` with each key's default read from ``conf/``.

``python -m lth.config.table`` prints it; ``--readme`` rewrites it in README.md, ``--check`` exits 1 if the README's
table is out of step.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from lth.config.key import CONF, REPO, Key
from lth.config.schema import KEYS

README = REPO / "README.md"
START, END = "<!-- keys:start -->", "<!-- keys:end -->"
_ABSENT = object()


def compose(*overrides: str) -> DictConfig:
    """The config of ``conf/`` composed with ``overrides``, Hydra's node included (for the groups' choices)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from lth.config.identity import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=True)


def _yaml(value: Any) -> str:
    """``value`` as YAML's flow style writes it (null, true, [a, b], {k: v})."""
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=False)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return str(value)


def default_text(entry: Key, configs: Mapping[str, DictConfig]) -> str:
    """The table's *default* cell: the composed value (a group's chosen preset), with the overrides it needs."""
    where, cfg = "", configs[""]
    value = OmegaConf.select(cfg, entry.key, default=_ABSENT)
    if value is _ABSENT and entry.where:
        where, cfg = entry.where, configs[entry.where]
        value = OmegaConf.select(cfg, entry.key, default=_ABSENT)
    if value is _ABSENT:
        text = "unset; add with `+`"
    elif entry.kind == "group":
        text = f"`{cfg.hydra.runtime.choices[entry.key]}`"
    else:
        text = f"`{_yaml(value)}`"
    return f"{text} under `{where}`" if where else text


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_table(configs: Mapping[str, DictConfig] | None = None) -> str:
    """The README's key table: key | default | allowed | run-only | what it does, one row per entry.

    ``configs``: the composed configs by the overrides that made them ("" the default config, then each
    entry's ``where``); composed here when not given.
    """
    if configs is None:
        configs = {where: compose(*where.split()) for where in dict.fromkeys(["", *(k.where for k in KEYS)])}
    rows = ["| key | default | allowed | run-only | what it does |", "|---|---|---|---|---|"]
    for entry in KEYS:
        allowed = f"{entry.allowed}; {entry.also}" if entry.also else entry.allowed
        cells = (f"`{entry.key}`", default_text(entry, configs), allowed, "yes" if entry.run_only else "", entry.help)
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows) + "\n"


def readme_section(text: str) -> str:
    """What lies between the key table's markers in ``text`` (the README)."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md lacks the markers {START} ... {END}")
    return text[start + len(START) : end].strip("\n") + "\n"


def write_readme(path: Path = README, table: str | None = None) -> bool:
    """Put the rendered table between the markers of ``path``; return whether the file changed."""
    text = path.read_text()
    readme_section(text)  # the markers are there
    table = render_table() if table is None else table
    start, end = text.find(START) + len(START), text.find(END)
    new = f"{text[:start]}\n{table}{text[end:]}"
    if new != text:
        path.write_text(new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    """``python -m lth.config.table [--readme | --check]``: print the key table, write it into README.md, or check
    that README.md holds it (exit code 1 if not)."""
    parser = argparse.ArgumentParser(prog="python -m lth.config.table", description=main.__doc__)
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--readme", action="store_true", help="rewrite the key table in README.md")
    what.add_argument("--check", action="store_true", help="exit 1 if README.md's key table is out of step")
    args = parser.parse_args(argv)
    table = render_table()
    if args.readme:
        print(f"{README}: {'rewritten' if write_readme(README, table) else 'already up to date'}")
    elif args.check:
        if readme_section(README.read_text()) != table:
            print(
                f"error: {README}: the key table is out of step; run python -m lth.config.table --readme",
                file=sys.stderr,
            )
            return 1
    else:
        print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
