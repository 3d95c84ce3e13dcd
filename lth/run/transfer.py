"""The mask a run starts from (``prune.mask_from``, checked by :mod:`lth.config.transfer`), read once before round 0,
and what that mask cost to find, which round 0's row counts (:func:`with_mask_cost`)."""

from __future__ import annotations

import logging
import re
from typing import Any

import torch

from lth.config.identity import run_id
from lth.config.run import RunConfig
from lth.config.transfer import mask_file
from lth.core.errors import ConfigError
from lth.core.interop import mask_from_state
from lth.core.masks import Mask
from lth.core.seeds import stream
from lth.models.weights import read_state
from lth.run.methods import Cost, spent_before
from lth.state.artifacts import read_plain, read_rounds

log = logging.getLogger("lth")


def start_mask(cfg: RunConfig, params: dict[str, Any]) -> Any:
    """The mask round 0 starts from (on the parameters' devices), or None without ``prune.mask_from``.

    ``params``: the run's prunable parameters by name (``model.<name>``, as the LightningModule names them).
    """
    spec = cfg.prune.mask_from
    if spec is None:
        return None
    file = mask_file(spec)
    zeros = cfg.prune.mask_from_zeros  # a state_dict of weights: the other tensors (biases, norms) are left out
    hint = "" if zeros else "; prune.mask_from_zeros=true reads weights whose zeros are the mask (ModelPruning's)"
    state = read_state(file, key="prune.mask_from", fold=False)
    source = mask_from_state(state, source="prune.mask_from", zeros=zeros, hint=hint)
    if source and not any(n.startswith("model.") for n in source):  # another tool names the bare network's tensors
        source = Mask({f"model.{n}": m for n, m in source.items()})
    fits = {n for n, p in params.items() if n in source and source[n].shape == p.shape}
    unfit = [
        f"{n} {tuple(params[n].shape)} (mask {tuple(source[n].shape)})" for n in params if n in source and n not in fits
    ]
    absent = [n for n in params if n not in source]
    unknown = [n for n in source if n not in params]
    if unfit or absent or (unknown and not zeros):
        named = "; ".join(
            f"{what}: {', '.join(names[:4])}{', ...' if len(names) > 4 else ''}"
            for what, names in (
                ("of another shape", unfit),
                ("not in the mask", absent),
                ("not prunable here", unknown),
            )
            if names
        )
        if not fits:
            raise ConfigError(
                "prune.mask_from", f"{file} fits none of the model's prunable tensors ({named}); a mask of this model"
            )
        if cfg.prune.mask_unmatched != "dense":
            raise ConfigError(
                "prune.mask_from",
                f"{file} does not fit the model's prunable tensors ({named}); prune.mask_unmatched=dense starts "
                "those dense",
            )
        log.info("prune.mask_from: %s start dense (%s)", file, named)
    mask = Mask(
        {n: source[n].clone() if n in fits else torch.ones_like(p, dtype=torch.bool).cpu() for n, p in params.items()}
    )
    if not any(bool(source[n].any()) for n in fits):
        raise ConfigError(
            "prune.mask_from", f"{file} keeps no weight of the tensors it fits; allowed: a mask that keeps some"
        )
    control = cfg.prune.control
    if control is not None:
        draws = torch.Generator().manual_seed(stream(cfg.seed, f"control/{control.name}/mask_from"))
        mask = control.load()(mask, Mask.ones_like(mask), draws)
    log.info("round 0 starts from the mask of %s (%.1f%% weights remaining)", file, 100 * mask.weights_remaining())
    return Mask({n: m.to(params[n].device) for n, m in mask.items()})


def mask_cost(cfg: RunConfig) -> Cost:
    """What the mask of ``prune.mask_from`` cost to find: where it is round k's mask of a run folder
    (``<run>/round_0k/mask.pt``), what that run's round k counts before it trains (every round the mask came from:
    the rounds before k, its ticket's for a control, none for a mask pruned at initialisation or round 0's); nothing
    for another tool's file or a run written before costs were counted."""
    if cfg.prune.mask_from is None:
        return Cost()
    file = mask_file(cfg.prune.mask_from)
    found, source = re.fullmatch(r"round_(\d+)", file.parent.name), file.parent.parent
    if found is None or not (source / "rounds.csv").is_file() or not (source / "config.yaml").is_file():
        return Cost()
    source_cfg = RunConfig.of(read_plain(source / "config.yaml"))
    ticket_dir = None
    if source_cfg.prune.control is not None:  # a control's masks come from its ticket, beside it
        ticket_dir = source.parent / run_id(source_cfg.but(**{"prune.control": None}).plain)
        ticket_dir = ticket_dir if (ticket_dir / "rounds.csv").is_file() else None
    rows = read_rounds(source / "rounds.csv")
    at = int(found.group(1))
    if at > len(read_rounds(ticket_dir / "rounds.csv") if ticket_dir else rows):  # the round before it is not there
        return Cost()
    return spent_before(source_cfg, at, rows, ticket_dir)


def with_mask_cost(row: dict, cost: Cost) -> dict:
    """Round 0's row with ``cost`` (:func:`mask_cost`) added to its cost columns."""
    return {**row, **{column: int(row[column]) + value for column, value in cost.columns().items()}}
