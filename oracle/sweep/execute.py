"""Obtain runs: from the store if complete there, else by training them (one run, or the
members of one Oracle round together)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from oracle.store.identity import RunKey
from oracle.store.runs import RunStore
from silo.accel import CompileCache, ExecutionConfig
from silo.config import TaskConfig
from silo.data import DataCache
from silo.round import FusionUnsupported, train_round
from silo.train import resolve_device, train_run


def obtain_run(
    store: RunStore,
    key: RunKey,
    *,
    cache: DataCache | None = None,
    device: torch.device | str | None = None,
    execution: ExecutionConfig | None = None,
    compiled: CompileCache | None = None,
    progress: Callable[[dict], None] | None = None,
) -> tuple[dict, bool]:
    """Return (metrics, reused). A run complete and sound in the store is never trained
    again; a damaged one is moved aside by the store and trained again here. `progress`
    hears each epoch of a run trained here (silo.train.train_run's)."""
    found = store.find(key.run_id)
    if found is not None:
        return found, True
    parent = store.load_state(key.parent_run_id) if key.parent_run_id is not None else None
    result = train_run(
        key.task, seed=key.seed, cycle=key.cycle, max_lr=key.max_lr, parent=parent, cache=cache, device=device,
        execution=execution, compiled=compiled, progress=progress,
    )
    return _save(store, result, key), False  # not `reused`: this trial trained it


# CPU models whose rounds bench/fused_round.py measured faster fused than one after another
# (quickstart round, G=6, 1 thread: 1.49x for the MNIST-1D CNN); ResNet-20 was slower fused
# on a CPU (0.89x: grouped convolutions), so other models stay sequential there.
FUSED_ON_CPU = frozenset({"mnist1d_cnn", "mnist1d_mlp"})


def round_mode(fuse: str, task: TaskConfig, device: torch.device | str | None) -> str:
    """`fused` or `sequential` for the study's `execution.fuse` (auto | on | off)."""
    return round_mode_why(fuse, task, device)[0]


def round_mode_why(fuse: str, task: TaskConfig, device: torch.device | str | None) -> tuple[str, str]:
    """round_mode and the reason for it, in a few words (what `run` and `status` say). A
    precision other than fp32 fuses where fp32 does: the fused step casts as autocast would
    (silo.fused_precision), which the reason says."""
    mode, why = _mode_why(fuse, task, device)
    if mode == "fused" and task.precision != "fp32":
        why += f"; {task.precision} cast explicitly in the fused step"
    return mode, why


def _mode_why(fuse: str, task: TaskConfig, device: torch.device | str | None) -> tuple[str, str]:
    if fuse in ("on", "off"):
        return ("fused" if fuse == "on" else "sequential"), f"execution.fuse: {fuse}"
    device = resolve_device(task.device) if device is None else torch.device(device)
    if device.type == "cuda":
        return "fused", "auto: on CUDA"
    if task.model in FUSED_ON_CPU:
        return "fused", "auto: measured faster fused on a CPU"
    return "sequential", "auto: on a CPU only the MNIST-1D models are measured faster fused"


def obtain_round(
    store: RunStore,
    keys: list[RunKey],
    *,
    fuse: str = "auto",
    cache: DataCache | None = None,
    device: torch.device | str | None = None,
    on_mode: Callable[[str, str], None] | None = None,
    execution: ExecutionConfig | None = None,
    compiled: CompileCache | None = None,
    progress: Callable[[dict], None] | None = None,
) -> list[tuple[dict, bool]]:
    """(metrics, reused) per member of one round of one seed (keys differing only in max_lr):
    the members complete in the store are reused, the others trained together (silo.round)
    and each saved as the run it is, so a fused member and the same run trained alone share
    their id and folder. `on_mode(mode, why)` hears how the missing members were trained;
    `progress` each epoch of theirs (silo.round.train_round's, lists over the missing members,
    whose max_lrs it also gets as `max_lrs`)."""
    first = keys[0]
    if any(k != first.at(k.max_lr) for k in keys):
        raise ValueError("obtain_round: the members of a round differ only in max_lr")
    found = [store.find(k.run_id) for k in keys]
    missing = [i for i, f in enumerate(found) if f is None]
    out: list[tuple[dict, bool] | None] = [(f, True) if f is not None else None for f in found]
    if missing:
        parent = store.load_state(first.parent_run_id) if first.parent_run_id is not None else None
        mode, why = round_mode_why(fuse, first.task, device)
        trained_lrs = [keys[i].max_lr for i in missing]
        said = None if progress is None else (lambda info: progress({**info, "max_lrs": trained_lrs}))
        kwargs = dict(seed=first.seed, cycle=first.cycle, max_lrs=trained_lrs, parent=parent, cache=cache,
                      device=device, execution=execution, compiled=compiled, progress=said)
        try:
            results = train_round(first.task, mode=mode, **kwargs)
        except FusionUnsupported as exc:  # e.g. Dropout: fused members would not be the runs they stand for
            mode, why = "sequential", str(exc)
            results = train_round(first.task, mode=mode, **kwargs)
        if on_mode is not None:
            on_mode(mode, why)
        for i, result in zip(missing, results):
            out[i] = (_save(store, result, keys[i]), False)
    return out


def _save(store: RunStore, result, key: RunKey) -> dict:
    rid = key.run_id
    metrics = result.metrics.as_dict()
    metrics.update(run_id=rid, parent_run_id=key.parent_run_id)
    if not store.save(rid, result, metrics, key.payload()):
        # Another trial stored the same run first (two arms sharing it): report that copy,
        # the one every child trains from (on other threads float32 may differ by rounding).
        return store.load_metrics(rid)
    return metrics


def round_mode_line(study) -> str:
    """How the Oracle's rounds will be trained on this machine, and why (validate says it)."""
    mode, why = round_mode_why(study.execution.fuse, study.task, None)
    cannot = study.own_code.cannot_fuse if study.own_code is not None else None
    if mode == "fused" and cannot:
        mode, why = "sequential", cannot
    elif cannot:
        why += f"; it could not be fused anyway: {cannot}"
    return f"rounds here: {mode} ({why})"
