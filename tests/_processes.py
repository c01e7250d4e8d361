"""Driver processes that tests start, and stop, by their own process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def driver(cmd: list[str], env: dict) -> Iterator[subprocess.Popen]:
    """`cmd` in its own process group, so that the test stops exactly the Ray it started:
    the whole group is killed on exit, pass or fail (never a broad `ray stop`)."""
    with _sigint_as_at_a_terminal():
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield proc
    finally:
        stop_group(proc)


@contextlib.contextmanager
def _sigint_as_at_a_terminal() -> Iterator[None]:
    """A suite started as a background job of a non-interactive shell inherits SIGINT ignored
    (POSIX), its children too, and Python then installs no KeyboardInterrupt handler: the
    driver would ignore the Ctrl-C a test sends it. A child started while this process has a
    handler gets SIGINT's default at exec, as a driver started from a terminal has."""
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def stop_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def pids_with_env(marker: str, *, exact: bool = False) -> list[int]:
    """Processes (other than this one) whose environment holds `marker`, e.g. `RAY_TMPDIR=...`:
    a test's private Ray temp folder marks every process that test started, in any group.
    A variable starts with `marker`, or (exact) is it: `RAY_RAYLET_PID=29` is not 2985."""
    found = []
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                values = (entry / "environ").read_bytes().split(b"\0")
                if any(v == needle if exact else v.startswith(needle) for v in values):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


class Output:
    """A driver's output, read as it comes (a thread drains the pipe), so a test can wait for
    a line while the driver runs."""

    def __init__(self, proc: subprocess.Popen):
        self._lines: list[str] = []
        self._thread = threading.Thread(target=self._drain, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _drain(self, pipe) -> None:
        for line in iter(pipe.readline, b""):
            self._lines.append(line.decode(errors="replace"))

    def text(self) -> str:
        return "".join(self._lines)

    def close(self, timeout: float = 30) -> str:
        """Everything, once the driver has closed its output."""
        self._thread.join(timeout)
        return self.text()
