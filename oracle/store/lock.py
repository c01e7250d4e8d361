"""One driver per output folder: `DIR/driver.lock`, held with an OS file lock.

Two drivers writing one folder would interleave results.csv, the record and the report. The
lock is `fcntl.flock` on a file in the folder: the kernel releases it when the holder exits
in any way (kill -9 included), so a stale lock file never blocks the next run. The file
also says who holds it (pid, host, start time), for the refusal message and for
`silo-oracle status`. flock is local to a host; on NFS two hosts' drivers are not excluded
by it, which docs/cluster.md says.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from oracle.errors import OracleError

LOCK_NAME = "driver.lock"


class FolderInUse(OracleError):
    pass


class DriverLock:
    """Held while a driver runs a study into `folder`; `with DriverLock(folder): ...`."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> DriverLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_holder(self.path) or {}
            who = f"process {holder.get('pid', '?')} on {holder.get('host', '?')}"
            raise FolderInUse(
                f"--out {self.path.parent}: the folder is in use by another run ({who}); "
                "wait for it to finish, or give another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.time()}).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # nobody holds it now
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def read_holder(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Who holds (or last held) the lock: {pid, host, started}, or None if unknown."""
    try:
        holder: dict[str, Any] | None = json.loads(Path(path).read_text() or "null")  # the lock file's JSON
        return holder
    except (OSError, ValueError):
        return None


def driver_alive(folder: str | os.PathLike[str]) -> bool:
    """Whether a driver holds `folder`'s lock right now (tested by trying to take it)."""
    path = Path(folder) / LOCK_NAME
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
