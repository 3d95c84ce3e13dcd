"""``hydra/launcher=slurm`` for real: the request derived from ``hardware`` and checked against the partition, a
sweep that ends when a job died without a result, the pre-emption line that says what submitit will do; then a
one-node SLURM cluster (``tests/slurm_cluster.py``) running ``python train.py -m hydra/launcher=slurm ...``: a CPU
sweep sharing round 0, a DDP job of 2 SLURM tasks, ``scontrol requeue`` and USR2 mid-round resumed bit for bit, a
time limit's warning and a cancelled job that end the sweep with one line.

The quick tests put fakes of ``sinfo``, ``sbatch`` and ``squeue`` on ``PATH``; the cluster's tests need root and
the SLURM packages (``.ci/run`` installs them) and skip with one line without them.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lth.lightning.tracking import fingerprint
from lth.state.artifacts import read_rounds
from tests.conftest import FAST, REPO, run_folders, run_main, subprocess_env
from tests.slurm_cluster import Cluster, cluster_unavailable, start

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

SLURM = ["-m", "hydra/launcher=slurm", "hydra.sweep.dir=sweep"]
SINFO = "debug*|2|(null)|1000|infinite"  # sinfo -h -N -o '%P|%c|%G|%m|%l' of a 2-CPU node without GPUs


def fake_slurm(folder: Path, sinfo: str = SINFO) -> Path:
    """``sinfo`` printing ``sinfo``, ``sbatch`` keeping the script it is given and answering job 42, ``squeue``
    holding no job (every job submitted has already ended), in ``folder``; the log of what was submitted."""
    folder.mkdir()
    submitted = folder / "submitted.sh"
    scripts = {
        "sinfo": f"echo '{sinfo}'",
        "sbatch": f'cat "$1" >> {submitted}; echo "Submitted batch job 42"',
        "squeue": "exit 0",
    }
    for name, body in scripts.items():
        (folder / name).write_text(f"#!/bin/sh\n{body}\n")
        (folder / name).chmod(0o755)
    return submitted


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The fakes on ``PATH``, the launcher's waits shortened, and a deadline: a sweep still waiting after 60 s
    (for jobs that no scheduler holds) fails the test instead of hanging it."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError("the sweep still waits after 60 s")

    submitted = fake_slurm(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{subprocess_env()['PATH']}")
    monkeypatch.setattr("lth.tools.submitit_slurm.GRACE_S", 0.5)
    monkeypatch.setattr("lth.tools.submitit_slurm.POLL_S", 0.1)
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    try:
        yield submitted
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["hardware.threads=8"], "hardware.threads"),  # 8 CPUs a task on 2-CPU nodes: pending forever
        (["hardware=ddp_cpu", "hardware.devices=2", "hardware.threads=2"], "hardware.threads"),  # 2 tasks x 2
        (["hardware.accelerator=gpu", "hardware.devices=1"], "hardware.accelerator"),  # no GPUs in the partition
        (["hydra.launcher.partition=gpu"], "hydra.launcher.partition"),
        (["hardware.threads=1,2"], "hardware"),  # one request (an array) for all the jobs of a sweep
    ],
    ids=["cpus", "ddp-cpus", "gpus", "partition", "swept"],
)
def test_a_request_the_partition_can_never_satisfy_is_one_line_before_anything_is_submitted(
    tmp_path: Path, fakes: Path, overrides: list[str], key: str
) -> None:
    result = run_main(*SLURM, *FAST, *overrides, "prune.rate=0.1,0.2", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {key}: "), line
    assert not fakes.exists() and not (tmp_path / "sweep").exists()  # nothing submitted, no folder left


def test_a_cpu_sweep_asks_no_gpu_and_its_threads_and_jobs_that_died_end_it_in_one_line(
    tmp_path: Path, fakes: Path
) -> None:
    """What the launcher submits under ``hardware=cpu``, and a sweep whose jobs left SLURM's queue without a result
    (``squeue`` holds none, as after ``scancel`` without ``sacct``): it ends, exit 1, one line naming them."""
    args = [*SLURM, *FAST, "hardware=cpu", "hardware.threads=2", "prune.rate=0.1,0.2"]
    result = run_main(*args, cwd=tmp_path)
    script = fakes.read_text()
    assert "#SBATCH --cpus-per-task=2" in script and "gpus" not in script and "gres" not in script
    assert result.returncode == 1, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
    assert line.startswith("error: 2 job(s) of the sweep ended without a result: #0 (SLURM job 42_0: prune.rate=0.1)")
    assert "#1 (SLURM job 42_1: prune.rate=0.2): cancelled, timed out or its node failed (log: " in line
    command = line.partition("; continue the sweep with: ")[2]
    assert command.startswith("python train.py -m hydra/launcher=slurm ") and "prune.rate=0.1,0.2" in command
    assert command.endswith(f"hydra.sweep.dir={tmp_path / 'sweep'} resume=true") or command.endswith(
        "hydra.sweep.dir=sweep resume=true"
    )


def test_submitit_refuses_a_requeue_after_a_time_out_and_the_stop_line_says_so(tmp_path: Path) -> None:
    """submitit's own handler (its numbers: the job's start, ``timeout_min``, the time-outs left): a USR2 within
    min(0.8 x limit, limit - 10 min) is a pre-emption and requeued; later, a time-out, requeued only while
    ``max_num_timeout`` has some left."""
    from submitit.core.job_environment import SignalHandler
    from submitit.core.utils import DelayedSubmission, JobPaths

    from lth.run.signals import Interrupted, submitit_refusal

    def handler(timeout_min: int, max_num_timeout: int, ran_min: float):  # noqa: ANN202
        delayed = DelayedSubmission(print)
        delayed.set_timeout(timeout_min, max_num_timeout)
        owner = SignalHandler(None, JobPaths(tmp_path), delayed)  # type: ignore[arg-type]
        owner._start_time = time.time() - ran_min * 60
        return owner.checkpoint_and_try_requeue

    assert submitit_refusal(handler(60, 0, 10)) is None  # before 48 min: a pre-emption
    assert submitit_refusal(handler(60, 1, 55)) is None  # a time-out, one requeue left
    refusal = submitit_refusal(handler(60, 0, 55))
    assert refusal is not None and "time-out" in refusal and "hydra.launcher.max_num_timeout" in refusal
    assert submitit_refusal(handler(5, 0, 0.1)) is not None  # timeout_min <= 10: a time-out from the first second
    assert submitit_refusal(print) is None  # not submitit's handler
    stop = Interrupted(signal.SIGUSR2, 1, 40)
    line = stop.line("python train.py resume=true", refusal=refusal)
    assert line.startswith("stopped by SIGUSR2 in round 1 at iteration 40; submitit counts it as a time-out")
    assert line.endswith("; continue with: python train.py resume=true") and "requeueing" not in line


# -- a real cluster ---------------------------------------------------------------------------------------------

# 3 rounds of 150 iterations, a checkpoint every 20: long enough to stop mid-round; one torch thread (1 CPU a task);
# batches of 4, so that a round is within one epoch (250 batches): a stop on an epoch's last batch is another matter
RUN = [
    *FAST,
    "train.steps=150it",
    "train.batch_size=4",
    "train.checkpoint_every=20it",
    "hardware.threads=1",
    "logger=csv",
]
SWEEP = [*SLURM, *RUN, "prune.rate=0.1,0.2"]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = cluster_unavailable()
    if reason:
        pytest.skip(reason)
    running = start(tmp_path_factory.mktemp("slurm"))
    try:
        yield running
    finally:
        running.stop()


def submit(cluster: Cluster, *args: str, cwd: Path, deadline: float = 150, during=None) -> subprocess.CompletedProcess:  # noqa: ANN001
    """``python train.py *args`` from ``cwd`` against ``cluster``; ``during()`` is called while it runs. Past
    ``deadline`` seconds its jobs are cancelled and it is killed (the test fails)."""
    with open(cwd / "sweep.out", "w") as out, open(cwd / "sweep.err", "w") as err:
        process = subprocess.Popen(
            [sys.executable, str(REPO / "train.py"), *args],
            cwd=cwd,
            env=subprocess_env(**cluster.env),
            stdout=out,
            stderr=err,
        )
    end = time.monotonic() + deadline
    try:
        while process.poll() is None:
            if time.monotonic() > end:
                raise AssertionError(f"no end after {deadline} s: {(cwd / 'sweep.err').read_text()[-2000:]}")
            if during is not None:
                during()
            time.sleep(0.2)
    finally:
        if process.poll() is None:
            cluster.cancel_all()
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(
        args, process.returncode, (cwd / "sweep.out").read_text(), (cwd / "sweep.err").read_text()
    )


def job_logs(sweep: Path, suffix: str) -> str:
    """The text of every job's submitit log ``*_log.<suffix>`` (``out``, ``err``) of the sweep."""
    return "".join(p.read_text(errors="replace") for p in sorted((sweep / ".submitit").rglob(f"*_log.{suffix}")))


def config(checkpoint: Path) -> str:
    """The ``config.yaml`` of the run folder of a round's ``checkpoint``."""
    return (checkpoint.parent.parent / "config.yaml").read_text()


def rate(job: Path) -> float:
    return float(OmegaConf.load(job / "config.yaml").prune.rate)


def assert_same_jobs(sweep: Path, reference: Path) -> None:
    """Each job of ``sweep`` has the rounds (all columns but train_seconds) and masks of its ``reference`` twin."""
    twins = {rate(job): job for job in run_folders(reference)}
    jobs = run_folders(sweep)
    assert sorted(rate(job) for job in jobs) == sorted(twins)
    for job in jobs:
        twin = twins[rate(job)]
        rows = [
            [{k: v for k, v in r.items() if k != "train_seconds"} for r in read_rounds(j / "rounds.csv")]
            for j in (job, twin)
        ]
        assert rows[0] == rows[1] and len(rows[0]) == 3
        for k in range(3):
            a, b = (torch.load(j / f"round_{k:02d}" / "mask.pt") for j in (job, twin))
            assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


@pytest.fixture(scope="module")
def reference(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """The CPU sweep, uninterrupted, through the cluster."""
    cwd = tmp_path_factory.mktemp("reference")
    return cwd / "sweep", submit(cluster, *SWEEP, cwd=cwd)


@pytest.mark.slow
def test_a_cpu_sweep_on_slurm_shares_round_0(reference: tuple[Path, subprocess.CompletedProcess]) -> None:
    sweep, result = reference
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = run_folders(sweep)
    assert len(jobs) == 2 and len([j for j in jobs if (j / "logs" / "round_00").is_dir()]) == 1  # one trained it
    assert read_rounds(jobs[0] / "rounds.csv")[0] == read_rounds(jobs[1] / "rounds.csv")[0]
    (script,) = {p.read_text() for p in (sweep / ".submitit").rglob("*_submission.sh")}
    assert "#SBATCH --cpus-per-task=1" in script and "gpu" not in script
    assert (sweep / "rounds.csv").is_file() and (sweep / "report.md").is_file()


@pytest.mark.slow
def test_the_cluster_refuses_8_cpus_a_task_on_its_2_cpu_node_before_submitting(
    cluster: Cluster, tmp_path: Path
) -> None:
    before = set(cluster.jobs())  # an earlier test's job may still be ending
    result = submit(cluster, *SLURM, *FAST, "hardware.threads=8", "seed=0,1", cwd=tmp_path, deadline=60)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: hardware.threads: 1 task(s) a node x 8 CPUs") and "partition debug have 2" in line
    assert set(cluster.jobs()) <= before and not (tmp_path / "sweep").exists()  # nothing submitted, no folder


@pytest.mark.slow
def test_a_ddp_job_runs_as_two_slurm_tasks_with_one_mask(cluster: Cluster, tmp_path: Path) -> None:
    ddp = ["hardware=ddp_cpu", "hardware.devices=2", "hardware.rank_report=true"]
    result = submit(cluster, *SLURM, *FAST, *ddp, "seed=0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (job,) = run_folders(tmp_path / "sweep")
    assert (
        "#SBATCH --ntasks-per-node=2" in next((tmp_path / "sweep" / ".submitit").rglob("*_submission.sh")).read_text()
    )
    reports = {
        int(p.stem.split("_")[1]): [__import__("json").loads(x) for x in p.read_text().splitlines()]
        for p in (job / "ranks").glob("rank_*.jsonl")
    }
    assert sorted(reports) == [0, 1]
    saved = [fingerprint(torch.load(job / f"round_{k:02d}" / "mask.pt")) for k in range(3)]
    assert [r["mask"] for r in reports[0]] == [r["mask"] for r in reports[1]] == saved
    assert all(r["world_size"] == 2 for r in reports[0])


@pytest.mark.slow
def test_scontrol_requeue_and_usr2_mid_round_resume_bit_for_bit(
    cluster: Cluster, reference: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    """One job of the sweep is requeued by ``scontrol requeue`` (SIGTERM, then SLURM requeues it), the other gets
    submitit's USR2 (a pre-emption: submitit requeues it); both continue by themselves, as the uninterrupted sweep."""
    assert reference[1].returncode == 0
    actions = [["scontrol", "requeue"], ["scancel", "--signal=USR2"]]
    signalled: dict[Path, list[str]] = {}

    def interrupt() -> None:
        for ckpt in (tmp_path / "sweep").glob("*/round_01/last.ckpt"):
            job = ckpt.parent.parent
            if job not in signalled and actions:
                task = {0.1: "_0", 0.2: "_1"}[rate(job)]
                (array,) = {i.partition("_")[0] for i in cluster.jobs()} or {None}
                if array is not None:
                    signalled[job] = [*actions.pop(0), f"{array}{task}"]
                    cluster.run(*signalled[job])

    result = submit(cluster, *SWEEP, cwd=tmp_path, deadline=200, during=interrupt)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(signalled) == 2, signalled
    err = job_logs(tmp_path / "sweep", "err")
    assert re.search(r"stopped by SIGTERM in round \d at iteration \d+; continue with: ", err), err[-3000:]
    assert re.search(r"stopped by SIGUSR2 in round \d at iteration \d+; requeueing the SLURM job", err), err[-3000:]
    assert job_logs(tmp_path / "sweep", "out").count("resume: requeued SLURM job (restart 1)") == 2
    assert_same_jobs(tmp_path / "sweep", reference[0])


@pytest.mark.slow
def test_a_time_limit_warning_and_a_cancelled_job_end_the_sweep_in_one_line(cluster: Cluster, tmp_path: Path) -> None:
    """A 2-minute limit, asked with submitit's warning ``signal_delay_s`` before it (the request says both). The
    warning is the USR2 that SLURM sends the job's steps; here ``scancel --signal=USR2`` sends it as soon as job #0
    trains, instead of waiting a minute for slurmctld's 30 s timer. Under a limit this short submitit counts any USR2
    as a time-out (test_submitit_refuses_a_requeue_after_a_time_out_and_the_stop_line_says_so): with no requeue
    left, the job says so. Job #1 is cancelled once it trains. Without sacct submitit would wait for both forever."""
    limit = ["hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=40", "train.steps=1000000it"]
    sent: dict[str, str] = {}

    def warn_and_cancel() -> None:  # job #0 (seed=0) warned, job #1 (seed=1) cancelled, each once it trains
        for ckpt in (tmp_path / "sweep").glob("*/round_00/last.ckpt"):
            task = "_" + re.search(r"^seed: (\d)$", config(ckpt), re.M).group(1)
            jobs = [job for job in cluster.jobs() if job.endswith(task)] if task not in sent else []
            if jobs:
                sent[task] = jobs[0]
                cluster.run("scancel", *(["--signal=USR2"] if task == "_0" else []), jobs[0])

    run = [*FAST, "hardware.threads=1", "train.checkpoint_every=20it", *limit, "seed=0,1"]
    result = submit(cluster, *SLURM, *run, cwd=tmp_path, deadline=120, during=warn_and_cancel)
    assert result.returncode == 1, result.stderr[-3000:]
    (script,) = {p.read_text() for p in (tmp_path / "sweep" / ".submitit").rglob("*_submission.sh")}
    assert "#SBATCH --time=2\n" in script and "#SBATCH --signal=USR2@40\n" in script, script
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
    assert line.startswith(f"error: 2 job(s) of the sweep ended without a result: #0 (SLURM job {sent['_0']}: "), line
    assert re.search(r"stopped by SIGUSR2 in round 0 at iteration \d+; submitit counts it as a time-out", line), line
    assert f"(SLURM job {sent['_1']}: seed=1): stopped by SIGTERM in round 0 at iteration " in line, line
    assert line.endswith("hydra.sweep.dir=sweep resume=true")
