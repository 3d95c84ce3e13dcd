"""``hydra/launcher=slurm``: submitit's SLURM launcher, with a request derived from ``hardware`` and checked against
the partition before anything is submitted, and a sweep that ends when a job died without a result.

- **The request.** ``gpus_per_node`` and ``cpus_per_task`` left null (``conf/hydra/launcher/slurm.yaml``) come
  from ``hardware``: ``hardware.devices`` GPUs a node on GPU hardware (``accelerator=gpu``; ``auto`` where the
  partition's nodes have GPUs), none on a CPU; ``hardware.threads`` CPUs a task (SLURM's default, one, when it is
  null). A value set on ``hydra.launcher`` wins. One request serves every job of the sweep (submitit submits one
  array), so the ``hardware`` keys must not differ between its jobs.
- **The partition** (``hydra.launcher.partition``, else the default one) is read with ``sinfo``: a request that no
  node of it can ever satisfy (more nodes, CPUs, GPUs or memory than it has, a time limit above its own) is one
  line, exit 2, before anything is submitted or written; SLURM would keep such a job pending forever
  (``Reason=PartitionConfig``) while the sweep waits.
- **Waiting.** submitit learns that a job ended from its result file, or from ``sacct``; without an accounting
  database a job that ends without writing its result (``scancel``, a node failure, a job that stopped by a signal
  and was not requeued) stays ``UNKNOWN``, and the sweep would wait forever. Here the launcher waits for the
  results itself and asks ``squeue`` which jobs SLURM still holds: one that is gone, with no result
  :data:`GRACE_S` later, is one line (which job, its last line, and the command that continues the sweep with
  ``resume=true``), and the sweep ends with exit code :data:`DIED` once the other jobs are done.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as PluginLauncher
from omegaconf import OmegaConf

from lth.core.errors import ConfigError
from lth.state.artifacts import unmake_sweep_folder

BAD_CONFIG, DIED = 2, 1  # train.py's exit code of a refused config; a sweep with a job that ended without a result
GRACE_S = 10.0  # a job gone from squeue may still be writing its result file (a slow shared file system)
POLL_S = 2.0  # how often the result files are looked at
SQUEUE_MAX_S = 60.0  # the longest time between two questions to squeue


@dataclass(frozen=True)
class Partition:
    """What the largest node of a partition offers, as ``sinfo`` says: CPUs, GPUs, memory (MB), the node count,
    and the partition's time limit in minutes (None: none)."""

    name: str
    nodes: int
    cpus: int
    gpus: int
    memory_mb: int
    max_minutes: int | None


def _minutes(limit: str) -> int | None:
    """``sinfo``'s ``%l`` (``infinite``, ``30:00``, ``1-00:00:00``, ``2:00:00``) in minutes."""
    if limit in ("infinite", "UNLIMITED", "n/a"):
        return None
    days, _, clock = limit.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    hours, minutes, seconds = ([0] * (3 - len(parts)) + parts) if len(parts) > 1 else (0, parts[0], 0)
    return (int(days or 0) * 24 + hours) * 60 + minutes + (seconds > 0)


def _gpus(gres: str) -> int:
    """GPUs in ``sinfo``'s ``%G`` (``gpu:4``, ``gpu:a100:4(S:0-1)``, ``(null)``)."""
    return sum(int(m.group(1)) for m in re.finditer(r"gpu(?::[^:,(]+)?:(\d+)", gres))


def read_partition(name: str | None) -> Partition:
    """The partition ``name`` (None: the default one) as ``sinfo`` describes it; :class:`ConfigError` if it
    cannot be read or does not exist."""
    key = "hydra.launcher.partition"
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%P|%c|%G|%m|%l"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise ConfigError(
            "hydra/launcher", f"slurm needs SLURM's sinfo here ({error}); submit from a node of the cluster"
        ) from None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError("hydra/launcher", f"slurm: sinfo failed ({last}); submit from a node of the cluster")
    rows = [line.split("|") for line in out.stdout.split() if line.count("|") == 4]
    names = list(dict.fromkeys(row[0].rstrip("*") for row in rows))
    if name is None:
        defaults = [row[0].rstrip("*") for row in rows if row[0].endswith("*")]
        if not defaults:
            raise ConfigError(key, f"this cluster has no default partition; choose one of: {', '.join(names)}")
        name = defaults[0]
    nodes = [row for row in rows if row[0].rstrip("*") == name]
    if not nodes:
        raise ConfigError(key, f"got {name!r}; this cluster's partitions: {', '.join(names) or 'none'}")
    return Partition(
        name=name,
        nodes=len(nodes),
        cpus=max(int(row[1].rstrip("+")) for row in nodes),
        gpus=max(_gpus(row[2]) for row in nodes),
        memory_mb=max(int(row[3].rstrip("+")) for row in nodes),
        max_minutes=_minutes(nodes[0][4]),
    )


def derive_request(params: dict[str, Any], hardware: Mapping[str, Any], partition: Partition) -> dict[str, Any]:
    """The launcher's parameters with ``gpus_per_node`` and ``cpus_per_task`` taken from ``hardware`` (the
    ``hardware`` keys) where null."""
    request = dict(params)
    accelerator, devices = str(hardware["accelerator"]), int(hardware["devices"])
    if request.get("gpus_per_node") is None and request.get("gres") is None:
        gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and partition.gpus > 0)
        request["gpus_per_node"] = devices if gpu else None
    if request.get("cpus_per_task") is None and hardware.get("threads") is not None:
        request["cpus_per_task"] = int(hardware["threads"])
    return request


def check_request(request: dict[str, Any], partition: Partition) -> None:
    """Refuse a request that no node of ``partition`` can ever satisfy (:class:`ConfigError`, one line)."""
    where = f"partition {partition.name}"
    nodes, tasks = int(request.get("nodes") or 1), int(request.get("tasks_per_node") or 1)
    cpus = tasks * int(request.get("cpus_per_task") or 1)
    gpus, memory = int(request.get("gpus_per_node") or 0), request.get("mem_gb")
    if nodes > partition.nodes:
        raise ConfigError("hardware.num_nodes", f"{nodes} nodes a job; {where} has {partition.nodes}")
    if cpus > partition.cpus:
        raise ConfigError(
            "hardware.threads",
            f"{tasks} task(s) a node x {cpus // tasks} CPUs (hydra.launcher.cpus_per_task) = {cpus} CPUs a node; "
            f"the nodes of {where} have {partition.cpus}: lower hardware.threads or set hydra.launcher.cpus_per_task",
        )
    if gpus > partition.gpus:
        has = f"{partition.gpus} GPUs a node" if partition.gpus else "no GPUs"
        raise ConfigError(
            "hardware.accelerator", f"{gpus} GPU(s) a node; {where} has {has}: use hardware=cpu or a GPU partition"
        )
    if memory is not None and float(memory) * 1024 > partition.memory_mb:
        raise ConfigError("hydra.launcher.mem_gb", f"got {memory}; the nodes of {where} have {partition.memory_mb} MB")
    limit = partition.max_minutes
    if limit is not None and int(request.get("timeout_min") or 0) > limit:
        raise ConfigError("hydra.launcher.timeout_min", f"got {request.get('timeout_min')}; {where} allows {limit}")


def _hardware_overrides(overrides: list[str]) -> list[str]:
    return sorted(o for o in overrides if o.lstrip("+~").partition("=")[0].split(".")[0] == "hardware")


def continue_sweep(sweep_dir: str) -> str:
    """The command that continues this sweep in its folder: what finished is kept, the rest resumes or starts."""
    keep = [a for a in sys.argv[1:] if a.lstrip("+~").partition("=")[0] not in ("resume", "hydra.sweep.dir")]
    return shlex.join(["python", "train.py", *keep, f"hydra.sweep.dir={sweep_dir}", "resume=true"])


def _queued() -> set[str] | None:
    """The ids of this user's jobs that SLURM holds (array tasks as ``12_3``), or None if ``squeue`` did not
    answer."""
    try:
        out = subprocess.run(["squeue", "--me", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return set(out.stdout.split()) if out.returncode == 0 else None


def _index(job: Any) -> int:
    """The job's place in its array (``12_3``: 3), 0 for a job that is not an array's."""
    return int(job.job_id.rpartition("_")[2]) if "_" in job.job_id else 0


def _has_result(job: Any) -> bool:
    return all(job.task(k).paths.result_pickle.exists() for k in range(job.num_tasks))


def _last_line(job: Any) -> str:
    """The job's last line of ours (``error: ...``, ``stopped by ...``) on its rank 0's stderr, else ''."""
    try:
        lines = job.task(0).paths.stderr.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    ours = [line.strip() for line in lines if line.startswith(("error: ", "stopped by "))]
    return ours[-1] if ours else ""


def wait_for(jobs: list[Any]) -> list[Any]:
    """Wait until every job has its result or is gone from SLURM's queue without one (for :data:`GRACE_S`); the
    jobs gone. The result files are looked at every :data:`POLL_S`, ``squeue`` asked every eighth of the time
    waited so far (between :data:`POLL_S` and :data:`SQUEUE_MAX_S`), and at every look while a job is missing."""
    waiting, gone, died = list(jobs), {}, []
    started = asked = time.monotonic()
    held = _queued()
    while waiting:
        now = time.monotonic()
        if held is None or gone or now - asked >= min(SQUEUE_MAX_S, max(POLL_S, (now - started) / 8)):
            held, asked = _queued(), now
        for job in list(waiting):
            if _has_result(job):
                waiting.remove(job)
            elif held is not None and job.job_id not in held:
                if now - gone.setdefault(job.job_id, now) >= GRACE_S:
                    waiting.remove(job)
                    died.append(job)
                    del gone[job.job_id]
            else:
                gone.pop(job.job_id, None)
        if waiting:
            time.sleep(POLL_S)
    return died


class SlurmLauncher(PluginLauncher):
    """submitit's SLURM launcher (``hydra-submitit-launcher``): request derived and checked, died jobs reported."""

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        import submitit

        assert self.config is not None
        try:
            if len({tuple(_hardware_overrides(list(o))) for o in job_overrides}) > 1:
                raise ConfigError(
                    "hardware",
                    "differs between the jobs of one SLURM sweep (one request serves all); run a sweep per hardware",
                )
            partition = read_partition(self.params.get("partition"))
            hardware = OmegaConf.to_container(self.config.hardware, resolve=True)
            request = derive_request(self.params, hardware, partition)  # type: ignore[arg-type]
            check_request(request, partition)
        except ConfigError as error:
            unmake_sweep_folder(Path(str(self.config.hydra.sweep.dir)), Path(str(self.config.paths.output_dir)))
            print(f"error: {error}", file=sys.stderr, flush=True)
            sys.exit(BAD_CONFIG)
        self.params = request
        submitted: list[Any] = []
        original = submitit.AutoExecutor.map_array

        def map_array(executor: Any, *args: Any, **kwargs: Any) -> list[Any]:
            submitted.extend(original(executor, *args, **kwargs))
            died = wait_for(submitted)
            if died:
                self._report(died, job_overrides, initial_job_idx)
            return submitted

        submitit.AutoExecutor.map_array = map_array
        try:
            return list(super().launch(job_overrides, initial_job_idx))
        finally:
            submitit.AutoExecutor.map_array = original

    def _report(self, died: list[Any], job_overrides: Any, initial_job_idx: int) -> None:
        """One line: the jobs that ended without a result, why (their own last line), and the command that
        continues the sweep; exit :data:`DIED`."""
        assert self.config is not None
        common = set.intersection(*(set(o) for o in job_overrides))
        parts = []
        for job in sorted(died, key=_index):
            number = _index(job)
            swept = " ".join(o for o in job_overrides[number] if o not in common) if number < len(job_overrides) else ""
            why = _last_line(job).partition("; continue with: ")[0]
            why = why or f"cancelled, timed out or its node failed (log: {job.task(0).paths.stderr})"
            parts.append(f"#{initial_job_idx + number} (SLURM job {job.job_id}{': ' + swept if swept else ''}): {why}")
        print(
            f"error: {len(died)} job(s) of the sweep ended without a result: {'; '.join(parts)}; "
            f"continue the sweep with: {continue_sweep(str(self.config.hydra.sweep.dir))}",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(DIED)
