"""What the driver does for a person watching the sweep, as Ray Tune callbacks.

- LiveRecord: every finished run goes into the Optuna record while the sweep runs, in
  batches (at most one write every `every_s` seconds), so optuna-dashboard, `silo-oracle
  status` and `silo-oracle report` see the study fill up. Recording is idempotent
  (oracle.record), so the final record at the end of the sweep adds only what changed, and a
  rerun after a crash records nothing twice. The time it spends is kept (`spent_s`).
- Progress: runs done / planned and an ETA: a tqdm bar on a terminal, else one line every
  60 s (a log file, `ray job submit`).

Both run in the driver's Tune loop (on_step_end), never in a trial.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from ray.tune import Callback

from oracle.record import RecordWriter, study_attrs, write_pointer
from oracle.rows import ORACLE, planned_runs, row_key, row_signature


def study_runs(study) -> int:
    """Runs the study plans, every arm's (refinement adds to them as they come)."""
    return sum(planned_runs(arm, len(study.grid), len(study.seeds), study.cycles, study.beam)
               for arm in study.arm_names())


class LiveRecord(Callback):
    def __init__(self, study, ledger, url: str, out, *, every_s: float = 15.0):
        self.study, self.ledger, self.url, self.out = study, ledger, url, out
        self.every_s = every_s
        self.spent_s = 0.0
        self.flushes = 0
        self._writer = None
        self._recorded: dict[tuple, tuple] = {}  # row key -> what was recorded for it
        self._last = time.monotonic()

    def __getstate__(self) -> dict:  # Tune may pickle its callbacks; a storage cannot travel
        state = dict(self.__dict__)
        state["_writer"] = None
        return state

    def on_step_end(self, iteration, trials, **info) -> None:
        if time.monotonic() - self._last >= self.every_s:
            self.flush()

    def on_experiment_end(self, trials, **info) -> None:
        self.flush()

    def flush(self) -> None:
        """Record the rows that are new or changed since the last flush."""
        self._last = time.monotonic()
        fresh = []
        for row in self.ledger.rows:
            if row["arm"] == ORACLE and row.get("chosen") is None:
                continue  # its round is still open: recorded once its winner is chosen
            key, sig = row_key(row), row_signature(row)
            if self._recorded.get(key) != sig:
                fresh.append(row)
                self._recorded[key] = sig
        if not fresh:
            return
        t0 = time.perf_counter()
        if self._writer is None:
            self._writer = RecordWriter(self.url, self.study.name, study_attrs(self.study))
        result = self._writer.write(fresh)
        if self.flushes == 0:
            write_pointer(self.out, self.study.name, self.url, result.optuna_studies)
        self.flushes += 1
        self.spent_s += time.perf_counter() - t0


class Progress(Callback):
    def __init__(self, study, ledger, *, stream: TextIO | None = None, every_s: float = 60.0,
                 quiet: bool = False):
        self.ledger = ledger
        self.planned = study_runs(study)
        self.stream = stream or sys.stdout
        self.every_s = every_s
        self.quiet = quiet
        self.t0 = time.monotonic()
        self._last = self.t0
        self._bar = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_bar"] = None
        state["stream"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.stream = sys.stdout

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
        if self.stream.isatty():
            if self._bar is None:
                from tqdm import tqdm

                self._bar = tqdm(total=self.planned, unit="run", file=self.stream, leave=False)
            done = self.ledger.size
            self._bar.total = max(self.planned, done)
            self._bar.update(done - self._bar.n)
        elif time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            print(self.line(), file=self.stream, flush=True)

    def on_experiment_end(self, trials, **info) -> None:
        if self._bar is not None:
            self._bar.close()
