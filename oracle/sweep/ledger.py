"""The driver's ledger, as a Ray Tune callback: every run's row as Tune reports it, the
per-cycle progress lines a person can follow, and results.csv.

The searcher (oracle.sweep.searcher) only schedules. It tells the ledger one thing, the Oracle's
decision when a round closes (`round_closed`); everything else the ledger takes from Tune's
results and errors. Tune hands a result to the searcher before the callbacks, so a round
may close before the ledger has its last row: the Oracle's line is printed once the winner's
rows of every seed are in.
"""

from __future__ import annotations

import csv
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import TextIO

from ray import cloudpickle  # what Tune pickles a trial's error with

from oracle.store.arms import ORACLE
from oracle.store.identity import RunKey
from oracle.store.rows import COLUMNS, CURVE, failed_row, row_key
from oracle.sweep.callbacks import DriverCallback
from oracle.sweep.epochs import is_epoch_report
from oracle.sweep.terminal import say
from oracle.sweep.trial import SKIPPED, TrialConfig
from silo.atomic import atomic_writer
from silo.status import RunStatus


class Ledger(DriverCallback):
    _stream_attr = "_stream"

    def __init__(self, study, stream: TextIO | None = None):
        self.study = study
        self.seeds = study.seeds
        # Keyed by (arm, seed, cycle, max_lr): a trial retried from its checkpoint may
        # report a run twice, and the row must still appear once.
        self._rows: dict[tuple, dict] = {}
        self._stream = stream or sys.stdout
        self._chain_cycles: dict[tuple[str, int], list[dict]] = defaultdict(list)
        self._winners: dict[int, float | None] = {}  # cycle -> the Oracle's winner (None: it stopped)
        # closed rounds whose line waits for their rows -> (winner, values tried)
        self._unsaid: dict[int, tuple[float, int]] = {}
        self._reported: dict[str, list[dict]] = defaultdict(list)  # trial id -> its rows, in order
        self._modes_said: set[tuple] = set()  # (cycle, mode, why) of the Oracle's rounds, said once
        self._errors_said: set[str] = set()  # failed trials' errors, said once each

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_errors_said", set())  # a ledger pickled before errors were said

    # -- the rows ------------------------------------------------------------------------
    @property
    def rows(self) -> list[dict]:
        """Every row; an Oracle row's `chosen` is None while its round is open."""
        return [self._with_chosen(r) for r in self._rows.values()]

    @property
    def size(self) -> int:
        """How many rows: what the progress bar asks at every step of Tune's loop, without
        copying them."""
        return len(self._rows)

    def _with_chosen(self, row: dict) -> dict:
        if row["arm"] != ORACLE:
            return row
        q = int(row["cycle"])
        chosen = None if q not in self._winners else row["max_lr"] == self._winners[q]
        return dict(row, chosen=chosen)

    def count(self, what: str) -> int:
        """trained, reused or failed: how many rows' runs were so in this invocation."""
        if what == RunStatus.FAILED:
            return sum(r["status"] == RunStatus.FAILED for r in self._rows.values())
        want_reused = what == "reused"
        return sum(
            r["status"] != RunStatus.FAILED and bool(r["reused"]) == want_reused for r in self._rows.values()
        )

    def add(self, row: dict, *, replace: bool = True) -> bool:
        """Add a row; False if its row_key was already there (then the row there stays
        unless `replace`)."""
        row = {k: row.get(k) for k in COLUMNS} | ({CURVE: row[CURVE]} if row.get(CURVE) else {})
        key = row_key(row)
        new = key not in self._rows
        if new or replace:
            self._rows[key] = row
        return new

    def write_csv(self, path: Path) -> None:
        """Atomically, sorted by arm, seed, cycle, max_lr."""
        rows = sorted(self.rows, key=lambda r: (r["arm"], r["seed"], r["cycle"], r["max_lr"]))
        with atomic_writer(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")  # not the curve
            writer.writeheader()
            writer.writerows(rows)

    # -- Tune callback API ---------------------------------------------------------------
    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if result.get("status") == SKIPPED or "run_id" not in result or is_epoch_report(result):
            return  # released early, then not needed: no run; or an epoch of a run still training
        arm = trial.config["arm"]
        row = dict(result, arm=arm)
        self._reported[trial.trial_id].append(row)
        if arm == ORACLE:
            self._oracle_row(row)
        else:
            self._chain_row(row)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        """A trial failed for good: every run it did not report gets a failed row, carrying the
        trial's error in one line (said once per distinct error)."""
        config = TrialConfig.from_tune(trial.config)  # the searcher wrote it: it fits
        error = trial_error_line(trial)
        if error is not None and error not in self._errors_said:
            self._errors_said.add(error)
            self.print(f"{config.arm:<14} failed: {error}")
        if config.arm == ORACLE:
            self._fail_round_members(trial.trial_id, config, error)
        else:
            self._fail_rest_of_chain(trial.trial_id, config, error)

    # -- what the searcher says ----------------------------------------------------------
    def round_closed(self, cycle: int, winner: float | None, values: int) -> None:
        """The Oracle chose round `cycle`'s winner among `values` max_lrs (None: it stops)."""
        self._winners[cycle] = winner
        if winner is None:
            self.print(f"oracle  cycle {cycle:2d}  no grid value ran ok for every seed: the Oracle stops")
        else:
            self._unsaid[cycle] = (winner, values)
            self._say_closed_rounds()

    # -- internals -----------------------------------------------------------------------
    def _oracle_row(self, row: dict) -> None:
        row["refined"] = float(row["max_lr"]) not in self.study.grid
        if row.get("round_mode"):
            said = (int(row["cycle"]), row["round_mode"], row.get("round_mode_why"))
            if said not in self._modes_said:
                self._modes_said.add(said)
                # Not an arm's line (those start with the arm): how the round ran, not what it found.
                self.print(f"{'(round)':<14} cycle {said[0]:2d}  trained {said[1]} ({said[2]})")
        self.add(row, replace=False)  # a retried round reports its members again, reused
        self._say_closed_rounds()

    def _chain_row(self, row: dict) -> None:
        """A chain arm finished a cycle for one seed; print once every seed has."""
        if not self.add(row):
            return
        done = self._chain_cycles[(row["arm"], row["cycle"])]
        done.append(row)
        if len(done) == len(self.seeds):
            self.say(row["arm"], row["cycle"], done, max_lr=row["max_lr"])

    def _say_closed_rounds(self) -> None:
        for q in sorted(self._unsaid):
            winner, values = self._unsaid[q]
            found = [self._rows.get((ORACLE, int(s), q, winner)) for s in self.seeds]
            chosen = [row for row in found if row is not None]
            if len(chosen) == len(found):
                del self._unsaid[q]
                self.say(ORACLE, q, chosen, max_lr=winner, note=f"best of {values}")

    def _fail_round_members(self, trial_id: str, config: TrialConfig, error: str | None) -> None:
        q = config.first_cycle
        task = self.study.task_for_arm(ORACLE)
        reported = {(int(r["seed"]), float(r["max_lr"])) for r in self._reported[trial_id]}
        for seed, parent in config.shares:
            parent = parent or self._winner_run(q - 1, seed)
            for max_lr in config.max_lrs:
                if (seed, max_lr) not in reported:
                    key = RunKey(task, seed=seed, cycle=q, max_lr=max_lr, parent_run_id=parent)
                    self._oracle_row(failed_row(ORACLE, key, error))

    def _winner_run(self, cycle: int, seed: int) -> str | None:
        """The run id of the Oracle's winner for `seed` at `cycle`, if it is known."""
        winner = self._winners.get(cycle)
        row = self._rows.get((ORACLE, seed, cycle, float(winner))) if winner is not None else None
        return row["run_id"] if row else None

    def _fail_rest_of_chain(self, trial_id: str, config: TrialConfig, error: str | None) -> None:
        arm, seed, first = config.arm, config.seed, config.first_cycle
        reported = self._reported[trial_id]
        last = reported[-1] if reported else None
        start = (int(last["cycle"]) + 1) if last else first
        parent = last["run_id"] if last else config.parent_run_id
        task = self.study.task_for_arm(arm)
        for q in range(start, first + len(config.max_lrs)):
            key = RunKey(task, seed=seed, cycle=q, max_lr=config.max_lrs[q - first], parent_run_id=parent)
            self._chain_row(failed_row(arm, key, error))
            parent = None  # later runs never existed, so their ids are unknown

    # -- lines ---------------------------------------------------------------------------
    def say(self, arm: str, cycle: int, rows: list[dict], *, max_lr: float, note: str = "") -> None:
        ok = [r for r in rows if r["status"] == RunStatus.OK]
        val = sum(r["val_acc"] for r in ok) / len(ok) if ok else math.nan
        sparsity = max((r["sparsity"] or 0.0) for r in rows)
        statuses = {r["status"] for r in rows} - {RunStatus.OK}
        flag = f"  [{', '.join(sorted(statuses))}]" if statuses else ""
        self.print(
            f"{arm:<14} cycle {cycle:2d}  sparsity {sparsity:6.1%}  max_lr {max_lr:<9.4g} "
            f"val {val:6.1%}{'  ' + note if note else ''}{flag}"
        )

    def print(self, line: str) -> None:
        say(line, self._stream)  # above the progress bar on a terminal


def trial_error_line(trial) -> str | None:
    """The error that failed a Tune trial, in one line: the worker's own exception (Tune
    pickles it, wrapped in Ray's RayTaskError) as `Type: first line`, else the last line of
    Tune's error text. Read from the driver's staging folder, where Tune has just written
    them (the trial's storage gets them later). None if Tune kept neither."""
    exc = None
    pickled, path = _error_files(trial)
    if pickled and Path(pickled).is_file():
        try:
            exc = cloudpickle.loads(Path(pickled).read_bytes())
        except Exception:  # noqa: BLE001 - an exception class the driver cannot load: use the text
            exc = None
    cause = getattr(exc, "cause", None) or exc
    if cause is not None:
        text = (str(cause).strip().splitlines() or [""])[0]
        return f"{type(cause).__name__}: {text}"[:300]
    text = Path(path).read_text() if path and Path(path).is_file() else ""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else None


def _error_files(trial) -> tuple[str | None, str | None]:
    """(pickled error, error text) paths of a trial; None for a trial without storage."""
    try:
        return trial.pickled_error_file, trial.error_file
    except AttributeError:  # Tune's Trial reads them through its storage, which may be unset
        return None, None
