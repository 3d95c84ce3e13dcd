"""The ticket of a run: reading a run folder, choosing its round, and writing the files that rebuild the model.

From a run folder (``config.yaml``, ``rounds.csv``, ``rewind.pt``, ``round_XX/mask.pt`` and ``early_stop.pt``) it
reads one round, checked against the model of the run's config (:func:`load_round`), and writes ``ticket.pt`` (the
mask and the rewind weights, masked, to retrain it elsewhere) and ``model.pt`` + ``model.yaml`` (the trained weights
at the early-stop point with the masks folded in, a plain ``state_dict`` the model class loads with ``strict=True``,
and the keys that rebuild it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lth.config.run import RunConfig, thawed
from lth.config.yaml_file import load_yaml
from lth.core.errors import ConfigError, MissingFileError, first_line
from lth.core.masks import Mask, prunable_parameters
from lth.core.seeds import stream
from lth.run.build import build_model, build_network
from lth.state.artifacts import (
    check_state,
    read_rounds,
    read_tensors,
    round_dir,
    save_tensors,
    write_text,
    yaml_text,
)
from lth.tools.export.errors import ExportError
from lth.tools.runs import read_config, run_file

PREFIX = "model."  # the run's files name tensors as the LightningModule does: model.<name>


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A ``name -> tensor`` file of the run, on the CPU; anything else is an :class:`ExportError`."""
    try:
        return read_tensors(path)
    except ConfigError as error:
        raise ExportError(error.key, error.message) from None


def read_config_and_rounds(run_dir: Path) -> tuple[RunConfig, list[dict]]:
    """The resolved config (checked as a run checks it) and the rows of ``rounds.csv`` of a run folder, round 0
    among them; anything missing or unreadable is an :class:`ExportError` naming the file."""
    try:
        cfg_path, rounds_path = run_file(run_dir, "config.yaml"), run_file(run_dir, "rounds.csv")
        cfg = read_config(cfg_path)
        rows = read_rounds(rounds_path)
    except (ConfigError, MissingFileError) as error:
        raise ExportError(error.key, error.message) from None
    if not rows:
        raise ExportError(str(rounds_path), "has a header and no rows: no round finished")
    if rows[0]["round"] != 0:
        raise ExportError(str(rounds_path), "has no round 0")
    return cfg, rows


def choose_round(rows: list[dict], tolerance: float = 0.5) -> int:
    """The sparsest round whose validation accuracy is at most ``tolerance`` points below round 0's."""
    if not (isinstance(tolerance, int | float) and math.isfinite(tolerance) and tolerance >= 0):
        raise ConfigError("tolerance", f"got {tolerance!r}; allowed: a number >= 0 (accuracy points)")
    floor = rows[0]["val_acc"] - tolerance / 100 - 1e-9
    good = [r for r in rows if r["val_acc"] >= floor]
    return min(good, key=lambda r: (r["weights_remaining"], -r["round"]))["round"]


def _strip(state: Mapping[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    if not all(k.startswith(PREFIX) for k in state):
        odd = next(k for k in state if not k.startswith(PREFIX))
        raise ExportError(str(path), f"names {odd!r}; a run's tensors are named {PREFIX}<parameter>")
    return {k[len(PREFIX) :]: v for k, v in state.items()}


def _check_state(state: Mapping[str, torch.Tensor], model: nn.Module, path: Path) -> None:
    try:
        check_state(state, model, path)
    except ConfigError as error:
        raise ExportError(error.key, error.message) from None


@dataclass
class RoundFiles:
    """One round of a run, checked against the model of its config; tensor names without the ``model.`` prefix."""

    row: dict
    mask: Mask
    weights: dict[str, torch.Tensor]  # at the early-stop point
    rewind: dict[str, torch.Tensor] | None  # None where the run rewinds no weights (prune.rewind=lr or none)


def _model_state(path: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    state = _strip(load_tensors(path), path)
    _check_state(state, model, path)
    return state


def load_round(run_dir: Path, cfg: RunConfig, row: dict) -> RoundFiles:
    """Read and check the mask, the early-stop weights and the rewind point of round ``row['round']``."""
    try:
        model = build_model(cfg)
    except Exception as error:  # hydra raises many types for a model key that names no model
        raise ExportError(str(run_dir / "config.yaml"), f"builds no model ({first_line(error)})") from None
    where = round_dir(run_dir, row["round"])
    params = prunable_parameters(
        nn.ModuleDict({PREFIX[:-1]: model}), cfg.prune.include, cfg.prune.exclude, cfg.prune.extra
    )
    mask_path, weights_path, rewind_path = where / "mask.pt", where / "early_stop.pt", run_dir / "rewind.pt"
    mask = Mask(load_tensors(mask_path))
    try:
        mask.check_against(params, source=str(mask_path))
    except ConfigError as error:
        raise ExportError(str(mask_path), str(error).removeprefix(f"{mask_path}: ")) from None
    if not weights_path.exists():
        raise ExportError(str(weights_path), "is missing (the run was made with train.save_weights=false)")
    weights = _model_state(weights_path, model)
    rewind = _model_state(rewind_path, model) if rewind_path.exists() else None
    return RoundFiles(row, Mask(_strip(mask, mask_path)), weights, rewind)


def fold(weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``weights`` with every pruned entry set to +0.0 (a plain state_dict: no ``weight_orig``/``weight_mask``)."""
    return {
        k: torch.where(mask[k], v, torch.zeros((), dtype=v.dtype)) if k in mask else v.clone()
        for k, v in weights.items()
    }


def model_config(cfg: RunConfig) -> dict:
    """What rebuilds the model: the ``model`` keys (less ``model.weights``: ``model.pt`` holds the weights) and the
    dataset's shape (and normalisation) keys."""
    dataset = cfg.plain["dataset"]
    keys = ("name", "channels", "image_size", "num_classes", "mean", "std")
    model = {k: thawed(v) for k, v in cfg.model.items() if k != "weights"}
    return {"model": model, "dataset": {k: thawed(dataset.get(k)) for k in keys}}


def build_plain(config: Mapping) -> nn.Module:
    """The plain model class of a :func:`model_config` (freshly initialised)."""
    d = config["dataset"]
    return build_network(config["model"], (d["channels"], d["image_size"], d["num_classes"]), stream(0, "init"))


def write_ticket(out_dir: Path, files: RoundFiles, cfg: RunConfig, config: dict) -> str:
    """Write ``ticket.pt`` (the mask and the masked rewind weights, with ``config`` from :func:`model_config`);
    the one-line outcome (skipped where the run rewinds no weights)."""
    if files.rewind is None:
        return f"skipped: no rewind.pt (prune.rewind={cfg.prune.rewind} rewinds no weights)"
    ticket = {
        "round": files.row["round"],
        "weights_remaining": files.row["weights_remaining"],
        "rewind": str(cfg.prune.rewind),
        "config": config,
        "mask": dict(files.mask),
        "weights": fold(files.rewind, files.mask),
    }
    save_tensors(out_dir / "ticket.pt", ticket)
    return "written: ticket.pt"


def write_model(out_dir: Path, files: RoundFiles, config: dict) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Write ``model.pt`` (the early-stop weights, masks folded in) and ``model.yaml`` (``config``); return the
    plain model loaded with them (``strict=True``, before anything is written) and its state_dict."""
    state = fold(files.weights, files.mask)
    plain = build_plain(config)
    plain.load_state_dict(state, strict=True)
    save_tensors(out_dir / "model.pt", state)
    write_text(out_dir / "model.yaml", yaml_text(config))
    return plain, state


def load_exported(out_dir: Path) -> nn.Module:
    """The exported sparse model of ``out_dir`` (``model.yaml`` + ``model.pt``), in eval mode."""
    model = build_plain(load_yaml(out_dir / "model.yaml"))
    model.load_state_dict(load_tensors(out_dir / "model.pt"), strict=True)
    return model.eval()
