"""Structured tickets (``channel``, ``2:4``), rewound to an early iteration, with every control: the same run whether
round 0 is shared or each ticket trained first, and a run killed and resumed ends where the uninterrupted one did
(``tests/equivalence.py`` says how). The grid (16 jobs through ``python train.py -m``) is slow: the quick lane
checks structured tickets in test_structured.py and this equivalence on unstructured ones (test_equivalence_rewinds).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.equivalence import CONTROLS, EVAL_EVERY, QUIET, assert_same_run, by_case, kill_and_resume, sweep

pytestmark = pytest.mark.slow  # every test here (the quick lane: see above)


STRUCTURED = [(g, c) for g in ("channel", "2:4") for c in CONTROLS]  # rewound to 6it, on LeNet-300-100


@pytest.fixture(scope="module")
def structured_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[tuple[str, str], Path]]:
    root = tmp_path_factory.mktemp("structured")
    grid = ["prune.rewind=6it", "prune.granularity=channel,2:4", "prune.rate=0.5"]
    sweep(root / "shared", *grid, f"prune.control={','.join(CONTROLS)}", setup=QUIET)
    sweep(root / "alone", "train.share_dense=false", *grid, f"prune.control={','.join(CONTROLS[::-1])}", setup=QUIET)
    found = {variant: by_case(root / variant, "granularity") for variant in ("shared", "alone")}
    assert set(found["shared"]) == set(found["alone"]) == set(STRUCTURED)
    return found


@pytest.mark.parametrize(("granularity", "control"), STRUCTURED)
def test_structured_tickets_and_their_controls_are_the_same_run_whatever_the_path(
    structured_runs, granularity: str, control: str
) -> None:
    assert_same_run(structured_runs["shared"][(granularity, control)], structured_runs["alone"][(granularity, control)])


@pytest.mark.parametrize(("granularity", "control"), [("channel", "shuffle"), ("2:4", "random_prune")])
def test_a_structured_run_killed_and_resumed_ends_where_the_uninterrupted_one_did(
    structured_runs, make_cfg, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, granularity: str, control: str
) -> None:
    overrides = [
        *QUIET,
        "prune.rewind=6it",
        f"prune.granularity={granularity}",
        "prune.rate=0.5",
        f"prune.control={control}",
        f"train.checkpoint_every={EVAL_EVERY}it",
    ]
    run_dir = tmp_path / "runs" / "run"
    kill_and_resume(make_cfg, monkeypatch, overrides, run_dir)
    assert_same_run(run_dir, structured_runs["shared"][(granularity, control)])
