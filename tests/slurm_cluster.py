"""A one-node SLURM cluster for the tests: its own munged, slurmctld and slurmd, config and state in a folder; the
node is this machine under its own name (DDP ranks reach rank 0 at the first node's name, as Lightning reads it).

:func:`cluster_unavailable` says in one line why it cannot run here (not root, no SLURM or munge binaries: ``.ci/run``
installs them), :func:`start` brings it up (about 1 s with the packages present) and :meth:`Cluster.stop` stops
the daemons it started, and only those. The client commands (``sbatch``, ``squeue``, ...) find it through
``SLURM_CONF``, which :attr:`Cluster.env` holds. The settings that make it work without systemd or an accounting
database, and requeue a job in seconds instead of minutes, are those of ``slurm.conf`` below.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scontrol", "scancel", "srun")

SLURM_CONF = """\
ClusterName=lth
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10,socket={munge_socket}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SchedulerParameters=bf_interval=2,sched_interval=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=15
MinJobAge=30
NodeName={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def cluster_unavailable() -> str | None:
    """Why the cluster cannot run here (one line), or None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "a SLURM cluster needs root (its daemons, and munged as user munge)"
    missing = [
        name for name in (*DAEMONS, *CLIENTS) if shutil.which(name) is None and not Path("/usr/sbin", name).exists()
    ]
    if missing:
        return f"no {', '.join(missing)}: apt-get install slurm-wlm munge (.ci/run does)"
    try:
        import pwd

        pwd.getpwnam("munge")
    except KeyError:
        return "no user munge (apt-get install munge)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


@dataclass
class Cluster:
    """A running cluster: its folder, the environment its clients need, the daemons' processes."""

    root: Path
    env: dict[str, str]
    daemons: list[subprocess.Popen] = field(default_factory=list)

    def run(self, *command: str, timeout: float = 30) -> str:
        """A client command's output (``scontrol requeue 12``)."""
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout, check=True).stdout

    def jobs(self) -> dict[str, str]:
        """``{job id: state}`` of the jobs SLURM knows (array tasks as ``12_1``)."""
        lines = self.run("squeue", "-h", "-o", "%i|%T").split()
        return dict(line.split("|", 1) for line in lines)

    def cancel_all(self) -> None:
        """Cancel every job (a test's deadline passed: nothing of it may run on)."""
        subprocess.run(["scancel", "--full", "-u", "root"], env=self.env, capture_output=True, timeout=30)

    def stop(self) -> None:
        """Cancel what is left, then stop the daemons this cluster started (not any others)."""
        try:
            self.cancel_all()
            _wait(lambda: not self.jobs(), "the jobs to end", 30)  # their job steps end before slurmd does
        except (OSError, subprocess.SubprocessError, RuntimeError):
            pass
        for process in reversed(self.daemons):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.daemons):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree((self.root / "munge").resolve(), ignore_errors=True)  # munged's folder in /tmp


def _munge(root: Path) -> tuple[list[str], Path]:
    """The munged command line (run as user munge) and its socket, in a folder that user can reach."""
    import pwd

    user = pwd.getpwnam("munge")
    folder = Path(tempfile.mkdtemp(prefix="lth-munge-", dir="/tmp"))  # munged's folders: its own, reachable
    os.chown(folder, user.pw_uid, user.pw_gid)
    os.chmod(folder, 0o711)  # munged: clients must reach its socket
    key = folder / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    os.chown(key, user.pw_uid, user.pw_gid)
    os.chmod(key, 0o400)
    (root / "munge").symlink_to(folder)
    socket_path = folder / "munge.socket"
    command = [
        "setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
        _binary("munged"), "--foreground", f"--key-file={key}", f"--socket={socket_path}",
        f"--pid-file={folder}/munged.pid", f"--log-file={folder}/munged.log", f"--seed-file={folder}/munged.seed",
    ]  # fmt: skip
    return command, socket_path


def start(root: Path, timeout: float = 60) -> Cluster:
    """Bring the cluster up under ``root`` and wait for its node to be idle."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("state", "spool"):
        (root / name).mkdir(exist_ok=True)
    munged, munge_socket = _munge(root)
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(
        SLURM_CONF.format(
            host=host,
            root=root,
            munge_socket=munge_socket,
            ctld_port=_free_port(),
            slurmd_port=_free_port(),
        )  # fmt: skip
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    cluster = Cluster(root, env)
    logs = open(root / "daemons.out", "ab")  # noqa: SIM115  (kept open by the daemons)
    try:
        cluster.daemons.append(subprocess.Popen(munged, stdout=logs, stderr=logs))
        _wait(lambda: munge_socket.exists(), "munged's socket", timeout)
        for command in ([_binary("slurmctld"), "-D", "-i"], [_binary("slurmd"), "-D", "-N", host]):
            cluster.daemons.append(subprocess.Popen([*command, "-f", str(conf)], env=env, stdout=logs, stderr=logs))
        _wait(lambda: _idle(cluster), "the node to be idle", timeout)
    except BaseException:
        cluster.stop()
        raise
    finally:
        logs.close()
    return cluster


def _idle(cluster: Cluster) -> bool:
    for process in cluster.daemons:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}: see {cluster.root}/*.log")
    try:
        return cluster.run("sinfo", "-h", "-N", "-o", "%T", timeout=5).strip() == "idle"
    except (OSError, subprocess.SubprocessError):
        return False


def _wait(condition, what: str, timeout: float) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)
