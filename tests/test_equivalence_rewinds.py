"""Every rewind mode crossed with every control gives the same run, bit for bit, whether round 0 is shared or each
ticket trained first (``tests/equivalence.py`` says how); every logged learning rate is the closed form of its
rewind mode, every round is evaluated at the same points of one iteration axis, a rewind to k continues round 0's
data order from k, and a run killed mid-round and at a round boundary resumes to the same run.

The full grid (``runs``: 34 jobs through ``python train.py -m``) is slow; the quick lane checks one case of it the
same ways (``one_case``: a rewind to an iteration between evaluations, with a control that trains its ticket).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lth.state.artifacts import read_rounds
from tests.conftest import run_folders, typed
from tests.equivalence import (
    CASES,
    CONTROLS,
    EVAL_EVERY,
    SETUP,
    TO_WEIGHTS,
    TOTAL,
    assert_same_run,
    by_case,
    closed_form_lr,
    comparable,
    kill_and_resume,
    logged_steps,
    masks,
    schedule_position,
    start_of,
    sweep,
)

slow = pytest.mark.slow
ONE_CASE = ("6it", "random_prune")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[tuple[str, str], Path]]:
    root = tmp_path_factory.mktemp("equivalence")
    controls = ",".join(CONTROLS)
    sweep(root / "shared", f"prune.rewind={','.join(TO_WEIGHTS)}", f"prune.control={controls}")
    sweep(root / "shared", "prune.rewind=lr,none")
    sweep(root / "later", "prune.rewind=1ep,none", "prune.rate=0.2,0.3")  # rate 0.3 takes round 0 from the store
    alone = ["train.share_dense=false"]
    sweep(root / "alone", *alone, f"prune.rewind={','.join(TO_WEIGHTS)}", f"prune.control={','.join(CONTROLS[::-1])}")
    sweep(root / "alone", *alone, "prune.rewind=lr,none")
    found = {"shared": by_case(root / "shared"), "alone": by_case(root / "alone")}
    found["later"] = {
        (str(OmegaConf.load(r / "config.yaml").prune.rewind), "null"): r
        for r in run_folders(root / "later")
        if OmegaConf.load(r / "config.yaml").prune.rate == 0.3
    }
    assert set(found["shared"]) == set(found["alone"]) == set(CASES)
    return found


@pytest.fixture(scope="module")
def one_case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[tuple[str, str], Path]]:
    """ONE_CASE and its ticket, shared and alone, as ``runs`` runs them."""
    root = tmp_path_factory.mktemp("one_case")
    rewind, control = ONE_CASE
    sweep(root / "shared", f"prune.rewind={rewind}", f"prune.control=null,{control}")
    sweep(root / "alone", "train.share_dense=false", f"prune.rewind={rewind}", f"prune.control={control},null")
    found = {"shared": by_case(root / "shared"), "alone": by_case(root / "alone")}
    assert set(found["shared"]) == set(found["alone"]) == {(rewind, "null"), ONE_CASE}
    return found


@pytest.mark.parametrize("variant", ["shared", "alone"])
def test_one_case_is_the_same_run_shared_and_alone_with_closed_form_learning_rates(one_case, variant: str) -> None:
    for case in ((ONE_CASE[0], "null"), ONE_CASE):
        assert_same_run(one_case["shared"][case], one_case["alone"][case])
        assert_closed_form_learning_rates(one_case[variant][case], variant, case[0])


def test_one_case_killed_mid_round_and_at_a_round_boundary_resumes_to_the_same_run(
    one_case, make_cfg, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rewind, control = ONE_CASE
    overrides = [*SETUP, f"prune.rewind={rewind}", f"prune.control={control}", f"train.checkpoint_every={EVAL_EVERY}it"]
    run_dir = tmp_path / "runs" / "run"
    kill_and_resume(make_cfg, monkeypatch, overrides, run_dir)
    assert_same_run(run_dir, one_case["shared"][ONE_CASE])


@slow
@pytest.mark.parametrize(("rewind", "control"), CASES)
def test_a_shared_round_0_and_a_ticket_trained_first_give_the_same_run(runs, rewind: str, control: str) -> None:
    assert_same_run(runs["shared"][(rewind, control)], runs["alone"][(rewind, control)])


LATER = [("later", "1ep", "null"), ("later", "none", "null")]  # round 0 from the store, trained by another job


@slow
@pytest.mark.parametrize(
    ("variant", "rewind", "control"), [(v, r, c) for v in ("shared", "alone") for r, c in CASES] + LATER
)
def test_every_logged_learning_rate_is_the_closed_form_of_its_rewind_mode(runs, variant, rewind, control) -> None:
    assert_closed_form_learning_rates(runs[variant][(rewind, control)], variant, rewind)


def assert_closed_form_learning_rates(run: Path, variant: str, rewind: str) -> None:
    trained = [k for k in range(3) if (run / "logs" / f"round_{k:02d}" / "metrics.csv").is_file()]
    assert trained == {"alone": [0, 1, 2], "later": [1, 2]}.get(variant, trained) and trained[-2:] == [1, 2]
    for round_index in trained:  # a round 0 taken from the store was logged by the job that trained it
        logged = logged_steps(run, round_index, "lr-")
        start = start_of(rewind, round_index)
        # the rate of each logged batch, at the iteration it trains on the axis: start + its index in the round + 1
        assert [step for step, _ in logged] == list(range(start + 2, TOTAL + 1, 2))
        for step, lr in logged:
            batch = step - start - 1
            assert lr == pytest.approx(closed_form_lr(schedule_position(rewind, round_index, batch)), rel=1e-9), (
                round_index,
                step,
            )


@slow
@pytest.mark.parametrize(("rewind", "control"), CASES)
def test_every_round_is_evaluated_at_the_same_points_of_one_iteration_axis(runs, rewind: str, control: str) -> None:
    run = runs["shared"][(rewind, control)]
    rows = read_rounds(run / "rounds.csv")
    for row in rows[1:] + read_rounds(runs["alone"][(rewind, control)] / "rounds.csv")[:1]:
        run = run if row["round"] else runs["alone"][(rewind, control)]  # round 0 trained here
        start = start_of(rewind, row["round"])
        evaluated = [step for step, _ in logged_steps(run, row["round"], "val_loss")]  # logged on the axis
        assert evaluated == [i for i in range(start + 1, TOTAL + 1) if i % EVAL_EVERY == 0 or i == TOTAL]
        assert row["early_stop_iteration"] in evaluated


@slow
def test_a_round_rewound_to_k_continues_round_0s_data_order_from_k(runs) -> None:
    fits = {}
    for variant in ("alone", "shared"):  # one line per fit: every round of "alone", and the same again
        path = runs[variant][("6it", "random_prune")] / "ranks" / "rank_0.jsonl"
        fits[variant] = [json.loads(line) for line in path.read_text().splitlines()]
    round0, *later = fits["alone"]
    assert [f["round"] for f in fits["alone"]] == [0, 1, 2] and [f["round"] for f in fits["shared"]] == [1, 2]
    assert len(round0["samples"]) == 1000  # the first epoch: 10 batches
    for fit in later + fits["shared"]:
        assert fit["samples"] == round0["samples"][6 * 100 :]  # batches 6..9 of epoch 0, 100 images each


@slow
def test_the_reinit_control_is_a_fresh_draw_under_the_tickets_mask_trained_from_k(runs) -> None:
    from lth.run.build import build_model

    ticket, reinit = runs["shared"][("6it", "null")], runs["shared"][("6it", "reinit")]
    cfg = OmegaConf.load(reinit / "config.yaml")
    draw = build_model(typed(cfg), init_stream="reinit").state_dict()
    rewind = torch.load(reinit / "rewind.pt")
    assert rewind.keys() == {f"model.{k}" for k in draw}
    assert all(torch.equal(rewind[f"model.{k}"], v) for k, v in draw.items())
    assert comparable(reinit)[0] == comparable(ticket)[0]  # round 0 is the dense network, the ticket's
    for a, b in zip(masks(reinit), masks(ticket), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert comparable(reinit)[1] != comparable(ticket)[1]


@slow
@pytest.mark.parametrize(("rewind", "control"), CASES)
def test_a_run_killed_mid_round_and_at_a_round_boundary_resumes_to_the_same_run(
    runs, make_cfg, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, rewind: str, control: str
) -> None:
    overrides = [*SETUP, f"prune.rewind={rewind}", f"prune.control={control}", f"train.checkpoint_every={EVAL_EVERY}it"]
    run_dir = tmp_path / "runs" / "run"
    kill_and_resume(make_cfg, monkeypatch, overrides, run_dir)
    assert_same_run(run_dir, runs["shared"][(rewind, control)])
