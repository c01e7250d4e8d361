"""A plain sequential driver: one seed's chain of Q cycles in one process.

It is the reference the distributed Oracle must agree with, and what the tests use.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from silo.config import TaskConfig
from silo.data import DataCache, Splits, load_data
from silo.train import RunResult, resolve_device, train_run


def run_chain(
    task: TaskConfig,
    *,
    seed: int,
    cycles: int,
    peak: Callable[[int], float],
    data: Splits | None = None,
    cache: DataCache | None = None,
    device: torch.device | str | None = None,
    on_run: Callable[[RunResult], None] | None = None,
) -> list[RunResult]:
    """Train cycles 0..cycles-1, each from the previous one, with max_lr = peak(cycle)."""
    if cycles < 1:
        raise ValueError(f"cycles must be >= 1, got {cycles}")
    device = resolve_device(task.device) if device is None else torch.device(device)
    if data is None:
        data = load_data(task.data, seed=seed, device=device, cache=cache)
    results: list[RunResult] = []
    parent = None
    for cycle in range(cycles):
        result = train_run(
            task, seed=seed, cycle=cycle, max_lr=peak(cycle), parent=parent, data=data, device=device
        )
        results.append(result)
        if on_run is not None:
            on_run(result)
        parent = result.state
    return results
