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
