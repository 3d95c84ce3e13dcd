"""The export folder as several processes may meet it: one export writes it at a time, and what a killed one left
half-written is cleared.

:func:`export_lock` holds ``<out>/.export.lock`` (:func:`lth.state.locks.locked`) while an export writes; a second
export of the same folder says in one line whom it waits for, waits, then writes the same files again. Under the
lock no other export writes there, so :func:`remove_stale` clears the temporaries a killed export left behind
(``.ticket.pt.<random>.tmp``). :func:`written_through` is how files written by another library (``torch.export``,
``torch.onnx``, ``torch.jit``) are made atomic too: into a temporary of their own, then renamed, and a full disk
named by the export's file, not the temporary.
"""

from __future__ import annotations

import errno
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from lth.state.locks import BusyError, holder, locked

LOCK = ".export.lock"
FILES = (  # every file an export may write (lth.tools.export.ship)
    "ticket.pt",
    "model.pt",
    "model.yaml",
    "model.safetensors",
    "model.torch_prune.pt",
    "compressed.lthz",
    "shrunk.pt",
    "shrunk.pt2",
    "shrunk.ts",
    "model.onnx",
    "export.json",
)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def remove_stale(out: Path) -> list[Path]:
    """Remove the temporaries of :data:`FILES` in ``out`` (``.<file>.<random>.tmp[.<suffix>]``), left by an
    export that was killed; return them. Call it only under :func:`export_lock`."""
    stale = [p for name in FILES for p in out.glob(f".{name}.*.tmp*") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


@contextmanager
def export_lock(out: Path, say: Callable[[str], None] = _say) -> Iterator[None]:
    """Hold ``out``'s export lock for the duration (the folder is made), with the stale temporaries of a killed
    export removed; where another export holds it, say so in one line (``say``: stderr by default) and wait."""
    lock = out / LOCK
    with ExitStack() as stack:
        try:
            stack.enter_context(locked(lock, wait=False))
        except BusyError:
            say(f"waiting for {out}: another export ({holder(lock)}) is writing it")
            stack.enter_context(locked(lock, wait=True))
        remove_stale(out)
        yield


@contextmanager
def written_through(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (its own random name, ``path``'s suffix kept) for a library to write; renamed
    onto ``path`` when the block ends, removed when it fails. A full disk is raised as an ``OSError`` naming
    ``path``."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.replace(path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        if error.errno in DISK_FULL:
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
