"""Obtain runs: from the store if complete there, else by training them (one run, or the
members of one Oracle round together)."""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch

from oracle.store.identity import RunKey
from oracle.store.runs import RunStore
from silo.accel import CompileCache, ExecutionConfig
from silo.config import TaskConfig
from silo.data import DataCache
from silo.round import FusionUnsupported, Mode, Share, train_shares
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


def round_mode(fuse: str, task: TaskConfig, device: torch.device | str | None) -> Mode:
    """`fused` or `sequential` for the study's `execution.fuse` (auto | on | off)."""
    return round_mode_why(fuse, task, device)[0]


def round_mode_why(fuse: str, task: TaskConfig, device: torch.device | str | None) -> tuple[Mode, str]:
    """round_mode and the reason for it, in a few words (what `run` and `status` say). A
    precision other than fp32 fuses where fp32 does: the fused step casts as autocast would
    (silo.fused_precision), which the reason says."""
    mode, why = _mode_why(fuse, task, device)
    if mode == "fused" and task.precision != "fp32":
        why += f"; {task.precision} cast explicitly in the fused step"
    return mode, why


def _mode_why(fuse: str, task: TaskConfig, device: torch.device | str | None) -> tuple[Mode, str]:
    if fuse in ("on", "off"):
        return ("fused" if fuse == "on" else "sequential"), f"execution.fuse: {fuse}"
    device = resolve_device(task.device) if device is None else torch.device(device)
    if device.type == "cuda":
        return "fused", "auto: on CUDA"
    if task.model in FUSED_ON_CPU:
        return "fused", "auto: measured faster fused on a CPU"
    return "sequential", "auto: on a CPU only the MNIST-1D models are measured faster fused"


def seeds_fused(fuse: str, fuse_seeds: str, task: TaskConfig, device: torch.device | str | None) -> bool:
    """Whether one trial trains several seeds' shares of a round as one stack: only where
    rounds fuse, and with `fuse_seeds` auto only on CUDA (on a CPU one seed's values are as
    many members as pay)."""
    if round_mode(fuse, task, device) != "fused" or fuse_seeds == "off":
        return False
    if fuse_seeds == "on":
        return True
    device = resolve_device(task.device) if device is None else torch.device(device)
    return device.type == "cuda"


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
    """(metrics, reused) per member of one round: keys of one task and cycle, from one or
    several seeds (`execution.fuse_seeds`), each seed's keys differing only in max_lr. The
    members complete in the store are reused, the others trained together (silo.round) and
    each saved as the run it is, so a fused member and the same run trained alone share
    their id and folder. `on_mode(mode, why)` hears how the missing members were trained
    (why ends with the fused shape, e.g. "6 values x 2 seeds"); `progress` each epoch of
    theirs (silo.round's, lists over the missing members, whose max_lrs and seeds it also
    gets as `max_lrs` and `seeds`).

    Out of memory, a fused round trains again in two halves (and so on), saying so in why:
    the runs already finished are in the store, and the halves reuse them."""
    shares = _shares(keys)
    found = [store.find(k.run_id) for k in keys]
    missing = [i for i, f in enumerate(found) if f is None]
    out: list[tuple[dict, bool] | None] = [(f, True) if f is not None else None for f in found]
    if missing:
        def train(mode: Mode, why: str) -> tuple[list[dict], Mode, str]:
            return _train_missing(store, [keys[i] for i in missing], mode, why, shares, dict(
                cache=cache, device=device, execution=execution, compiled=compiled), progress)

        try:
            results, mode, why = train(*round_mode_why(fuse, keys[0].task, device))
        except FusionUnsupported as exc:  # e.g. Dropout: fused members would not be the runs they stand for
            results, mode, why = train("sequential", str(exc))
        if on_mode is not None:
            on_mode(mode, why)
        for i, metrics in zip(missing, results):
            out[i] = (metrics, False)
    done = [member for member in out if member is not None]
    assert len(done) == len(out), "every member was found in the store or trained"
    return done


def _shares(keys: list[RunKey]) -> dict[int, RunKey]:
    """Each seed's first key; a ValueError unless the keys are one round's (one task and
    cycle; per seed one parent, differing only in max_lr)."""
    first = keys[0]
    by_seed: dict[int, RunKey] = {}
    for k in keys:
        head = by_seed.setdefault(k.seed, k)
        if k != head.at(k.max_lr) or k.task != first.task or k.cycle != first.cycle:
            raise ValueError("obtain_round: the members of a round differ only in max_lr (per seed)")
    return by_seed


def _train_missing(store: RunStore, keys: list[RunKey], mode: Mode, why: str, shares: dict[int, RunKey],
                   common: dict, progress) -> tuple[list[dict], Mode, str]:
    """Train `keys` (a round's missing members) as one stack, or sequentially; their saved
    metrics in order, and the mode and why that trained them."""
    first = keys[0]
    seeds = sorted({k.seed for k in keys}, key=list(shares).index)
    groups = [[k for k in keys if k.seed == s] for s in seeds]
    order = [k for group in groups for k in group]  # share after share, as silo.round reports them
    parts = [Share(s, [k.max_lr for k in group],
                   store.load_state(group[0].parent_run_id) if group[0].parent_run_id is not None else None)
             for s, group in zip(seeds, groups)]
    said = None if progress is None else (lambda info: progress(
        {**info, "max_lrs": [k.max_lr for k in order], "seeds": [k.seed for k in order]}))
    if mode == "fused":
        why = f"{_shape(groups)}; {why}"
    try:
        results = train_shares(first.task, cycle=first.cycle, shares=parts, mode=mode, progress=said, **common)
    except torch.OutOfMemoryError:
        if mode != "fused" or len(keys) == 1:
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        half = len(order) // 2
        print(f"out of memory fusing {len(order)} runs of cycle {first.cycle}: training them in two halves "
              f"of {half} and {len(order) - half}", file=sys.stderr, flush=True)
        metrics = []
        for part in (order[:half], order[half:]):
            done, mode, part_why = _train_missing(store, part, mode, why.split("; ", 1)[1], shares, common,
                                                  progress)
            metrics += done
        by_id = dict(zip((k.run_id for k in order), metrics))
        return [by_id[k.run_id] for k in keys], mode, f"halved after running out of memory; {part_why}"
    saved = {k.run_id: _save(store, r, k) for group, rs in zip(groups, results) for k, r in zip(group, rs)}
    return [saved[k.run_id] for k in keys], mode, why


def _shape(groups: list[list[RunKey]]) -> str:
    """A fused stack in words: "6 values x 2 seeds", or its members when the seeds' values differ."""
    sizes = {len(g) for g in groups}
    if len(groups) == 1:
        return f"{len(groups[0])} values"
    if len(sizes) == 1:
        return f"{sizes.pop()} values x {len(groups)} seeds"
    return f"{sum(len(g) for g in groups)} runs of {len(groups)} seeds"


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
    ex = study.execution
    if mode == "fused" and seeds_fused(ex.fuse, ex.fuse_seeds, study.task, None):
        why += f"; seeds fused, up to {ex.max_members} runs a trial"
    return f"rounds here: {mode} ({why})"
