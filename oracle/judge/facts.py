"""What the analysis found that a reader must be told, as facts, not words: each cycle's notes
(verdicts.csv's `note`) and the study's messages (summary.json's `messages`). The judge states
them with their numbers; oracle.report.notes says them in English, so that every sentence of a
report lives in oracle/report and the judge stays tables and numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Finding(StrEnum):
    # a cycle's notes
    NOT_REACHED = "not reached"  # the Oracle's sweep has not reached this cycle
    NOT_REACHED_STOPPED = "not reached, stopped"  # ...for it stopped at `cycle`
    IN_PROGRESS = "in progress"  # the cycle's one note until the Oracle reaches it
    PENDING = "pending"  # no winner yet: `values` not yet run for every seed
    STOPPED_HERE = "stopped here"  # every value ran, none ok for every seed
    PROVISIONAL = "provisional"  # judged on the values that ran; `values` may move it
    CHOICE_DIFFERS = "choice differs"  # the recorded choice `values` is not the rule's winner
    BEYOND_GRID = "beyond grid"  # V reaches an edge of the grid
    ONE_SEED_CYCLE = "one seed (cycle)"  # no noise estimate
    NO_SILO_RUNS = "no silo runs"
    SILO_NOT_OK = "silo not ok"  # SILO's runs of the cycle ended `labels` (diverged, failed)
    # the study's messages
    RETIRED_RULE = "retired rule"  # the record was written for noise_k: `numbers` (tolerance, noise_k)
    NO_SILO_ARM = "no silo arm"
    NO_ORACLE_ARM = "no oracle arm"
    ORACLE_STOPPED = "oracle stopped"  # at `cycle`; no winner at `cycles`
    NO_WINNER_YET = "no winner yet"  # at `cycles`: the study is in progress
    ONE_SEED = "one seed"
    TWO_SEEDS = "two seeds"
    BAD_RUNS = "bad runs"  # `arm`'s runs that were not ok: `counts` (status, n)
    SUPERSEDED = "superseded"  # `count` trials superseded by later records of their run key
    DROPPED_ARMS = "dropped arms"  # `count` runs of arms no longer in the study: `counts` (arm, n)
    STALE = "stale"  # `count` runs of an earlier version of the study


@dataclass(frozen=True)
class Fact:
    """One finding and the numbers it is said with (only those its kind uses are set)."""

    finding: Finding
    cycle: int | None = None
    cycles: tuple[int, ...] = ()
    values: tuple[float, ...] = ()  # max_lr values
    labels: tuple[str, ...] = ()
    arm: str = ""
    count: int = 0
    counts: tuple[tuple[str, int], ...] = ()
    numbers: tuple[float, ...] = ()

