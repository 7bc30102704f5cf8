"""One run per output folder: an exclusive lock on ``<out>/.cim/lock`` held for the life of the run, and the
run's scratch files (Dask's) kept inside the folder.

The lock is an ``flock`` on the file, so the kernel drops it when the holder dies (``kill -9`` included) and the
next run takes over without cleaning up; the file records who holds it (pid, host, start time) for the message
the second run prints, and stands in for the flock where a file system has none (a dead pid on this host is then
a stale lock, taken over).
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from pathlib import Path

from cim.errors import CimError

LOCK_NAME = ".cim/lock"


class OutputLockedError(CimError):
    """Another process runs a job into the same output folder."""


class OutputLock:
    """A held lock on an output folder; :meth:`release` (or the end of the process) lets the next run in."""

    def __init__(self, path: Path, handle: int) -> None:
        self.path = path
        self._handle = handle

    @property
    def held(self) -> bool:
        return self._handle >= 0

    def release(self) -> None:
        """Drop the lock (the file stays: it is harmless without the flock)."""
        if self._handle >= 0:
            os.close(self._handle)
            self._handle = -1


def _record(path: Path) -> dict | None:
    try:
        who = json.loads(path.read_text(encoding="utf-8"))
        return who if {"pid", "host", "started"} <= set(who) else None
    except (OSError, ValueError, TypeError):
        return None


def _holder(path: Path) -> str:
    who = _record(path)
    return f"process {who['pid']} on {who['host']} (since {who['started']})" if who else "another process"


def _recorded_holder_alive(path: Path) -> bool:
    """Where ``flock`` is not supported: whether the recorded holder still runs (a dead pid on this host is a
    stale lock; a holder on another host cannot be checked and counts as alive)."""
    who = _record(path)
    if who is None or who["pid"] == os.getpid():
        return False
    if who["host"] != socket.gethostname():
        return True
    try:
        os.kill(int(who["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: Locks this process holds, by lock file: acquiring a folder twice in one process returns the held lock.
_HELD: dict[Path, OutputLock] = {}


def acquire(out_dir: Path) -> OutputLock:
    """Lock ``out_dir`` for this process, or raise :class:`OutputLockedError` naming the holder."""
    path = (Path(out_dir) / LOCK_NAME).resolve()
    if path in _HELD and _HELD[path].held:
        return _HELD[path]
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        locked = False
    except BlockingIOError:
        locked = True
    except OSError:  # a file system without flock (some network mounts): trust the recorded pid instead
        locked = _recorded_holder_alive(path)
    if locked:
        os.close(handle)
        raise OutputLockedError(f"{out_dir}: the output folder is in use by {_holder(path)}; wait for that run "
                                f"to end (or stop it), then run again (or delete {path} if it is gone)")
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}).encode()
    os.ftruncate(handle, 0)
    os.pwrite(handle, record, 0)
    _HELD[path] = OutputLock(path, handle)
    return _HELD[path]


def claim(out_dir: Path) -> OutputLock:
    """Make ``out_dir`` and lock it for this process (:func:`acquire`); Dask's scratch space is kept inside it
    by :func:`cim.runner.cluster.dask_client`."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return acquire(out_dir)
