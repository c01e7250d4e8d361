"""A run's status: the one vocabulary silo (which trains a run) and oracle (which schedules,
records and judges runs) both write and read.

It lives in silo because silo writes two of the three (`ok`, `diverged`) and never imports
oracle; oracle adds `failed` (a trial that raised, or a run whose parent never existed).
Members are `str`s, so they compare equal to the plain strings in results.csv and in the
Optuna record, and are written there as those strings.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    OK = "ok"  # trained to the end: its accuracies count
    DIVERGED = "diverged"  # the loss went non-finite: chance accuracies, never a winner
    FAILED = "failed"  # no result: the trial raised, or the run could not be started
