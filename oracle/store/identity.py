"""Run identity (docs/design.md): a short hash of everything that determines a run's result.

`RunKey` is the one place the key is spelled out: the task, the seed, the cycle, the max_lr
and the parent run. The arm is deliberately not part of it, so two arms that would train the
same thing share the run, and a run complete in the store is never trained again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from silo.config import TaskConfig

RUN_ID_CHARS = 16


@dataclass(frozen=True)
class RunKey:
    task: TaskConfig
    seed: int
    cycle: int
    max_lr: float
    parent_run_id: str | None  # None at cycle 0 (a fresh init), else the run it continues

    def payload(self) -> dict[str, Any]:
        """What the run id is the hash of; each run folder keeps it as identity.json."""
        # Only the task fields that differ from their defaults (TaskConfig.identity).
        return key_payload(self.task.identity(), self.seed, self.cycle, self.max_lr, self.parent_run_id)

    @property
    def run_id(self) -> str:
        return run_id_of(self.payload())

    def at(self, max_lr: float) -> RunKey:
        """The same run at another max_lr: a member of the same Oracle round."""
        return dataclasses.replace(self, max_lr=float(max_lr))

    def next_cycle(self, max_lr: float) -> RunKey:
        """The run that continues this one: the next cycle of a chain, from this run."""
        return dataclasses.replace(self, cycle=self.cycle + 1, max_lr=float(max_lr), parent_run_id=self.run_id)


def key_payload(task_identity: dict[str, Any], seed: int, cycle: int, max_lr: float,
                parent_run_id: str | None) -> dict[str, Any]:
    """The run key's JSON from its parts, the task as its identity JSON (TaskConfig.identity);
    the analysis builds it from the task identity the record keeps, without a TaskConfig."""
    return {
        "task": task_identity,
        "seed": int(seed),
        "cycle": int(cycle),
        # repr of a float round-trips exactly, so equal floats hash equally.
        "max_lr": repr(float(max_lr)),
        "parent": parent_run_id,
    }


def canonical_json(payload: dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def run_id_of(payload: dict[str, Any]) -> str:
    """The run id of an identity payload (e.g. a run folder's identity.json)."""
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:RUN_ID_CHARS]
