"""Atomic file writes, the one helper every module uses: a reader sees the old file or the
whole new one, never a part.

The data goes to a temporary file beside the target, is flushed and fsynced (so the rename
cannot land before the data does), then renamed over it, which is atomic within one
filesystem. A crash or a kill -9 mid-write leaves the previous version in place. The file
gets the mode `open()` would give it (0666 less the process's umask), not the temporary
file's private 0600, so colleagues on a shared file system can read a report.

`fsync_tree` does the same flush for a folder assembled under a temporary name and then
renamed into place as a whole (the run store): every file, then the folders, reach the disk
before the rename can.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: str = "w", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """`with atomic_writer(p, "wb") as f: torch.save(obj, f)`: p appears whole or not at all."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        if "b" not in mode:
            open_kwargs.setdefault("encoding", "utf-8")
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's umask, read without changing it where the OS says it (Linux), since
    setting it to read it back races with other threads creating files."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> Path:
    with atomic_writer(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return Path(path)


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush one file's data (or, for a folder, its entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str | os.PathLike[str]) -> None:
    """fsync every file under `folder`, then each folder (deepest first, `folder` last), so
    that renaming `folder` afterwards cannot land before its contents do."""
    for dirpath, _dirnames, filenames in os.walk(folder, topdown=False):
        for name in filenames:
            fsync_file(os.path.join(dirpath, name))
        fsync_file(dirpath)
