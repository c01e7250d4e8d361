"""What the driver does for a person watching the sweep, as Ray Tune callbacks.

- LiveRecord: every finished run goes into the Optuna record while the sweep runs, in
  batches (at most one write every `every_s` seconds), so optuna-dashboard, `silo-oracle
  status` and `silo-oracle report` see the study fill up. Recording is idempotent
  (oracle.store.record), so the final record at the end of the sweep adds only what changed, and a
  rerun after a crash records nothing twice. The time it spends is kept (`spent_s`).
  A storage that stops answering (a database restarted, a network cut) never stops the
  sweep: one line says so, training goes on, and the rows not yet recorded are written again
  at later flushes (waiting twice as long after each failure, at most `MAX_RETRY_S`) until
  the storage is back; one line says when it is. `unrecorded(rows)` counts what it could not
  write, for the final record's message.
- Progress: runs done / planned and an ETA: a tqdm bar on a terminal, else one line every
  60 s (a log file, `ray job submit`).

Both run in the driver's Tune loop (on_step_end), never in a trial.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from oracle.store.arms import ORACLE
from oracle.store.record import RecordWriter, study_attrs
from oracle.store.rows import planned_runs, row_key, row_signature
from oracle.store.storage import redact, storage_error, write_pointer
from oracle.sweep.callbacks import DriverCallback
from oracle.sweep.terminal import isatty, say


def study_runs(study) -> int:
    """Runs the study plans, every arm's (refinement adds to them as they come)."""
    return sum(planned_runs(arm, len(study.grid), len(study.seeds), study.cycles, study.beam)
               for arm in study.arm_names())


# The longest wait between two tries of a storage that stopped answering: a storage back
# after an outage is caught up within this (the final record at the end catches up anyway).
MAX_RETRY_S = 120.0


class LiveRecord(DriverCallback):
    _left_behind = ("_writer",)  # a storage's connection pool

    def __init__(self, study, ledger, url: str, out, *, every_s: float = 15.0, stream: TextIO | None = None):
        self.study, self.ledger, self.url, self.out = study, ledger, url, out
        self.every_s = every_s
        self.stream = stream or sys.stdout
        self.spent_s = 0.0
        self.flushes = 0
        self.failures = 0  # writes the storage refused or did not answer
        self._writer: RecordWriter | None = None
        self._recorded: dict[tuple, tuple] = {}  # row key -> what the storage holds for it
        self._last = time.monotonic()
        self._wait_s = every_s  # grows while the storage does not answer
        self._down_since: float | None = None

    def on_step_end(self, iteration, trials, **info) -> None:
        if time.monotonic() - self._last >= self._wait_s:
            self.flush()

    def on_experiment_end(self, trials, **info) -> None:
        self.flush()

    def unrecorded(self, rows) -> int:
        """How many of `rows` no write of this live record holds as they are."""
        return sum(self._recorded.get(row_key(r)) != row_signature(r) for r in rows)

    def flush(self) -> bool:
        """Record the rows that are new or changed since the last write that succeeded;
        False when the storage did not take them (they are tried again at the next flush)."""
        self._last = time.monotonic()
        fresh = [row for row in self.ledger.rows
                 # an Oracle row whose round is still open is recorded once its winner is chosen
                 if not (row["arm"] == ORACLE and row.get("chosen") is None)
                 and self._recorded.get(row_key(row)) != row_signature(row)]
        if not fresh:
            return True
        t0 = time.perf_counter()
        try:
            if self._writer is None:
                self._writer = RecordWriter(self.url, self.study.name, study_attrs(self.study))
            result = self._writer.write(fresh)
        except Exception as exc:  # any storage error: the sweep goes on, the rows wait
            self._failed(exc, len(fresh))
            return False
        finally:
            self.spent_s += time.perf_counter() - t0
        for row in fresh:
            self._recorded[row_key(row)] = row_signature(row)
        if self.flushes == 0:
            write_pointer(self.out, self.study.name, self.url, result.optuna_studies)
        self.flushes += 1
        if self._down_since is not None:
            self._say(f"record: {redact(self.url)} answers again after {time.monotonic() - self._down_since:.0f}s; "
                      f"{len(fresh)} run(s) recorded")
            self._down_since = None
        self._wait_s = self.every_s
        return True

    def _failed(self, exc: BaseException, waiting: int) -> None:
        self.failures += 1
        # A writer that failed part-way knows less than it thinks: the next one reads back
        # what the storage holds (recording is idempotent), so nothing is written twice.
        writer, self._writer = self._writer, None
        _dispose(writer)
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._say(f"record: {redact(self.url)} does not answer ({storage_error(exc)}); training goes on, "
                      f"{waiting} run(s) wait to be recorded and are tried again until it is back")
        self._wait_s = min(MAX_RETRY_S, 2 * self._wait_s)

    def _say(self, line: str) -> None:
        say(line, self.stream)


def _dispose(writer) -> None:
    """Close the connections of a writer given up on, so retries do not pile them up."""
    engine = getattr(getattr(writer, "storage", None), "engine", None)
    if engine is not None:
        try:
            engine.dispose()
        except Exception:  # a pool on a dead server may fail to close: it is dropped anyway
            pass


class Progress(DriverCallback):
    _left_behind = ("_bar",)  # a tqdm bar on the driver's terminal

    def __init__(self, study, ledger, *, stream: TextIO | None = None, every_s: float = 60.0,
                 quiet: bool = False):
        self.ledger = ledger
        self.planned = study_runs(study)
        self.stream = stream or sys.stdout
        self.every_s = every_s
        self.quiet = quiet
        self.t0 = time.monotonic()
        self._last = self.t0
        self._bar: Any = None  # a tqdm bar, once the first step ends on a terminal

    def line(self) -> str:
        done = self.ledger.size
        planned = max(self.planned, done)  # refinement runs add to the plan as they come
        elapsed = time.monotonic() - self.t0
        eta = elapsed / done * (planned - done) if done else None
        return (f"progress: {done} of {planned} runs, {elapsed:.0f} s elapsed, "
                f"ETA {'–' if eta is None else f'{eta:.0f} s'}")

    def on_step_end(self, iteration, trials, **info) -> None:
        if self.quiet:
            return
        if isatty(self.stream):
            if self._bar is None:
                from tqdm import tqdm

                self._bar = tqdm(total=self.planned, unit="run", file=self.stream, leave=False)
            done = self.ledger.size
            self._bar.total = max(self.planned, done)
            self._bar.update(done - self._bar.n)
        elif time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            say(self.line(), self.stream)

    def on_experiment_end(self, trials, **info) -> None:
        if self._bar is not None:
            self._bar.close()
