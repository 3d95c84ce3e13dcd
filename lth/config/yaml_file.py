"""YAML files as plain data, read as OmegaConf reads them (its rule for floats such as ``1e-3``, no timestamps, a
key twice refused) but with libyaml's parser where PyYAML has it: a run's ``config.yaml`` and a sweep's
``multirun.yaml`` are read at every run, resume and report, and OmegaConf's pure-Python reading is most of that.
"""

from __future__ import annotations

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
    """PyYAML's safe loader (libyaml's parser where there is one) with OmegaConf's implicit types."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        """A mapping; a key written twice is an error, as in OmegaConf."""
        keys = [k.value for k, _ in node.value if k.tag == yaml.resolver.BaseResolver.DEFAULT_SCALAR_TAG]
        twice = next((k for i, k in enumerate(keys) if k in keys[:i]), None)
        if twice is not None:
            raise yaml.constructor.ConstructorError(None, None, f"found duplicate key {twice}", node.start_mark)
        return super().construct_mapping(node, deep=deep)


Loader.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT, list("-+0123456789."))
Loader.yaml_implicit_resolvers = {
    first: [(tag, rule) for tag, rule in rules if tag != "tag:yaml.org,2002:timestamp"]
    for first, rules in Loader.yaml_implicit_resolvers.items()
}


def load_yaml(path: Path | str, resolve: bool = True) -> Any:
    """The YAML file at ``path`` as plain data (None for an empty file); with ``resolve``, ``${...}``
    interpolations resolved by OmegaConf, as ``OmegaConf.to_container(OmegaConf.load(path), resolve=True)`` gives
    them, else left as written."""
    text = Path(path).read_text(encoding="utf-8")
    data = yaml.load(text, Loader=Loader)  # noqa: S506  # a safe loader
    if resolve and "${" in text and isinstance(data, dict | list):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(OmegaConf.create(data), resolve=True)
    return data
