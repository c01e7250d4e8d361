"""Run identity (DESIGN.md): a short hash of everything that determines a run's result.

The arm is deliberately not part of it, so two arms that would train the same thing share
the run, and a run complete in the store is never trained again.
"""

from __future__ import annotations

import hashlib
import json

from silo.config import TaskConfig

RUN_ID_CHARS = 16


def run_id(
    task: TaskConfig, *, seed: int, cycle: int, max_lr: float, parent_run_id: str | None
) -> str:
    payload = {
        "task": task.identity(),
        "seed": int(seed),
        "cycle": int(cycle),
        # repr of a float round-trips exactly, so equal floats hash equally.
        "max_lr": repr(float(max_lr)),
        "parent": parent_run_id,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:RUN_ID_CHARS]
