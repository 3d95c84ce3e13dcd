"""The run beside a folder that holds none: where ``resume=true`` with a config that no longer finds its folder
(a ``prune.mask_from`` file changed, a key mistyped) says which run it means, instead of "nothing to resume" alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lth.config.identity import identity
from lth.config.run import RunConfig
from lth.core.errors import ConfigError
from lth.state.artifacts import CONFIG, read_plain


def nothing_to_resume(cfg: RunConfig, run_dir: Path) -> ConfigError:
    """The error of ``resume=true`` in a folder that holds no run, naming the run beside it that this config
    started, if there is one: one of the same identity under another id (the ``prune.mask_from`` file, which the id
    hashes, changed since), or one that differs at a single key."""
    nothing = f"nothing to resume in {run_dir}: it holds no run"
    now = leaves(identity(cfg.plain))
    for other in sorted(run_dir.parent.glob(f"*/{CONFIG}")) if run_dir.parent.is_dir() else ():
        try:
            before = leaves(identity(read_plain(other)))
        except ConfigError:
            continue
        differ = [key for key in set(before) | set(now) if before.get(key) != now.get(key)]
        if other.parent == run_dir or len(differ) > 1:
            continue
        if (not differ and cfg.prune.mask_from is not None) or differ == ["prune.mask_from"]:
            return ConfigError(
                "prune.mask_from",
                f"{nothing}: the mask file changed since {other.parent} was started from it (the run id holds its "
                "content); put that mask back and pass resume=true again to continue that run",
            )
        if differ:
            key = differ[0]
            return ConfigError(
                "resume",
                f"{nothing}; {other.parent} holds a run of this config but for {key} ({before.get(key)!r} there, "
                f"{now.get(key)!r} here): set it so to continue that one",
            )
    return ConfigError("resume", f"{nothing} (leave out resume=true)")


def leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``tree`` (an identity) flattened to dotted keys."""
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    return {k: v for key, value in tree.items() for k, v in leaves(value, f"{prefix}{key}.").items()}
