"""What a sweep did, as `oracle.run_study` returns it and `silo-oracle run` turns into an exit code."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# done: every run recorded and the report written (or not asked for: finish=False);
# unfinished: the runs are in the run store and results.csv, but the record or the report was
# not written (rerun the same command); interrupted: Ctrl-C; terminated: SIGTERM (preempted).
Outcome = Literal["done", "unfinished", "interrupted", "terminated"]


@dataclass(frozen=True)
class SweepSummary:
    study: str
    out: Path  # the study's output folder
    outcome: Outcome
    trained: int  # runs trained by this sweep
    reused: int  # runs found complete in the run store
    failed: int  # runs that failed for good (after Tune's retries)
    report: Path | None  # report.html, when this sweep wrote it

    @property
    def done(self) -> bool:
        return self.outcome == "done"

    @property
    def results(self) -> Path:
        """results.csv: every run of the sweep, written whatever the outcome."""
        return self.out / "results.csv"
