"""The Oracle's rule (docs/design.md, "The optimal interval and SILO's verdict"), steps 1-4.

Pure functions over one round's run rows, shared by the sweep (which must choose the winner
to continue from) and the analysis (which judges SILO). Which values a round trains (the
grid, the beam, step 5's refinement) is oracle.judge.plan's, which judges with these:

    table = round_table(rows, seeds)                       # complete grid values x seeds
    j = judge(table, grid=values_run, tolerance=0.01)      # delta: a fixed practical tolerance
    j.winner, j.judged_low, j.judged_high, j.open_low      # v*, the judged interval
    p = p_inside(j, table, silo_max_lr, grid=values_run)   # confidence, fixed RNG seed
    verdict_of(p, seeds=table.seed_count)                  # inside / outside / uncertain

Why each step (measured on the quickstart, see docs/design.md): the optimal interval is the
set of max_lr whose expected accuracy is within delta of the best's, a question that does not
change with the number of seeds (a tolerance that shrank with the seeds' standard error made
3 seeds and 30 seeds answer different questions); one grid value's standard error over 2-3
seeds is often near zero by chance, so the noise is pooled over the round's competitive
half with an additive (value + seed) model, and enters only the confidence; a grid cannot
place an optimum closer than its spacing, so each end of the interval reaches halfway (in
log) to the next grid value outside it; and the verdict is a probability, over the grid
means and the noise estimate itself, not a point test.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from silo.status import RunStatus

# Accuracies are counts of correct answers over a fixed split, so two means that differ by
# less than 1e-9 are the same mean written with different rounding: a tie. Comparisons
# round the difference to 9 decimals rather than add a slack, so that an exact boundary
# (0.5 vs 0.75 - 0.25) is a boundary, and `>=` is not `>`.
DECIMALS = 9
DRAWS = 2000
DRAW_SEED = 2212_06144  # fixed, so a report rebuilt from the same rows is identical
INSIDE_AT, OUTSIDE_AT = 0.8, 0.2
INSIDE, OUTSIDE, UNCERTAIN = "inside", "outside", "uncertain"
# delta's default (a study's `analysis.tolerance`, AnalysisSettings, may set another), accuracy
# as a fraction: one point, about one seed's noise on one val accuracy in the quickstart
# (docs/design.md says which measurements).
DEFAULT_TOLERANCE = 0.01


def retired_rule_line(tolerance: float, noise_k: float) -> str:
    """What changed for a study (or a record) written for tol = max(tolerance, noise_k * sd)."""
    return (f"analysis.noise_k ({noise_k:g}) is no longer used: the optimal interval is now every max_lr "
            f"within analysis.tolerance = {tolerance:g} (delta, accuracy as a fraction) of the best's "
            f"expected accuracy, whatever the number of seeds (it was a floor under noise_k x sd); check "
            f"that {tolerance:g} is the practical difference you mean (default {DEFAULT_TOLERANCE:g}) and "
            f"remove noise_k")


@dataclass(frozen=True)
class RoundTable:
    """The complete part of one round: val accuracy a(v, s) of ok runs, every seed present."""

    values: tuple[float, ...]  # ascending
    seeds: tuple[int, ...]  # ascending
    acc: np.ndarray  # shape (len(values), len(seeds))

    @property
    def means(self) -> np.ndarray:
        return self.acc.mean(axis=1) if len(self.values) else np.zeros(0)

    @property
    def seed_count(self) -> int:
        return len(self.seeds)


def round_table(rows: Iterable[Mapping[str, Any]], seeds: Iterable[int]) -> RoundTable:
    """The grid values whose run ran `ok` for every one of `seeds`, with their accuracies.

    A value with a diverged or failed run, or a missing seed, is not complete: it never
    enters the noise fit, V, or the winner (its seed could not continue from it). Rows of
    other seeds are ignored. The result does not depend on the order of the rows.
    """
    seeds = tuple(sorted({int(s) for s in seeds}))
    by_value: dict[float, dict[int, Mapping[str, Any]]] = {}
    for r in rows:
        by_value.setdefault(float(r["max_lr"]), {})[int(r["seed"])] = r
    values, acc = [], []
    for v in sorted(by_value):
        runs = by_value[v]
        if not seeds or any(s not in runs or runs[s].get("status") != RunStatus.OK for s in seeds):
            continue
        values.append(v)
        acc.append([float(runs[s]["val_acc"]) for s in seeds])
    return RoundTable(tuple(values), seeds, np.asarray(acc, dtype=float).reshape(len(values), len(seeds)))


def competitive(table: RoundTable, pool: int | None = None) -> np.ndarray:
    """Row indices of the H = max(3, ceil(G/2)) complete values with the highest means
    (`pool`: H as given, for a beam round, capped at the complete values)."""
    g = len(table.values)
    h = (g if g <= 3 else max(3, math.ceil(g / 2))) if pool is None else min(g, int(pool))
    # Stable on (-mean, value): equal means keep the smaller max_lr first.
    order = sorted(range(g), key=lambda i: (-table.means[i], table.values[i]))
    return np.asarray(sorted(order[:h]), dtype=int)


def pooled_sigma(table: RoundTable, pool: int | None = None) -> float | None:
    """sigma_q: residual sd of a(v, s) = m(v) + b(s) + e over the competitive values.

    Seeds are paired across a round (same parent, init, data order), so the seed effect
    b(s) is not noise. None when there is no estimate (one seed, or one complete value).
    """
    rows = competitive(table, pool)
    h, s = len(rows), table.seed_count
    if h < 2 or s < 2:
        return None
    x = table.acc[rows]
    e = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + x.mean()
    return float(math.sqrt(float((e**2).sum()) / ((h - 1) * (s - 1))))


def at_least(a: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """a >= b for accuracies, with differences below 1e-9 counted as equality."""
    return np.round(np.asarray(a, dtype=float) - b, DECIMALS) >= 0


def winner_index(means: np.ndarray) -> int:
    """argmax of the means; ties (within 1e-9) go to the smaller max_lr (the first index)."""
    return int(np.flatnonzero(at_least(means, means.max()))[0])


def geometric_midpoint(a: float, b: float) -> float:
    return math.sqrt(a * b)


def _neighbours(values: tuple[float, ...], grid: Iterable[float]) -> tuple[list[float | None], list[float | None]]:
    """For each complete value, the next grid value below and above it (None at an edge)."""
    everything = sorted(set(float(g) for g in grid) | set(values))
    below, above = [], []
    for v in values:
        i = everything.index(v)
        below.append(everything[i - 1] if i > 0 else None)
        above.append(everything[i + 1] if i + 1 < len(everything) else None)
    return below, above


@dataclass(frozen=True)
class Judgement:
    """One round judged: v*, the noise, V, the grid interval and the judged interval."""

    winner: float  # v*
    winner_mean: float
    sigma: float | None  # pooled residual sd; None: no estimate (one seed)
    dof: int  # sigma's degrees of freedom, (H-1)(S-1); 0 without an estimate
    sd: float  # standard error of a difference of two grid means (0 without an estimate)
    delta: float  # the practical tolerance: V is every value within delta of the best mean
    members: tuple[float, ...]  # V, ascending
    low: float  # min V: the grid interval
    high: float  # max V
    judged_low: float
    judged_high: float
    open_low: bool  # the end is the grid's own end: the best max_lr may lie beyond it
    open_high: bool
    below: float | None  # the grid value next to min V outside V (None when open)
    above: float | None

    def contains(self, max_lr: float) -> bool:
        return self.judged_low <= max_lr <= self.judged_high


def judge(table: RoundTable, *, grid: Iterable[float], tolerance: float,
          pool: int | None = None) -> Judgement | None:
    """Steps 1-3 of the rule on a round's complete table; None if no value is complete.

    `tolerance`: delta, in accuracy as a fraction. It alone defines V, whatever the number
    of seeds: the noise (sigma, sd) is estimated here for the confidence (step 4) and the
    report, and never widens nor narrows the interval.
    `grid`: every max_lr of this round's lineage (planned grid, refinement values, and any
    value that ran but is incomplete), so each end of V finds its outside neighbour.
    `pool`: how many of the best complete values the noise is pooled over, when not the
    round's own half (RoundPlan.pool: a beam round pools as many as the whole grid's round).
    """
    if not table.values:
        return None
    sigma = pooled_sigma(table, pool)
    dof = 0 if sigma is None else (len(competitive(table, pool)) - 1) * (table.seed_count - 1)
    sd = 0.0 if sigma is None else sigma * math.sqrt(2.0 / table.seed_count)
    below, above = _neighbours(table.values, grid)
    return _judged(table.values, table.means, float(tolerance), sigma, dof, sd, below, above)


def _judged(values: tuple[float, ...], means: np.ndarray, delta: float, sigma: float | None, dof: int,
            sd: float, below: list[float | None], above: list[float | None]) -> Judgement:
    w = winner_index(means)
    keep = np.flatnonzero(at_least(means, means[w] - delta))
    lo, hi = int(keep[0]), int(keep[-1])
    under, over = below[lo], above[hi]  # locals, so that `is None` narrows them
    return Judgement(
        winner=values[w], winner_mean=float(means[w]), sigma=sigma, dof=dof, sd=sd, delta=delta,
        members=tuple(values[i] for i in keep), low=values[lo], high=values[hi],
        judged_low=values[lo] if under is None else geometric_midpoint(under, values[lo]),
        judged_high=values[hi] if over is None else geometric_midpoint(values[hi], over),
        open_low=under is None, open_high=over is None,
        below=under, above=over,
    )


def p_inside(j: Judgement, table: RoundTable, max_lr: float, *, grid: Iterable[float],
             draws: int = DRAWS, seed: int = DRAW_SEED) -> float:
    """Step 4: the share of draws from the grid means' uncertainty whose judged interval
    holds `max_lr` (IntervalDraws). Without a noise estimate every draw is the point
    estimate, so the answer is 1.0 or 0.0."""
    return float(IntervalDraws.of(j, table, grid=grid, draws=draws, seed=seed).share([max_lr])[0])


def mean_scales(sigma: float | None, dof: int, seed_count: int, rng: np.random.Generator,
                draws: int) -> np.ndarray:
    """Per draw, the standard error of one grid mean, sigma / sqrt(S), with sigma itself drawn.

    With 2-3 seeds sigma_q rests on a handful of degrees of freedom and may be far off: a
    noise estimate that came out small by chance would make every draw agree and P extreme.
    So each draw takes sigma^2 from its posterior given the residuals, scaled-inverse-chi-square
    with dof degrees of freedom and scale sigma_q^2 (dof * sigma_q^2 / chi2(dof)), which makes
    each grid mean's marginal a t with dof degrees of freedom. Zeros without an estimate."""
    if sigma is None or dof < 1:
        return np.zeros(draws)
    return sigma * np.sqrt(dof / rng.chisquare(dof, draws)) / math.sqrt(seed_count)


@dataclass(frozen=True)
class IntervalDraws:
    """Step 4's draws of one round: each draw's judged interval [low, high].

    Each draw replaces every grid mean by m(v) + (sigma / sqrt(S)) z, sigma drawn as
    `mean_scales` says and z standard normal, and recomputes v*, V and the judged interval
    with delta fixed: the share of draws whose interval holds a max_lr is the probability
    that it lies in the interval of the expected accuracies, given the data.

    Made once, `share` answers p_inside for many max_lr at once (a calibration asks for
    thousands): every draw has low <= high, so `high < x` implies `low <= x` and the count
    inside is #(low <= x) - #(high < x), two binary searches per max_lr. It is the same
    integer count as the direct test, so the share is the same float."""

    lows: np.ndarray  # sorted
    highs: np.ndarray  # sorted

    @classmethod
    def of(cls, j: Judgement, table: RoundTable, *, grid: Iterable[float], draws: int = DRAWS,
           seed: int = DRAW_SEED) -> IntervalDraws:
        rng = np.random.default_rng(seed)
        scales = mean_scales(j.sigma, j.dof, table.seed_count, rng, draws)
        z = rng.standard_normal((draws, len(table.values)))
        return cls.drawn(j, table, grid=grid, scales=scales, z=z)

    @classmethod
    def drawn(cls, j: Judgement, table: RoundTable, *, grid: Iterable[float], scales: np.ndarray,
              z: np.ndarray) -> IntervalDraws:
        """The intervals of the means m(v) + scales[d] * z[d, v], one per draw d."""
        values = table.values
        below, above = _neighbours(values, grid)
        lows = np.array([v if b is None else geometric_midpoint(b, v) for v, b in zip(values, below)])
        highs = np.array([v if a is None else geometric_midpoint(v, a) for v, a in zip(values, above)])
        means = table.means[None, :] + scales[:, None] * z
        member = at_least(means, means.max(axis=1, keepdims=True) - j.delta)
        first = member.argmax(axis=1)
        last = len(values) - 1 - member[:, ::-1].argmax(axis=1)
        # lows[i] <= values[i] <= highs[i] and first <= last, so every draw's low <= high.
        return cls(np.sort(lows[first]), np.sort(highs[last]))

    def share(self, max_lrs: npt.ArrayLike) -> np.ndarray:
        """The share of draws whose judged interval holds each of `max_lrs` (same shape)."""
        x = np.asarray(max_lrs, dtype=float)
        inside = np.searchsorted(self.lows, x, side="right") - np.searchsorted(self.highs, x, side="left")
        return inside / len(self.lows)


MAX_SEEDS = 1000  # seeds_to_decide looks no further


def seeds_to_decide(j: Judgement, table: RoundTable, max_lr: float, *, grid: Iterable[float],
                    draws: int = DRAWS, seed: int = DRAW_SEED) -> int | None:
    """What would decide an uncertain verdict: the fewest seeds with which P(inside) would
    reach 0.8 or fall to 0.2 if the grid means stayed as measured and the noise were sigma_q,
    drawn as step 4 draws it with the degrees of freedom n seeds would give (a projection,
    not a promise: the means move as seeds are added). None without a noise estimate, or
    when more than MAX_SEEDS would be needed (the best's mean and SILO's neighbour's differ
    by about delta itself: no number of seeds separates them)."""
    if j.sigma is None:
        return None
    grid = tuple(grid)
    per_seed = j.dof // (table.seed_count - 1)  # H - 1

    def decided(n: int) -> bool:
        rng = np.random.default_rng(seed)  # the same draws for every n: P moves only with n
        scales = mean_scales(j.sigma, per_seed * (n - 1), n, rng, draws)
        z = rng.standard_normal((draws, len(table.values)))
        p = float(IntervalDraws.drawn(j, table, grid=grid, scales=scales, z=z).share([max_lr])[0])
        return p >= INSIDE_AT or p <= OUTSIDE_AT

    low, high = table.seed_count, table.seed_count + 1
    while not decided(high):  # doubling, then bisection: P moves away from 0.5 as n grows
        if high >= MAX_SEEDS:
            return None
        low, high = high, min(2 * high, MAX_SEEDS)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if decided(mid) else (mid, high)
    return high


def verdict_of(p: float, *, seeds: int) -> str:
    """inside if P >= 0.8, outside if P <= 0.2, else uncertain (one seed: the point estimate)."""
    if seeds <= 1:
        return INSIDE if p >= 0.5 else OUTSIDE
    if p >= INSIDE_AT:
        return INSIDE
    if p <= OUTSIDE_AT:
        return OUTSIDE
    return UNCERTAIN
