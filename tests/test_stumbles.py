"""The command line's small stumbles, through ``train.py`` as a user types it: a typo in a key's group is answered
with the closest key, and ``model.weights`` is set alike, with or without ``+``, whichever model is chosen."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lth.run.build import build_model
from tests.conftest import FAST, run_folders, run_main, typed


@pytest.mark.parametrize(
    ("typed_key", "answer"),
    [
        ("prun.rate=0.2", "error: prun.rate: no such key: the config has no prun; did you mean prune.rate?"),
        ("optim.optimizr.lr=0.1", "the config has no optim.optimizr; did you mean optim.optimizer.lr?"),
        ("+prun.rate=0.2", "did you mean prune.rate?"),
        ("prune.rat=0.2", "did you mean prune.rate?"),  # as before: a typo in the leaf
    ],
)
def test_a_typo_in_a_keys_group_gets_the_closest_key(tmp_path: Path, typed_key: str, answer: str) -> None:
    result = run_main(*FAST, typed_key, "paths.output_dir=out", cwd=tmp_path)
    assert result.returncode == 2 and answer in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("model", "plus"), [("lenet300", ""), ("custom", "+")])  # a zoo model took only +model.weights
def test_model_weights_is_set_alike_with_or_without_plus_on_any_model(make_cfg, tmp_path: Path, model, plus) -> None:
    donor = build_model(typed(make_cfg("seed=7"))).state_dict()
    torch.save(donor, tmp_path / "pretrained.pt")
    chosen = [f"model={model}", *(["model._target_=lth.models.LeNet300100"] if model == "custom" else [])]
    args = [*FAST, *chosen, f"{plus}model.weights={tmp_path / 'pretrained.pt'}", "prune.rounds=0"]
    result = run_main(*args, "paths.output_dir=out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = run_folders(tmp_path / "out" / "runs")
    rewind = torch.load(run / "rewind.pt")
    assert all(torch.equal(rewind[f"model.{name}"], value) for name, value in donor.items())
