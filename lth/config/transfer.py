"""What a run starts from besides its own initialisation: pre-trained weights and another run's (or tool's) mask.

- ``model.weights``: a local weights file or folder (read by :mod:`lth.models.weights` when the model is built, so the
  rewind point ``init`` is the pre-trained weights); a value that is no local path (a hub name) is one line saying how
  to save the file once.
- ``prune.mask_from``: round 0 starts from this mask (a ticket found on one dataset, trained on another). It names a
  run folder (its last round's ``mask.pt``), ``<run folder>@<round>``, a round folder (``<run>/round_02``), or a file:
  our ``mask.pt``, a state_dict saved from a model pruned by ``torch.nn.utils.prune``, or open_lth's ``mask.pth``
  (:func:`lth.core.interop.mask_from_state`); with ``prune.mask_from_zeros=true`` also a state_dict of weights (a
  ``ModelPruning`` checkpoint made permanent, a Lightning ``.ckpt`` too), its zeros the pruned weights. Prunable
  tensors that the mask lacks or that do not fit (a new output layer) are named: ``prune.mask_unmatched=dense`` starts
  them dense, else (null, ``refuse``) the run is refused.
  With ``prune.control=random_prune`` or ``shuffle`` the control's draw replaces the mask (each layer keeps as many
  weights, at random or permuted): the transferred ticket against random masks of the same sparsity.

The run's identity holds the mask's content hash, not its path (:func:`mask_identity`). :func:`check` runs in
:func:`lth.config.validate.validate` (no torch); :func:`lth.run.transfer.start_mask` reads the mask once, before
round 0.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lth.core.catalog import CONTROLS, METHODS, PRUNES_EVERY_ROUND, PRUNES_ONCE, REDRAWS_MASK
from lth.core.errors import ConfigError

log = logging.getLogger("lth")
UNMATCHED = ("refuse", "dense")
START_CONTROLS = CONTROLS.with_trait(REDRAWS_MASK)  # controls that redraw a transferred mask
_AT = re.compile(r"^(.*)@(\d+)$")
HOW_TO_SAVE = {
    "torchvision": "torch.save(torchvision.models.get_model('{arch}', weights='DEFAULT').state_dict(), '{arch}.pt')",
    "timm": "torch.save(timm.create_model('{arch}', pretrained=True).state_dict(), '{arch}.pt')",
    "hf": "AutoModelForImageClassification.from_pretrained('<hub name>').save_pretrained('<folder>')",
}


def mask_file(spec: str) -> Path:
    """The mask file that ``prune.mask_from`` names (see the module docstring)."""
    match = _AT.match(spec)
    path, at = (Path(match.group(1)), int(match.group(2))) if match else (Path(spec), None)
    if path.is_file() and at is None:
        return path
    if not path.is_dir():
        raise ConfigError("prune.mask_from", f"{spec!r}: no such file or folder")
    if at is None and (path / "mask.pt").is_file():
        return path / "mask.pt"
    rounds = sorted(int(p.parent.name[6:]) for p in path.glob("round_[0-9][0-9]*/mask.pt"))
    if not rounds:
        raise ConfigError(
            "prune.mask_from", f"{path} holds no round_XX/mask.pt (a run folder, a round folder or a file)"
        )
    if at is not None and at not in rounds:
        raise ConfigError("prune.mask_from", f"{path} has no round {at}; it has rounds {', '.join(map(str, rounds))}")
    return path / f"round_{(rounds[-1] if at is None else at):02d}" / "mask.pt"


_DIGESTS: dict[tuple[str, int, int], str] = {}


def mask_identity(spec: str) -> str:
    """What the run's identity holds for ``prune.mask_from``: the content hash of the mask file (its path where it
    cannot be read, which :func:`check` then refuses)."""
    try:
        file = mask_file(spec).resolve()
        stat = file.stat()
    except (ConfigError, OSError):
        return spec
    key = (str(file), stat.st_mtime_ns, stat.st_size)
    if key not in _DIGESTS:
        _DIGESTS[key] = "sha256:" + hashlib.sha256(file.read_bytes()).hexdigest()[:16]
    return _DIGESTS[key]


def check(cfg: DictConfig) -> None:
    """Refuse a ``model.weights``, ``model.config`` (hf), ``prune.mask_from`` or ``prune.mask_unmatched`` that cannot
    work, in one line."""
    weights = OmegaConf.select(cfg, "model.weights")
    if weights is not None and not (isinstance(weights, str) and Path(weights).expanduser().exists()):
        how = HOW_TO_SAVE.get(str(cfg.model.get("name")), "torch.save(model.state_dict(), 'weights.pt')")
        raise ConfigError(
            "model.weights",
            f"{weights!r} is not a local file or folder, and nothing is downloaded at run time: save the weights once "
            f"where there is a network, e.g. {how.format(arch=cfg.model.get('arch'))}, and pass model.weights=<file>",
        )
    config = OmegaConf.select(cfg, "model.config") if cfg.model.get("name") == "hf" else None
    if isinstance(config, str) and not Path(config).expanduser().exists():
        raise ConfigError(
            "model.config",
            f"{config!r} is not a local folder or file, and nothing is downloaded at run time: save it once with "
            f"{HOW_TO_SAVE['hf']}, or give the config's keys (model_type, ...)",
        )
    unmatched = OmegaConf.select(cfg, "prune.mask_unmatched")
    if unmatched is not None and unmatched not in UNMATCHED:
        raise ConfigError("prune.mask_unmatched", f"got {unmatched!r}; allowed: null (refuse), refuse, dense")
    spec = OmegaConf.select(cfg, "prune.mask_from")
    if spec is None:
        if unmatched == "dense":
            raise ConfigError(
                "prune.mask_unmatched", "dense says how a prune.mask_from mask is completed; set prune.mask_from"
            )
        if OmegaConf.select(cfg, "prune.mask_from_zeros"):
            raise ConfigError("prune.mask_from_zeros", "reads the file of prune.mask_from, which is not set")
        return
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("prune.mask_from", f"got {spec!r}; allowed: a run folder[@round], a round folder or a file")
    mask_file(spec)
    method = OmegaConf.select(cfg, "prune.method")
    if METHODS.entry(method).has(PRUNES_ONCE):
        allowed = ", ".join(METHODS.with_trait(PRUNES_EVERY_ROUND))
        raise ConfigError(
            "prune.mask_from",
            f"starts round 0 from a given mask; prune.method={method} finds its own (allowed: {allowed})",
        )
    control = OmegaConf.select(cfg, "prune.control")
    if control is not None and control not in START_CONTROLS:
        raise ConfigError(
            "prune.control", f"{control} with prune.mask_from: allowed null, {', '.join(START_CONTROLS)} (redraw it)"
        )
