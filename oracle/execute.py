"""Obtain one run: from the store if it is complete there, else by training it."""

from __future__ import annotations

import torch

from silo.config import TaskConfig
from silo.data import DataCache
from silo.train import train_run

from oracle.identity import run_id as compute_run_id
from oracle.store import RunStore


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
    """Return (record, reused). A run complete in the store is never trained again."""
    rid = compute_run_id(task, seed=seed, cycle=cycle, max_lr=max_lr, parent_run_id=parent_run_id)
    if store.is_complete(rid):
        return store.load_record(rid), True
    parent = store.load_state(parent_run_id) if parent_run_id is not None else None
    result = train_run(
        task, seed=seed, cycle=cycle, max_lr=max_lr, parent=parent, cache=cache, device=device
    )
    record = result.metrics.as_dict()
    record.update(run_id=rid, parent_run_id=parent_run_id)
    store.save(rid, result, record)
    return record, False
