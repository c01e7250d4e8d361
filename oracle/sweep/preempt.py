"""SIGTERM, what Slurm and Kubernetes send before they kill a preempted job, ends a sweep as
Ctrl-C does: results.csv written, Ray stopped, one line saying how to resume, exit code 143.

Ray's core worker installs a failure-signal handler for SIGTERM when the driver connects
(ray.init), which prints a C++ stack dump and aborts (exit 134) before Python sees the
signal; ray.init also replaces any Python handler. So `SigtermGuard` installs its handler on
entry and again after ray.init (`rearm`). The first SIGTERM raises `Terminated`, a
KeyboardInterrupt, so it leaves Tune's loop on the path Ctrl-C takes (Tune catches only
Exception there). A signal that lands while the driver waits inside Ray's C++ core (ray.get,
ray.wait) loses its type on the way out: Ray turns any error of the signal check into a fresh
KeyboardInterrupt. So the guard remembers that SIGTERM came (`received`), `stopped_by` asks it,
and leaving the guard turns such a KeyboardInterrupt back into `Terminated`. Later SIGTERMs
are ignored: the cleanup the first one started is not cut short (the scheduler's SIGKILL comes
anyway if it is too slow).

A whole process group signalled (Slurm, `kill -- -PGID`) also stops the local Ray's daemons
and workers at once: after `Terminated` the driver asks Ray for nothing but shutdown, and the
rows already reported live in its own ledger.
"""

from __future__ import annotations

import signal
import threading

# The shell's exit status for a process ended by SIGTERM (128 + 15), which a scheduler reads.
TERMINATED_EXIT = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """The driver received SIGTERM."""


class SigtermGuard:
    """`with SigtermGuard() as guard: ...; ray.init(...); guard.rearm()`.

    Outside the main thread (a notebook's worker thread) Python cannot handle signals, so
    nothing changes there."""

    def __init__(self):
        self.received = False
        self._before = None
        self._active = threading.current_thread() is threading.main_thread()

    def _on_sigterm(self, signum, frame) -> None:
        if self.received:
            return
        self.received = True
        raise Terminated()

    def rearm(self) -> None:
        if self._active:
            signal.signal(signal.SIGTERM, self._on_sigterm)

    def __enter__(self) -> SigtermGuard:
        if self._active:
            self._before = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._active:
            # None: the handler before was not a Python one; the default ends the process.
            signal.signal(signal.SIGTERM, self._before if self._before is not None else signal.SIG_DFL)
        if (self.received and exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
                and not issubclass(exc_type, Terminated)):
            # Ray re-raised our Terminated as a plain KeyboardInterrupt: give it its type back,
            # so the CLI exits 143 (preempted), not 130 (Ctrl-C).
            raise Terminated() from exc


def stopped_by(exc: KeyboardInterrupt, guard: SigtermGuard | None = None) -> tuple[str, int]:
    """What to say and the exit code for a sweep ended by Ctrl-C or SIGTERM (`guard`: the
    sweep's, which knows SIGTERM came even when Ray re-raised it as a plain KeyboardInterrupt)."""
    if isinstance(exc, Terminated) or (guard is not None and guard.received):
        return "terminated (SIGTERM)", TERMINATED_EXIT
    return "interrupted", 130
