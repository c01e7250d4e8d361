"""Atomic file writes: a reader sees the old file or the new one, never half of one.

The text goes to a temporary file beside the target, is flushed and fsynced, then renamed
over it (rename is atomic within a filesystem), so a crash or a kill -9 mid-write leaves the
previous version, or nothing, in place.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: two writers never share it
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(tmp, mode, **({} if isinstance(data, bytes) else {"encoding": "utf-8"})) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
