"""Obtain one run: from the store if it is complete there, else by training it."""

from __future__ import annotations

import torch

from oracle.identity import identity_payload, run_id_of
from oracle.store import RunStore
from silo.config import TaskConfig
from silo.data import DataCache
from silo.train import train_run


def obtain_run(
    store: RunStore,
    task: TaskConfig,
    *,
    seed: int,
    cycle: int,
    max_lr: float,
    parent_run_id: str | None,
    cache: DataCache | None = None,
    device: torch.device | str | None = None,
) -> tuple[dict, bool]:
    """Return (record, reused). A run complete and sound in the store is never trained
    again; a damaged one is moved aside by the store and trained again here."""
    identity = identity_payload(task, seed=seed, cycle=cycle, max_lr=max_lr, parent_run_id=parent_run_id)
    rid = run_id_of(identity)
    found = store.find(rid)
    if found is not None:
        return found, True
    parent = store.load_state(parent_run_id) if parent_run_id is not None else None
    result = train_run(
        task, seed=seed, cycle=cycle, max_lr=max_lr, parent=parent, cache=cache, device=device
    )
    record = result.metrics.as_dict()
    record.update(run_id=rid, parent_run_id=parent_run_id)
    if not store.save(rid, result, record, identity):
        # Another trial stored the same run first (two arms sharing it): report that copy,
        # the one every child trains from (on other threads float32 may differ by rounding).
        # Not `reused`: this trial did train it.
        return store.load_record(rid), False
    return record, False
