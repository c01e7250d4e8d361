"""Run identity (docs/design.md): a short hash of everything that determines a run's result.

The arm is deliberately not part of it, so two arms that would train the same thing share
the run, and a run complete in the store is never trained again.
"""

from __future__ import annotations

import hashlib
import json

from silo.config import TaskConfig

RUN_ID_CHARS = 16


def identity_payload(
    task: TaskConfig, *, seed: int, cycle: int, max_lr: float, parent_run_id: str | None
) -> dict:
    """What a run id is the hash of; each run folder keeps it as identity.json."""
    return {
        # Only the task fields that differ from their defaults (TaskConfig.identity).
        "task": task.identity(),
        "seed": int(seed),
        "cycle": int(cycle),
        # repr of a float round-trips exactly, so equal floats hash equally.
        "max_lr": repr(float(max_lr)),
        "parent": parent_run_id,
    }


def canonical_json(payload: dict) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def run_id(
    task: TaskConfig, *, seed: int, cycle: int, max_lr: float, parent_run_id: str | None
) -> str:
    payload = identity_payload(task, seed=seed, cycle=cycle, max_lr=max_lr, parent_run_id=parent_run_id)
    return run_id_of(payload)


def run_id_of(payload: dict) -> str:
    """The run id of an identity payload (e.g. a run folder's identity.json)."""
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:RUN_ID_CHARS]
