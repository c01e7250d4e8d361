"""Paired comparisons: each arm against SILO and against the Oracle, per cycle, paired by seed.

    table = paired_comparisons(analysis.rows, analysis.verdicts, analysis.summary["arms"])
    comparison_summary(table)        # per pair: the last cycle's difference, counts of readings

Pure: rows in, a table out (COLUMNS, one row per (arm, reference, cycle)).

Definitions (docs/design.md, "Paired comparisons"):
- A pair is (arm, reference) with reference `silo` (every baseline: baseline - SILO) or
  `oracle` (SILO and every baseline: arm - Oracle, so SILO's row is the verdict table's gap).
- At cycle q, seed s pairs the arm's ok run with the reference's ok run of the same seed and
  cycle (for the Oracle: its run at the round's winner). Seeds missing on either side are left
  out; `seeds` counts the pairs. Seeds are paired because the same seed fixes the same init,
  data order and validation split, so the seed's own luck cancels in the difference.
- d_s = test_acc(arm, s) - test_acc(reference, s); `mean_diff` its mean, `sd_diff` its sample
  std. The 95 % t interval: mean_diff +- t_{0.975, n-1} * sd_diff / sqrt(n) (n >= 2). The
  percentile bootstrap: 10,000 resamples of the n seeds with replacement (fixed RNG seed, so a
  rebuilt report is identical), the 2.5 and 97.5 percentiles of the resampled means, only
  where n >= 4 (with fewer seeds it has too few distinct resamples to mean anything).
- Reading, of the arm against the reference, from the t interval: `better` if its low end is
  above 0, `worse` if its high end is below 0, `not separated` otherwise (also with one pair:
  no interval). The bootstrap, where there is one, is shown beside it as a check that does not
  lean on normality; the reading does not change with it, since a percentile bootstrap over
  4-10 seeds is known to be too narrow.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from oracle.store.arms import ORACLE, SILO
from oracle.store.plain import json_safe
from silo.status import RunStatus

LEVEL = 0.95
BOOTSTRAP_MIN_SEEDS = 4
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 20230  # fixed: the same record gives the same report
METRIC = "test_acc"
BETTER, WORSE, NOT_SEPARATED = "better", "worse", "not separated"
READINGS = (BETTER, WORSE, NOT_SEPARATED)

COLUMNS = [
    "arm", "reference", "cycle", "sparsity", "metric", "seeds", "arm_mean", "reference_mean",
    "mean_diff", "sd_diff", "t_low", "t_high", "bootstrap_low", "bootstrap_high", "interval",
    "reading", "last_cycle",
]


def pairs(arms: Iterable[str]) -> list[tuple[str, str]]:
    """(arm, reference) for every comparison the study's arms allow."""
    arms = list(arms)
    baselines = [a for a in arms if a not in (SILO, ORACLE)]
    out = []
    if SILO in arms:
        out += [(b, SILO) for b in baselines]
    if ORACLE in arms:
        out += [(a, ORACLE) for a in ([SILO] if SILO in arms else []) + baselines]
    return out


def t_interval(diffs: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The t interval of the mean of paired differences; (nan, nan) with fewer than 2."""
    n = len(diffs)
    if n < 2:
        return math.nan, math.nan
    mean = float(np.mean(diffs))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * float(np.std(diffs, ddof=1)) / math.sqrt(n)
    return mean - half, mean + half


def bootstrap_interval(diffs: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap of the mean over seeds; (nan, nan) below BOOTSTRAP_MIN_SEEDS."""
    if len(diffs) < BOOTSTRAP_MIN_SEEDS:
        return math.nan, math.nan
    if np.all(diffs == diffs[0]):  # every resample is the same mean
        return float(diffs[0]), float(diffs[0])
    res = stats.bootstrap((diffs,), np.mean, confidence_level=level, n_resamples=BOOTSTRAP_RESAMPLES,
                          method="percentile", rng=np.random.default_rng(BOOTSTRAP_SEED))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def reading(low: float, high: float) -> str:
    """better / worse / not separated, from an interval of arm - reference."""
    if math.isnan(low) or math.isnan(high):
        return NOT_SEPARATED
    if low > 0:
        return BETTER
    if high < 0:
        return WORSE
    return NOT_SEPARATED


def per_seed(rows: pd.DataFrame, verdicts: pd.DataFrame, arm: str, cycle: int) -> pd.Series:
    """The arm's test accuracy per seed at the cycle (ok runs; the Oracle's at its winner)."""
    mine = rows[(rows["arm"] == arm) & (rows["cycle"] == cycle) & (rows["status"] == RunStatus.OK)]
    if arm == ORACLE:
        hit = verdicts.loc[verdicts["cycle"] == cycle, "oracle_max_lr"]
        winner = float(hit.iloc[0]) if len(hit) else math.nan
        if math.isnan(winner):
            return pd.Series(dtype=float)
        mine = mine[mine["max_lr"] == winner]
    return mine.groupby("seed")[METRIC].first().dropna()


def paired_comparisons(rows: pd.DataFrame, verdicts: pd.DataFrame, arms: Iterable[str]) -> pd.DataFrame:
    """One row per (arm, reference, cycle) where at least one seed pairs up."""
    out = []
    sparsity = dict(zip(verdicts["cycle"].astype(int), verdicts["sparsity"]))
    for arm, ref in pairs(arms):
        found = []
        for q in sorted(int(c) for c in verdicts["cycle"]):
            a, r = per_seed(rows, verdicts, arm, q), per_seed(rows, verdicts, ref, q)
            seeds = sorted(set(a.index) & set(r.index))
            if not seeds:
                continue
            d = (a.loc[seeds] - r.loc[seeds]).to_numpy(dtype=float)
            t_low, t_high = t_interval(d)
            b_low, b_high = bootstrap_interval(d)
            found.append({
                "arm": arm, "reference": ref, "cycle": q, "sparsity": sparsity.get(q, math.nan),
                "metric": METRIC, "seeds": len(seeds),
                "arm_mean": float(a.loc[seeds].mean()), "reference_mean": float(r.loc[seeds].mean()),
                "mean_diff": float(d.mean()), "sd_diff": float(d.std(ddof=1)) if len(d) > 1 else math.nan,
                "t_low": t_low, "t_high": t_high, "bootstrap_low": b_low, "bootstrap_high": b_high,
                "interval": ("t and bootstrap" if not math.isnan(b_low) else "t" if not math.isnan(t_low)
                             else "none (one seed)"),
                "reading": reading(t_low, t_high), "last_cycle": False,
            })
        if found:
            found[-1]["last_cycle"] = True
        out += found
    return pd.DataFrame(out, columns=COLUMNS)


def comparison_summary(table: pd.DataFrame) -> dict[str, Any]:
    """summary.json's "comparisons": how they are made, and per pair its last cycle's
    difference (with both intervals) and how many cycles read better / worse / not separated."""
    by_pair = []
    for (arm, ref), grp in table.groupby(["arm", "reference"], sort=False):
        last = grp[grp["last_cycle"]].iloc[0]
        by_pair.append({
            "arm": arm, "reference": ref,
            "last": {k: json_safe(last[k]) for k in ("cycle", "sparsity", "seeds", "arm_mean", "reference_mean",
                                                  "mean_diff", "t_low", "t_high", "bootstrap_low",
                                                  "bootstrap_high", "interval", "reading")},
            "cycles": {r: int((grp["reading"] == r).sum()) for r in READINGS},
        })
    return {"metric": METRIC, "level": LEVEL, "difference": "arm - reference, paired by seed",
            "reading_from": "t interval", "bootstrap_min_seeds": BOOTSTRAP_MIN_SEEDS, "pairs": by_pair}


def last_of(summary: Mapping[str, Any], arm: str, reference: str) -> dict[str, Any] | None:
    """The last cycle's comparison of (arm, reference) from a summary's "comparisons"."""
    for p in (summary.get("comparisons") or {}).get("pairs", []):
        if p["arm"] == arm and p["reference"] == reference:
            last: dict[str, Any] = p["last"]  # summary.json: the pair's last cycle, a JSON object
            return last
    return None

