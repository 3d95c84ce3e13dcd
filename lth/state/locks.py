"""Locks between processes, with who holds them: one process per run folder, one trainer per shared round 0.

The locks are :mod:`filelock`'s (``flock`` on Unix, ``msvcrt.locking`` on Windows), so the operating system drops
them when their process ends, however it ends. A run folder's lock is ``<run>/.lock`` (not counted as results, so
a folder that holds only it is still empty, and is removed with it after a bad config), a kept round 0's is
``<output_dir>/dense/.<dense id>.lock``. Each has a companion ``<lock>.owner`` (JSON: pid, host, since when, the
command) while it is held, so that a process that finds the lock taken can say by whom: it either waits, saying so
in one line (a control run for its ticket, a sweep job for the round 0 another job is training), or is refused
with :class:`BusyError` (a second process on a run folder).

Within one process the locks are reentrant: a control run holds its ticket's lock while it trains the ticket,
whose run takes the same lock again.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from lth.state.artifacts import RUN_LOCK, file_mode, write_json

log = logging.getLogger("lth")

_HELD: dict[str, FileLock] = {}  # the locks this process holds, by absolute path


class BusyError(RuntimeError):
    """A run folder in use by another process: one line naming it (``train.py`` exits with :data:`BUSY`)."""


BUSY = 75  # exit code of a refused second process (sysexits' EX_TEMPFAIL: try again later)


def run_lock(run_dir: Path) -> Path:
    """The lock of a run folder (``<run>/.lock``, see :data:`lth.state.artifacts.RUN_LOCK`)."""
    return run_dir / RUN_LOCK[0]


def owner_file(lock: Path) -> Path:
    """Where the holder of ``lock`` says who it is: ``<lock>.owner``."""
    return lock.with_name(f"{lock.name}.owner")


def holder(lock: Path, patience: float = 2.0) -> str:
    """``pid 1234 on node7 (since 2025-01-31 12:00:00)``: who holds ``lock``, as far as its owner file says.

    A holder writes its owner file just after it takes the lock: one that has not yet written it is given up to
    ``patience`` seconds to, before it is only ``another process``.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            owner = json.loads(owner_file(lock).read_text())
            return f"pid {owner['pid']} on {owner['host']} (since {owner['since']})"
        except (OSError, ValueError, KeyError, TypeError):
            if time.monotonic() >= deadline:
                return "another process"
            time.sleep(0.05)


@contextmanager
def locked(path: Path, wait: bool = True, what: str | None = None) -> Iterator[None]:
    """Hold the exclusive lock ``path`` for the duration.

    When another process holds it: ``wait=True`` waits for it (after one log line naming the holder), else
    :class:`BusyError` names the holder. ``what`` names what the lock guards in those lines (default: ``path``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    key = os.path.abspath(path)
    if key in _HELD:  # this process holds it already (the outermost use releases it)
        yield
        return
    lock = FileLock(key, mode=file_mode())
    try:
        lock.acquire(timeout=0)
    except Timeout:
        who = holder(path)
        if not wait:
            raise BusyError(
                f"{what or path} is in use by {who}; wait for it to end, or stop it (SIGTERM or Ctrl+C: it "
                f"writes its checkpoint) and continue with resume=true"
            ) from None
        log.info("waiting for %s: in use by %s", what or path, who)
        lock.acquire()
    _HELD[key] = lock
    try:
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
        }
        try:
            write_json(owner_file(path), owner)
        except OSError as error:  # who holds it is for the messages of others; the lock holds without it
            log.warning("could not write %s (%s)", owner_file(path), error)
        yield
    finally:
        del _HELD[key]
        owner_file(path).unlink(missing_ok=True)
        lock.release()
