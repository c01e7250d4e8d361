"""Driver processes that tests start, and stop, by their own process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator


@contextlib.contextmanager
def driver(cmd: list[str], env: dict) -> Iterator[subprocess.Popen]:
    """`cmd` in its own process group, so that the test stops exactly the Ray it started:
    the whole group is killed on exit, pass or fail (never a broad `ray stop`)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        yield proc
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
