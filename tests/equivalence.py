"""Runs the config says are the same experiment give the same numbers, bit for bit, whatever the path.

Every rewind mode (``init``, a Step in ``it``, a Step in ``ep``, ``lr``, ``none``) is crossed with every control
(none, ``reinit``, ``random_prune``, ``shuffle``; controls need a rewind to weights), with a step schedule so the
learning rate is visible. Through ``python train.py -m``, the same jobs run twice:

- ``shared``: round 0 taken from the shared dense store, each ticket trained before its controls;
- ``alone``: ``train.share_dense=false``, the controls first, each triggering its ticket's training.

Their ``rounds.csv`` (every column but ``train_seconds``) and masks must be equal; the learning rate of every
logged step must be the closed form of its rewind mode, written out here; and a run killed mid-round and at a
round boundary, then resumed, must end where the uninterrupted run did. The structured granularities (``channel``,
``2:4``) get the same two checks, rewound to an early iteration, with every control.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lth.run.artifacts import read_rounds
from tests.conftest import run_folders, run_train

TOTAL, EVAL_EVERY, EPOCH, BASE_LR, MILESTONE, GAMMA = 20, 4, 10, 0.05, 12, 0.1
SETUP = [
    "dataset=synthetic",
    "train.batch_size=100",  # 1000 training images: an epoch is 10 iterations
    f"train.steps={TOTAL}it",
    f"train.eval_every={EVAL_EVERY}it",
    "prune.rounds=2",
    "optim=sgd",
    f"optim.optimizer.lr={BASE_LR}",
    "optim.schedule.name=step",
    f"optim.schedule.milestones=[{MILESTONE}it]",
    f"optim.schedule.gamma={GAMMA}",
    "logger=csv",
    "hardware=cpu",
    "hardware.threads=1",
    "hardware.rank_report=true",  # each fit's first-epoch samples, for the data order after a rewind
]
TO_WEIGHTS = ["init", "6it", "1ep"]  # rewinds to weights, which controls can use; 6 is not a multiple of 4
CONTROLS = ["null", "reinit", "random_prune", "shuffle"]
CASES = [(r, c) for r in TO_WEIGHTS for c in CONTROLS] + [("lr", "null"), ("none", "null")]


def start_of(rewind: str, round_index: int) -> int:
    """Where a round starts on the iteration axis: a rewind to k starts pruned rounds at k, the rest at 0."""
    if round_index == 0:
        return 0
    return {"init": 0, "6it": 6, "1ep": EPOCH, "lr": 0, "none": 0}[rewind]


def schedule_position(rewind: str, round_index: int, batch: int) -> int:
    """The iteration of round 0's schedule at which batch ``batch`` (from 0) of a round is trained."""
    if round_index > 0 and rewind == "none":
        return TOTAL + batch  # fine-tuning stays at the end of the schedule
    return start_of(rewind, round_index) + batch


def closed_form_lr(position: int) -> float:
    return BASE_LR * (GAMMA if position >= MILESTONE else 1.0)


def sweep(out: Path, *args: str) -> None:
    result = run_train("-m", *SETUP, f"hydra.sweep.dir={out}", *args, cwd=out.parent, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def by_case(folder: Path, key: str = "rewind") -> dict[tuple[str, str], Path]:
    """The runs under ``folder`` by (``prune.<key>``, ``prune.control`` or ``"null"``)."""
    runs = {}
    for run in run_folders(folder):
        prune = OmegaConf.load(run / "config.yaml").prune
        runs[(str(prune[key]), str(prune.control) if prune.control else "null")] = run
    return runs


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


def comparable(run: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "train_seconds"} for row in read_rounds(run / "rounds.csv")]


def masks(run: Path) -> list[dict[str, torch.Tensor]]:
    return [torch.load(p) for p in sorted(run.glob("round_*/mask.pt"))]


def assert_same_run(a: Path, b: Path) -> None:
    assert comparable(a) == comparable(b)
    for x, y in zip(masks(a), masks(b), strict=True):
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.parametrize(("rewind", "control"), CASES)
def test_a_shared_round_0_and_a_ticket_trained_first_give_the_same_run(runs, rewind: str, control: str) -> None:
    assert_same_run(runs["shared"][(rewind, control)], runs["alone"][(rewind, control)])


def logged_steps(run: Path, round_index: int, column: str) -> list[tuple[int, float]]:
    with open(run / "logs" / f"round_{round_index:02d}" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    name = next(c for c in rows[0] if c.startswith(column))
    return [(int(r["step"]), float(r[name])) for r in rows if r[name]]


LATER = [("later", "1ep", "null"), ("later", "none", "null")]  # round 0 from the store, trained by another job


@pytest.mark.parametrize(
    ("variant", "rewind", "control"), [(v, r, c) for v in ("shared", "alone") for r, c in CASES] + LATER
)
def test_every_logged_learning_rate_is_the_closed_form_of_its_rewind_mode(runs, variant, rewind, control) -> None:
    run = runs[variant][(rewind, control)]
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


def test_the_reinit_control_is_a_fresh_draw_under_the_tickets_mask_trained_from_k(runs) -> None:
    from lth.run.build import build_model

    ticket, reinit = runs["shared"][("6it", "null")], runs["shared"][("6it", "reinit")]
    cfg = OmegaConf.load(reinit / "config.yaml")
    draw = build_model(cfg, init_stream="reinit").state_dict()
    rewind = torch.load(reinit / "rewind.pt")
    assert rewind.keys() == {f"model.{k}" for k in draw}
    assert all(torch.equal(rewind[f"model.{k}"], v) for k, v in draw.items())
    assert comparable(reinit)[0] == comparable(ticket)[0]  # round 0 is the dense network, the ticket's
    for a, b in zip(masks(reinit), masks(ticket), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert comparable(reinit)[1] != comparable(ticket)[1]


class Killed(BaseException):
    """Stands for a SIGKILL at a chosen point (raised past every ``except Exception``)."""


@pytest.mark.parametrize(("rewind", "control"), CASES)
def test_a_run_killed_mid_round_and_at_a_round_boundary_resumes_to_the_same_run(
    runs, make_cfg, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, rewind: str, control: str
) -> None:
    overrides = [*SETUP, f"prune.rewind={rewind}", f"prune.control={control}", f"train.checkpoint_every={EVAL_EVERY}it"]
    run_dir = tmp_path / "runs" / "run"
    kill_and_resume(make_cfg, monkeypatch, overrides, run_dir)
    assert_same_run(run_dir, runs["shared"][(rewind, control)])


def kill_and_resume(make_cfg, monkeypatch: pytest.MonkeyPatch, overrides: list[str], run_dir: Path) -> None:
    """Run ``overrides`` into ``run_dir``, killed after round 0 and again mid-round 1, resumed to the end."""
    import lth.run.loop
    from lth.run.checkpoints import RoundCheckpoint
    from lth.run.loop import train

    write_rounds = lth.run.loop.write_rounds

    def killed_after_round_0(path, rows) -> None:
        write_rounds(path, rows)
        if len(rows) == 1 and path.parent == run_dir:
            raise Killed

    monkeypatch.setattr(lth.run.loop, "write_rounds", killed_after_round_0)
    with pytest.raises(Killed):
        train(make_cfg(*overrides, fast=False), run_dir=run_dir)
    assert len(read_rounds(run_dir / "rounds.csv")) == 1
    monkeypatch.setattr(lth.run.loop, "write_rounds", write_rounds)

    save = RoundCheckpoint.on_validation_end

    def killed_mid_round_1(self, trainer, pl_module) -> None:
        save(self, trainer, pl_module)
        if self.path.parent == run_dir / "round_01" and trainer.global_step < trainer.max_steps:
            raise Killed

    monkeypatch.setattr(RoundCheckpoint, "on_validation_end", killed_mid_round_1)
    with pytest.raises(Killed):
        train(make_cfg(*overrides, "resume=true", fast=False), run_dir=run_dir)
    assert len(read_rounds(run_dir / "rounds.csv")) == 1 and (run_dir / "round_01" / "last.ckpt").is_file()
    monkeypatch.setattr(RoundCheckpoint, "on_validation_end", save)

    train(make_cfg(*overrides, "resume=true", fast=False), run_dir=run_dir)


STRUCTURED = [(g, c) for g in ("channel", "2:4") for c in CONTROLS]  # rewound to 6it, on LeNet-300-100


@pytest.fixture(scope="module")
def structured_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[tuple[str, str], Path]]:
    root = tmp_path_factory.mktemp("structured")
    grid = ["prune.rewind=6it", "prune.granularity=channel,2:4", "prune.rate=0.5"]
    sweep(root / "shared", *grid, f"prune.control={','.join(CONTROLS)}")
    sweep(root / "alone", "train.share_dense=false", *grid, f"prune.control={','.join(CONTROLS[::-1])}")
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
        *SETUP,
        "prune.rewind=6it",
        f"prune.granularity={granularity}",
        "prune.rate=0.5",
        f"prune.control={control}",
        f"train.checkpoint_every={EVAL_EVERY}it",
    ]
    run_dir = tmp_path / "runs" / "run"
    kill_and_resume(make_cfg, monkeypatch, overrides, run_dir)
    assert_same_run(run_dir, structured_runs["shared"][(granularity, control)])


# -- prune.method: every way of finding a ticket, with every control ---------------------------------------------
METHODS = ["magnitude", "early_bird", "snip", "grasp", "synflow", "magnitude_init", "random"]
ONE_SHOT = ["prune.rounds=1", "prune.target_sparsity=0.9"]
ONE_SHOT += ["prune.early_bird.window=2", "prune.early_bird.epsilon=0.005"]  # drawn at iteration 16 of 20
METHOD_CASES = [(m, c) for m in METHODS for c in CONTROLS]


@pytest.fixture(scope="module")
def method_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[tuple[str, str], Path]]:
    root = tmp_path_factory.mktemp("methods")
    sweep(root / "shared", *ONE_SHOT, f"prune.method={','.join(METHODS)}", f"prune.control={','.join(CONTROLS)}")
    alone = ["train.share_dense=false", f"prune.control={','.join(CONTROLS[::-1])}"]
    sweep(root / "alone", *ONE_SHOT, *alone, f"prune.method={','.join(METHODS[::-1])}")
    found = {"shared": by_case(root / "shared", "method"), "alone": by_case(root / "alone", "method")}
    assert set(found["shared"]) == set(found["alone"]) == set(METHOD_CASES)
    return found


@pytest.mark.parametrize(("method", "control"), METHOD_CASES)
def test_every_method_with_every_control_gives_the_same_run_whichever_trains_first(method_runs, method, control):
    assert_same_run(method_runs["shared"][(method, control)], method_runs["alone"][(method, control)])
    if control != "null":  # the control trains on its ticket's masks, changed as the control says
        ticket = masks(method_runs["shared"][(method, "null")])[1]
        mask = masks(method_runs["shared"][(method, control)])[1]
        same = all(torch.equal(ticket[k], mask[k]) for k in ticket)
        assert same == (control == "reinit")
        assert [int(m.sum()) for m in ticket.values()] == [int(m.sum()) for m in mask.values()]


def test_the_early_bird_round_0_stops_where_it_draws_the_ticket(method_runs) -> None:
    run = method_runs["shared"][("early_bird", "null")]
    drawn = json.loads((run / "round_00" / "early_bird.json").read_text())["drawn_iteration"]
    assert 0 < drawn < TOTAL and read_rounds(run / "rounds.csv")[0]["train_iterations"] == drawn


@pytest.mark.parametrize("method", METHODS)
def test_every_method_killed_mid_round_resumes_to_the_same_run(
    method_runs, make_cfg, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, method: str
) -> None:
    from lth.run.checkpoints import RoundCheckpoint
    from lth.run.loop import train

    overrides = [*SETUP, *ONE_SHOT, f"prune.method={method}", f"train.checkpoint_every={EVAL_EVERY}it"]
    run_dir = tmp_path / "runs" / "run"
    save = RoundCheckpoint.on_validation_end
    killed = []

    def killed_mid_round(self, trainer, pl_module) -> None:  # once in round 0 (after 8 it), once in round 1
        save(self, trainer, pl_module)
        folder = self.path.parent.name
        if folder not in killed and trainer.global_step == 2 * EVAL_EVERY:
            killed.append(folder)
            raise Killed

    monkeypatch.setattr(RoundCheckpoint, "on_validation_end", killed_mid_round)
    with pytest.raises(Killed):
        train(make_cfg(*overrides, fast=False), run_dir=run_dir)
    with pytest.raises(Killed):
        train(make_cfg(*overrides, "resume=true", fast=False), run_dir=run_dir)
    train(make_cfg(*overrides, "resume=true", fast=False), run_dir=run_dir)
    assert killed == ["round_00", "round_01"]
    assert_same_run(run_dir, method_runs["alone"][(method, "null")])


def test_a_transferred_ticket_and_its_random_masks_are_the_same_run_shared_alone_and_resumed(
    make_cfg, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """prune.mask_from: round 0 starts from another run's mask, so it never comes from (or goes to) the dense store
    of the runs without one; the same whether round 0 is shared, trained alone, or killed mid-round and resumed."""
    from lth.run.checkpoints import RoundCheckpoint
    from lth.run.loop import train

    source = Path(train(make_cfg("prune.rounds=1"), run_dir=tmp_path / "source")["run_dir"])
    moved = ["dataset.source.seed=5", f"prune.mask_from={source}", "prune.rounds=1", "train.checkpoint_every=10it"]
    done = {}
    for variant, extra in (("shared", []), ("alone", ["train.share_dense=false"])):
        for control in ("null", "random_prune"):
            cfg = make_cfg(*moved, *extra, f"prune.control={control}")
            done[(variant, control)] = Path(train(cfg, run_dir=tmp_path / variant / control)["run_dir"])
    run_dir = tmp_path / "killed" / "random_prune"
    save = RoundCheckpoint.on_validation_end

    def killed_mid_round_0(self, trainer, pl_module) -> None:
        save(self, trainer, pl_module)
        if self.path.parent == run_dir / "round_00" and trainer.global_step < trainer.max_steps:
            raise Killed

    monkeypatch.setattr(RoundCheckpoint, "on_validation_end", killed_mid_round_0)
    with pytest.raises(Killed):
        train(make_cfg(*moved, "prune.control=random_prune"), run_dir=run_dir)
    monkeypatch.setattr(RoundCheckpoint, "on_validation_end", save)
    train(make_cfg(*moved, "prune.control=random_prune", "resume=true"), run_dir=run_dir)
    for control in ("null", "random_prune"):
        assert_same_run(done[("shared", control)], done[("alone", control)])
    assert_same_run(run_dir, done[("shared", "random_prune")])
    ticket, random = masks(done[("shared", "null")]), masks(done[("shared", "random_prune")])
    assert comparable(done[("shared", "null")])[0] != comparable(done[("shared", "random_prune")])[0]
    assert all(int(ticket[0][k].sum()) == int(random[0][k].sum()) for k in ticket[0])
