"""Obtain runs: from the store if complete there, else by training them (one run, or the
members of one Oracle round together)."""

from __future__ import annotations

import torch

from oracle.identity import identity_payload, run_id_of
from oracle.store import RunStore
from silo.config import TaskConfig
from silo.data import DataCache
from silo.round import FusionUnsupported, train_round
from silo.train import resolve_device, train_run


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
    return _save(store, result, identity, parent_run_id), False  # not `reused`: this trial trained it


# CPU models whose rounds bench/fused_round.py measured faster fused than one after another
# (quickstart round, G=6, 1 thread: 1.49x for the MNIST-1D CNN); ResNet-20 was slower fused
# on a CPU (0.89x: grouped convolutions), so other models stay sequential there.
FUSED_ON_CPU = frozenset({"mnist1d_cnn", "mnist1d_mlp"})


def round_mode(fuse: str, task: TaskConfig, device: torch.device | str | None) -> str:
    """`fused` or `sequential` for the study's `execution.fuse` (auto | on | off)."""
    if fuse == "on":
        return "fused"
    if fuse == "off":
        return "sequential"
    device = resolve_device(task.device) if device is None else torch.device(device)
    return "fused" if device.type == "cuda" or task.model in FUSED_ON_CPU else "sequential"


def obtain_round(
    store: RunStore,
    task: TaskConfig,
    *,
    seed: int,
    cycle: int,
    max_lrs: list[float],
    parent_run_id: str | None,
    fuse: str = "auto",
    cache: DataCache | None = None,
    device: torch.device | str | None = None,
) -> list[tuple[dict, bool]]:
    """(record, reused) per max_lr of one round of one seed: the members complete in the
    store are reused, the others trained together (silo.round) and each saved as the run it
    is, so a fused member and the same run trained alone share their id and folder."""
    identities = [identity_payload(task, seed=seed, cycle=cycle, max_lr=v, parent_run_id=parent_run_id)
                  for v in max_lrs]
    found = [store.find(run_id_of(i)) for i in identities]
    missing = [k for k, f in enumerate(found) if f is None]
    out: list[tuple[dict, bool] | None] = [(f, True) if f is not None else None for f in found]
    if missing:
        parent = store.load_state(parent_run_id) if parent_run_id is not None else None
        mode = round_mode(fuse, task, device)
        kwargs = dict(seed=seed, cycle=cycle, max_lrs=[max_lrs[k] for k in missing], parent=parent,
                      cache=cache, device=device)
        try:
            results = train_round(task, mode=mode, **kwargs)
        except FusionUnsupported:  # e.g. Dropout: fused members would not be the runs they stand for
            results = train_round(task, mode="sequential", **kwargs)
        for k, result in zip(missing, results):
            out[k] = (_save(store, result, identities[k], parent_run_id), False)
    return out


def _save(store: RunStore, result, identity: dict, parent_run_id: str | None) -> dict:
    rid = run_id_of(identity)
    record = result.metrics.as_dict()
    record.update(run_id=rid, parent_run_id=parent_run_id)
    if not store.save(rid, result, record, identity):
        # Another trial stored the same run first (two arms sharing it): report that copy,
        # the one every child trains from (on other threads float32 may differ by rounding).
        return store.load_record(rid)
    return record
