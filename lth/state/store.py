"""The run folder as the state of a run: what is finished, what can be resumed, and round 0 shared between runs.

A round is finished when its row is in ``rounds.csv``; its ``last.ckpt`` (the Lightning checkpoint written at
the end of the round, and every ``train.checkpoint_every`` during it) holds the weights, optimiser, schedule,
data position, random state and the callbacks' state (masks, rewind point, early-stop point). Resuming
restores the end of the last finished round, and continues the interrupted round from its checkpoint or, without
a usable one, restarts it from its start.

Round 0 depends only on the model, data, seed, training settings and rewind point, not on how later rounds
prune: runs that share it (a sweep over ``prune.rate``, say, or sweeps run one after another) take it from
``<paths.output_dir>/dense/<dense id>/`` instead of training it again. Files are hard-linked where possible;
nothing is ever modified in place. A kept round 0 that cannot be read (a file cut short) is discarded and trained
again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from lth.config.identity import folder_name, identity, run_id
from lth.config.run import RunConfig
from lth.core.catalog import DRAWN_DURING_TRAINING, METHODS
from lth.core.errors import ConfigError
from lth.core.steps import Step
from lth.state.artifacts import (
    CONFIG,
    holds_results,
    read_plain,
    read_summary,
    readable_rounds,
    round_dir,
    write_config,
    write_json,
    write_rounds,
)
from lth.state.locks import locked  # noqa: F401 - the lock (filelock) that guards a run folder or a kept round 0
from lth.state.nearest import nothing_to_resume

log = logging.getLogger("lth")
CHECKPOINT = "last.ckpt"
MACHINE = "machine.json"  # the settings of the machine that trained the run (see lth.run.provenance)
DENSE_FILES = ("round_00", "rewind.pt")


def finished(run_dir: Path, cfg: RunConfig | None = None) -> dict | None:
    """The summary of a run that already finished in ``run_dir`` (the same command finds the same folder); None
    when its ``summary.json`` is missing or cannot be read whole (``resume=true`` writes it again). A ``rounds.csv``
    that has lost rows the summary holds (cut short, garbled) is written again from the summary; an unreadable
    ``config.yaml`` from ``cfg``, when the folder's name is its run id."""
    summary = read_summary(run_dir)
    if summary is None:
        return None
    if cfg is not None and run_dir.name == run_id(cfg.plain):
        _repair_stored_config(cfg, run_dir)
    path = run_dir / "rounds.csv"
    rows, problem = readable_rounds(path) if path.is_file() else ([], f"{path}: is missing")
    if problem is not None or len(rows) < len(summary["rounds"]):
        _keep_damaged(path)
        write_rounds(path, summary["rounds"])
        log.warning("%s; written again from %s", problem or f"{path}: lacks rows", run_dir / "summary.json")
    return summary


def _keep_damaged(path: Path) -> None:
    """Keep a copy of a damaged ``path`` beside it (``<name>.damaged``) before it is written again."""
    if path.is_file():
        shutil.copy2(path, path.with_name(f"{path.name}.damaged"))


def _rounds_span(count: int) -> str:
    return "no round" if count == 0 else "round 0" if count == 1 else f"rounds 0-{count - 1}"


def resume_plan(run_dir: Path, last_round: int) -> str:
    """What ``resume=true`` does with the unfinished run in ``run_dir`` (``last_round``: ``prune.rounds``)."""
    path = run_dir / "rounds.csv"
    rows, problem = readable_rounds(path) if path.is_file() else ([], None)
    done = len(rows)
    if done > last_round:
        unread = " (its summary.json cannot be read)" if (run_dir / "summary.json").is_file() else ""
        plan = f"write its summary{unread} (all its rounds are finished)"
    elif (round_dir(run_dir, done) / CHECKPOINT).is_file():
        plan = f"continue round {done} from its checkpoint"
    else:
        plan = f"restart round {done} from {round_start(done)}"
    if problem is None:
        return plan
    return f"keep the {_rounds_span(done)} it holds whole ({problem}) and {plan}"


def round_start(round_index: int) -> str:
    """Where a round that is restarted starts from, in words."""
    return f"its start (the end of round {round_index - 1})" if round_index else "its start"


def resumable_rows(cfg: RunConfig, run_dir: Path) -> list[dict]:
    """The finished rounds to keep, after checking that ``resume`` fits what ``run_dir`` holds.

    Without ``resume`` a folder that holds anything is refused, saying what ``resume=true`` would do; with it,
    any started folder is resumed: a round with a checkpoint continues from it, one without restarts from its start.
    """
    resume = cfg.resume
    started = holds_results(run_dir)
    if started:
        check_rewind_reached(cfg, run_dir)
    if not resume:
        if started:
            plan = resume_plan(run_dir, cfg.prune.rounds)
            raise ConfigError(
                "resume", f"{run_dir} holds an unfinished run; pass resume=true to {plan}, or delete the folder"
            )
        return []
    if not started:
        raise nothing_to_resume(cfg, run_dir)
    _check_stored_config(cfg, run_dir)
    path = run_dir / "rounds.csv"
    rows, problem = readable_rounds(path) if path.is_file() else ([], None)
    if problem is not None:
        _keep_damaged(path)
        write_rounds(path, rows)
        log.warning(
            "resume: %s; the %s it holds whole are kept (a copy: %s.damaged)",
            problem,
            _rounds_span(len(rows)),
            path.name,
        )
    return rows


def rewind_not_reached(cfg: RunConfig, drawn: Any) -> ConfigError:
    """The error of a rewind Step that round 0 did not reach: it ended first, where its early-bird ticket was drawn
    (iteration ``drawn``). No later round can start, whatever is resumed: a new run is the way on."""
    return ConfigError(
        "prune.rewind",
        f"{cfg.prune.rewind} is past the end of round 0, where the early-bird ticket was drawn (iteration {drawn}); "
        "allowed: init or an earlier Step",
    )


def check_rewind_reached(cfg: RunConfig, run_dir: Path) -> None:
    """Refuse again, rather than offer ``resume=true`` (which would fail the same way), a run whose round 0 is
    finished without its rewind point: a ticket drawn during training (early-bird) before the rewind Step."""
    path = run_dir / "rounds.csv"
    if not (cfg.prune.method.has(DRAWN_DURING_TRAINING) and isinstance(cfg.prune.rewind, Step) and path.is_file()):
        return
    rows = readable_rounds(path)[0]
    if rows and len(rows) <= cfg.prune.rounds and not (run_dir / "rewind.pt").is_file():
        raise rewind_not_reached(cfg, rows[0].get("train_iterations"))


def _stored_config_problem(cfg: RunConfig, run_dir: Path) -> tuple[str | None, bool]:
    """Why ``run_dir``'s ``config.yaml`` is not ``cfg``'s (one line naming it; None when it is), and whether it is
    because it cannot be read (else it is another config's)."""
    stored = run_dir / CONFIG
    if not stored.is_file():
        return None, False
    try:
        before = identity(read_plain(stored))
    except ConfigError as error:
        return str(error), True
    now = identity(cfg.plain)
    if before == now:
        return None, False
    return f"{stored} was made by another config (they differ at {_first_difference(before, now)})", False


def _repair_stored_config(cfg: RunConfig, run_dir: Path) -> None:
    """Write ``config.yaml`` again from ``cfg`` when it is damaged (cut short, garbled): the folder is named by
    ``cfg``'s run id, which its identity decides, so a config there that is not ``cfg``'s is a damaged one."""
    problem, _ = _stored_config_problem(cfg, run_dir)
    if problem is not None:
        _keep_damaged(run_dir / CONFIG)
        write_config(run_dir / CONFIG, cfg)
        log.warning("%s; written again from this config (%s is its run id)", problem, run_dir.name)


def _check_stored_config(cfg: RunConfig, run_dir: Path) -> None:
    """Refuse to resume ``run_dir`` when its ``config.yaml`` is another config's or cannot be read, unless the
    folder's name is ``cfg``'s run id (then it is repaired); one line says how to continue."""
    if run_dir.name == run_id(cfg.plain):
        _repair_stored_config(cfg, run_dir)
        return
    problem, unreadable = _stored_config_problem(cfg, run_dir)
    if problem is None:
        return
    stored = run_dir / CONFIG
    if not unreadable:
        raise ConfigError("resume", f"{problem}; resume refused")
    raise ConfigError(
        "resume",
        f"{problem}, so whether {run_dir} holds this config's run cannot be checked: if it does, delete "
        f"{stored} and pass resume=true again (it is written anew from this command)",
    )


def _first_difference(a: Any, b: Any, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return prefix.rstrip(".") or "<root>"


def load_checkpoint(path: Path) -> dict:
    """A Lightning checkpoint, or a one-line error naming the file when it is truncated or not a checkpoint."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure to read means the file is unusable
        raise ConfigError(str(path), f"unreadable checkpoint ({type(error).__name__})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "callbacks" not in checkpoint:
        raise ConfigError(str(path), "is not a checkpoint of this project (no state_dict/callbacks)")
    return checkpoint


def unusable(path: Path) -> str | None:
    """Why checkpoint ``path`` cannot be resumed from (one line, naming it), or None when it can."""
    if not path.is_file():
        return f"{path}: is missing"
    try:
        load_checkpoint(path)
    except ConfigError as error:
        return str(error)
    return None


def restore(module: torch.nn.Module, callbacks: list, path: Path) -> int:
    """Load the weights and the callbacks' state (masks, rewind point, ...) of checkpoint ``path``; return the
    iterations its fit had trained (where a fit resumed from it starts). A checkpoint that does not fit is a
    one-line :class:`ConfigError` naming it, and leaves module and callbacks as they were."""
    checkpoint = load_checkpoint(path)
    for callback in callbacks:
        if callback.state_key not in checkpoint["callbacks"]:
            raise ConfigError(str(path), f"holds no state for {callback.state_key}")
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        module.load_state_dict(before)  # torch loaded the tensors that fit: the module is left as it was
        first = str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else str(error)
        raise ConfigError(str(path), f"does not fit this model: {first}") from None
    for callback in callbacks:
        callback.load_state_dict(checkpoint["callbacks"][callback.state_key])
    return int(checkpoint.get("global_step", 0))


ROUND0_PRUNE_KEYS = ("rewind", "include", "exclude", "extra", "mask_from", "mask_from_zeros", "mask_unmatched")  # mask
# an early-bird round 0 stops where the masks it computes (of this sparsity, scope and criterion) stop changing
EARLY_BIRD_ROUND0_KEYS = ("method", "target_sparsity", "scope", "early_bird")


def dense_id(cfg: RunConfig, machine: dict) -> str:
    """The identity of round 0: the experiment's identity less the keys that only later rounds use, plus the
    ``machine`` settings that change its numbers (device kind, CPU threads), so runs on two setups never share it."""
    ident = identity(cfg.plain)
    prune = ident.pop("prune", {})
    drawn = METHODS.entry(prune.get("method", "magnitude")).has(DRAWN_DURING_TRAINING)  # identity leaves it out
    keys = ROUND0_PRUNE_KEYS + (EARLY_BIRD_ROUND0_KEYS if drawn else ())
    ident["round0"] = {key: prune.get(key) for key in keys if prune.get(key)}
    if prune.get("mask_from") and prune.get("control"):  # a control redraws the mask round 0 starts from
        ident["round0"]["control"] = prune["control"]
    ident["machine"] = machine
    return folder_name(cfg.plain, ident)


def dense_dir(cfg: RunConfig, run_dir: Path, machine: dict) -> Path:
    """Where the round 0 of ``run_dir`` on this ``machine`` is kept: ``<paths.output_dir>/dense/`` for every run
    under ``paths.output_dir`` (single runs and all sweeps share it), else beside ``run_dir``."""
    output_dir = Path(cfg.output_dir).resolve()
    base = output_dir if output_dir in run_dir.resolve().parents else run_dir.parent
    return base / "dense" / dense_id(cfg, machine)


def check_machine(run_dir: Path, machine: dict) -> None:
    """Refuse to continue ``run_dir`` on settings that change its numbers; record them for a new run."""
    path = run_dir / MACHINE
    if not path.is_file():
        return
    before = json.loads(path.read_text())
    for key, value in before.items():
        if machine.get(key) != value:
            raise ConfigError(
                f"hardware.{key}",
                f"{run_dir} was trained with {key}={value}, this process has {machine.get(key)}; "
                f"continue it with hardware.{key}={value} (it changes the numbers)",
            )


def _link_tree(source: Path, target: Path) -> None:
    def link(src: str, dst: str) -> None:  # atomic: a kill never leaves a half-copied file under its name
        tmp = Path(dst).with_name(f".{Path(dst).name}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)
        os.replace(tmp, dst)

    for name in DENSE_FILES:
        src = source / name
        if not src.exists():  # no rewind point is kept for rewind=lr or none
            continue
        if src.is_dir():
            shutil.copytree(src, target / name, copy_function=link, dirs_exist_ok=True)
        else:
            target.mkdir(parents=True, exist_ok=True)
            link(str(src), str(target / name))


def stored_name(path: Path, store: Path) -> Path:
    """The file of the dense ``store`` that ``path`` (a file of a run's round 0) is a hard link of, else ``path``:
    the name to report when the file is bad, as deleting the run's link alone would not remove it."""
    kept = store / path.parent.name / path.name
    try:
        return kept if os.path.samefile(path, kept) else path
    except OSError:
        return path


def discard_unusable_dense(store: Path) -> str | None:
    """Remove the round 0 kept in ``store`` when it cannot be used (its checkpoint or row unreadable, say cut
    short); return why (one line naming the file), or None when it is usable or absent."""
    if not (store / "row.json").is_file():
        return None
    problem = unusable(store / round_dir(Path(), 0) / CHECKPOINT)
    if problem is None:
        try:
            json.loads((store / "row.json").read_text())
        except (OSError, ValueError) as error:
            problem = f"{store / 'row.json'}: unreadable ({type(error).__name__})"
    if problem is not None:
        shutil.rmtree(store)
    return problem


def adopt_dense(store: Path, run_dir: Path) -> dict | None:
    """Take round 0 from ``store`` into ``run_dir``; its row, or None when the store holds no round 0 yet."""
    if not (store / "row.json").is_file():
        return None
    _link_tree(store, run_dir)
    return json.loads((store / "row.json").read_text())


def publish_dense(run_dir: Path, store: Path, row: dict) -> None:
    """Offer ``run_dir``'s round 0 to the runs that share it (written to a temporary folder, then renamed)."""
    if (store / "row.json").is_file():
        return
    tmp = store.with_name(f".{store.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    _link_tree(run_dir, tmp)
    write_json(tmp / "row.json", row)
    shutil.rmtree(store, ignore_errors=True)
    os.replace(tmp, store)
