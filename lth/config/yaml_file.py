"""YAML files as plain data, read as OmegaConf reads them (its rule for floats such as ``1e-3``, no timestamps, a
key twice refused, an empty file an empty mapping) but with libyaml's parser where PyYAML has it: a run's
``config.yaml`` and a sweep's ``multirun.yaml`` are read at every run, resume and report, and OmegaConf's
pure-Python reading was most of that.
"""

from __future__ import annotations

import pathlib
import re
from pathlib import Path
from typing import Any

import yaml

FLOAT = re.compile(  # OmegaConf's (omegaconf._utils.get_yaml_loader): YAML 1.2 floats, 1e-3 included
    r"""^(?:
     [-+]?[0-9]+(?:_[0-9]+)*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9]+(?:_[0-9]+)*(?:[eE][-+]?[0-9]+)
    |\.[0-9]+(?:_[0-9]+)*(?:[eE][-+][0-9]+)?
    |[-+]?[0-9]+(?:_[0-9]+)*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """PyYAML's safe loader (libyaml's parser where there is one) with OmegaConf's implicit types and its paths."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        """A mapping; a key written twice is an error, as in OmegaConf."""
        seen = set()
        for key, _ in node.value:
            if key.tag == yaml.resolver.BaseResolver.DEFAULT_SCALAR_TAG:
                if key.value in seen:
                    problem = f"found duplicate key {key.value}"
                    raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark, problem)
                seen.add(key.value)
        return super().construct_mapping(node, deep=deep)


Loader.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT, list("-+0123456789."))
Loader.yaml_implicit_resolvers = {
    first: [(tag, rule) for tag, rule in rules if tag != "tag:yaml.org,2002:timestamp"]
    for first, rules in Loader.yaml_implicit_resolvers.items()
}
for _path in (pathlib.Path, pathlib.PosixPath, pathlib.WindowsPath):  # as OmegaConf's loader takes them
    Loader.add_constructor(
        f"tag:yaml.org,2002:python/object/apply:pathlib.{_path.__name__}",
        lambda loader, node, path=_path: path(*loader.construct_sequence(node)),
    )


def load_yaml(path: Path | str, resolve: bool = True) -> Any:
    """The YAML file at ``path`` as plain data: a mapping (empty for an empty file), or a list or a scalar as written
    at its top; with ``resolve``, ``${...}`` interpolations resolved by OmegaConf, as
    ``OmegaConf.to_container(OmegaConf.load(path), resolve=True)`` gives them, else left as written. Errors name
    the file (PyYAML's, or OSError)."""
    with open(path, encoding="utf-8") as file:
        data = yaml.load(file, Loader=Loader)  # noqa: S506  # a safe loader
    if data is None:
        return {}
    if resolve and isinstance(data, dict | list) and "${" in repr(data):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(OmegaConf.create(data), resolve=True)
    return data
