"""The mask a run starts from (``prune.mask_from``, checked by :mod:`lth.config.transfer`), read once before round 0."""

from __future__ import annotations

import logging
from typing import Any

import torch

from lth.config.run import RunConfig
from lth.config.transfer import mask_file
from lth.core.errors import ConfigError
from lth.core.interop import mask_from_state
from lth.core.masks import Mask
from lth.core.seeds import stream
from lth.models.weights import read_state

log = logging.getLogger("lth")


def start_mask(cfg: RunConfig, params: dict[str, Any]) -> Any:
    """The mask round 0 starts from (on the parameters' devices), or None without ``prune.mask_from``.

    ``params``: the run's prunable parameters by name (``model.<name>``, as the LightningModule names them).
    """
    spec = cfg.prune.mask_from
    if spec is None:
        return None
    file = mask_file(spec)
    source = mask_from_state(read_state(file, key="prune.mask_from", fold=False), source="prune.mask_from")
    if source and not any(n.startswith("model.") for n in source):  # another tool names the bare network's tensors
        source = Mask({f"model.{n}": m for n, m in source.items()})
    fits = {n for n, p in params.items() if n in source and source[n].shape == p.shape}
    unfit = [
        f"{n} {tuple(params[n].shape)} (mask {tuple(source[n].shape)})" for n in params if n in source and n not in fits
    ]
    absent = [n for n in params if n not in source]
    unknown = [n for n in source if n not in params]
    if unfit or absent or unknown:
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
