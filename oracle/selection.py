"""The Oracle's rule (DESIGN.md): its winner per cycle and its optimal interval.

Pure functions over per-run records, shared by the sweep (which must choose winners to go
on) and the analysis (which judges SILO against the interval).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping


@dataclass(frozen=True)
class GridPoint:
    max_lr: float
    mean_val_acc: float
    se: float  # standard error over seeds; 0 with one seed
    seeds: int


def grid_points(records: Iterable[Mapping], seeds: Iterable[int] | None = None) -> list[GridPoint]:
    """Mean val accuracy per grid value over seeds, for values whose every seed ran ok.

    A value with a diverged or failed run is left out entirely: the seed whose run failed
    could not continue from it, and DESIGN.md keeps such runs out of the interval.
    """
    by_value: dict[float, list[Mapping]] = defaultdict(list)
    for r in records:
        by_value[float(r["max_lr"])].append(r)
    wanted = set(seeds) if seeds is not None else None
    points = []
    for v, runs in sorted(by_value.items()):
        if any(r.get("status") != "ok" for r in runs):
            continue
        if wanted is not None and {int(r["seed"]) for r in runs} != wanted:
            continue  # a seed is missing: the value is incomplete
        accs = [float(r["val_acc"]) for r in runs]
        n = len(accs)
        mean = sum(accs) / n
        se = math.sqrt(sum((a - mean) ** 2 for a in accs) / (n - 1) / n) if n > 1 else 0.0
        points.append(GridPoint(v, mean, se, n))
    return points


def choose_winner(points: list[GridPoint]) -> GridPoint | None:
    """argmax of the mean val accuracy; ties go to the smaller max_lr."""
    best = None
    for p in sorted(points, key=lambda p: p.max_lr):
        if best is None or p.mean_val_acc > best.mean_val_acc:
            best = p
    return best


@dataclass(frozen=True)
class Interval:
    winner: GridPoint
    tol: float
    low: float
    high: float

    def contains(self, max_lr: float) -> bool:
        return self.low <= max_lr <= self.high


def optimal_interval(points: list[GridPoint], *, tolerance: float, noise_k: float) -> Interval | None:
    """[min V, max V] with V = {v : a(v) >= a(v*) - max(tolerance, noise_k * SE(v*))}."""
    winner = choose_winner(points)
    if winner is None:
        return None
    tol = max(tolerance, noise_k * winner.se)
    inside = [p.max_lr for p in points if p.mean_val_acc >= winner.mean_val_acc - tol]
    return Interval(winner, tol, min(inside), max(inside))
