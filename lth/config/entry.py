"""From Hydra's composed config to the typed run, once per job: validated, checked against how it is launched,
and frozen with the facts Hydra knows about the job (:class:`lth.config.run.Job`).

:func:`load_run` is what ``train.py``'s ``main`` calls and what tests call on a composed config; nothing below it
sees a ``DictConfig`` or asks Hydra's global state.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lth.config.hardware import Launch, check_hardware
from lth.config.identity import register_resolvers
from lth.config.run import Job, RunConfig
from lth.config.schema import lookup
from lth.config.validate import validate
from lth.config.yaml_file import load_yaml


def start_process() -> None:
    """What a process that runs jobs does first (``train.py``, and each SLURM job, DDP rank or launcher worker that
    imports it): register lth's resolvers, and make the garbage collector's passes rarer. Importing torch and
    Lightning and every Hydra composition make millions of objects; a pass every 700 of them (Python's default)
    cost ~1 s of a 2-round run (6.6 s -> 5.6 s, ``python train.py dataset=synthetic prune.rounds=2 ...``)."""
    register_resolvers()
    gc.set_threshold(10_000, 50, 100)


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The composed config resolved into plain data, without Hydra's node."""
    return {
        k: OmegaConf.to_container(cfg[k], resolve=True) if isinstance(cfg[k], DictConfig) else cfg[k]
        for k in cfg
        if k != "hydra"
    }


def hydra_job(argv: Sequence[str] | None = None) -> tuple[Job, Launch | None]:
    """What Hydra knows about the running job (nothing outside Hydra), and how it was launched.

    ``argv``: the command line as typed, where this process read it (for the line that continues a stopped run).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return Job(argv=None if argv is None else tuple(argv)), None
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    output_dir = Path(hc.runtime.output_dir)
    sweep_dir = output_dir.parents[len(Path(str(hc.sweep.subdir)).parts) - 1] if multirun else None
    overrides = tuple(hc.overrides.task)
    job = Job(
        output_dir=str(output_dir),
        multirun=multirun,
        argv=None if argv is None else tuple(argv),
        overrides=overrides,
        sweep_dir=None if sweep_dir is None else str(sweep_dir),
        experiment=hc.runtime.choices.get("experiment"),
        swept=() if sweep_dir is None else swept(sweep_keys(sweep_dir), overrides),
    )
    return job, Launch(multirun, OmegaConf.to_container(hc.launcher, resolve=True))


def sweep_keys(sweep_dir: Path) -> list[str]:
    """The keys (and config groups) a ``-m`` sweep varies: those of its sweep overrides (``prune.rate=0.2,0.4``,
    ``model=conv2,conv4``, ``range(...)``) and of the sweeper's ``params``, read from the record Hydra writes in
    the sweep folder before it launches a job (``multirun.yaml``); none where that record is missing."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        record = load_yaml(sweep_dir / "multirun.yaml", resolve=False)
    except OSError:
        return []
    typed = list(lookup(record, "hydra.overrides.task") or [])
    params = lookup(record, "hydra.sweeper.params") or {}
    typed += [f"{key}={value}" for key, value in params.items()]
    try:
        overrides = OverridesParser.create().parse_overrides(typed)
    except OverrideParseException:  # a sweeper's own search space (optuna's): Hydra's grammar does not hold it
        return []
    return list(dict.fromkeys(o.key_or_group for o in overrides if o.is_sweep_override()))


def swept(keys: Sequence[str], overrides: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """Each of ``keys`` with its value in ``overrides``, a job's own overrides as Hydra writes them (``+a.b=1``:
    the last of a key wins)."""
    values = {}
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        values[key] = value
    return tuple((key, values[key]) for key in keys if key in values)


def load_run(cfg: DictConfig, argv: Sequence[str] | None = None, checked: bool = False) -> RunConfig:
    """Validate ``cfg`` (every key; the hardware against how the job is launched) and return it typed and frozen.
    Raise :class:`~lth.core.errors.ConfigError` naming the first bad key.

    ``checked``: this process composed and validated this very job from the command line already
    (:func:`lth.config.command_line.check_command_line`), so it is typed without checking it again; a job started
    elsewhere (a SLURM job, a launcher's process) is checked here.
    """
    job, launch = hydra_job(argv)
    if not checked:
        validate(cfg)
        check_hardware(cfg, launch)
    return RunConfig.of(plain_config(cfg), job)


def process_rank() -> int:
    """This process's global rank as Lightning will read it (torchrun, SLURM, LSF), without importing Lightning."""
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def run_of(plain: Mapping[str, Any], machine: bool = True) -> RunConfig:
    """An old run's resolved config (plain data, as :func:`lth.state.artifacts.read_plain` reads and migrates its
    ``config.yaml``) validated as a new run's config is, and typed."""
    cfg = OmegaConf.create(dict(plain))
    validate(cfg, machine=machine)
    return RunConfig.of(plain_config(cfg))
