"""One cycle's row of verdicts.csv: the Oracle's winner and interval, SILO's max_lr and its
verdict against the interval (oracle.judge.selection), both arms' accuracy, and the cycle's
findings (oracle.judge.facts: the report says them, oracle.report.notes). The accuracy
statistics every table of the analysis shares (mean, sample std, standard error over seeds)
are here too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from oracle.judge.facts import Fact, Finding
from oracle.judge.lineage import OracleRound
from oracle.judge.selection import UNCERTAIN, p_inside, seeds_to_decide, verdict_of
from oracle.store.arms import ORACLE, SILO
from silo.status import RunStatus

VERDICT_COLUMNS = [
    "cycle", "sparsity", "oracle_max_lr", "interval_low", "interval_high", "judged_low",
    "judged_high", "open_low", "open_high", "silo_max_lr", "silo_in_interval", "silo_position",
    "p_inside", "verdict", "oracle_val_acc", "silo_val_acc", "oracle_test_acc",
    "silo_test_acc", "gap_val_acc", "gap_test_acc", "oracle_val_std", "silo_val_std",
    "oracle_test_std", "silo_test_std", "oracle_val_se", "sd", "delta", "seeds", "seeds_to_decide",
    "grid_values_ok", "grid_values_run", "interval_values", "refined_values", "note",
]

def mean(s: pd.Series) -> float:
    s = s.dropna()
    return float(s.mean()) if len(s) else math.nan


def std(s: pd.Series) -> float:
    s = s.dropna()
    return float(s.std(ddof=1)) if len(s) > 1 else math.nan


def se(s: pd.Series) -> float:
    """Standard error of one value's mean over seeds (0 with one seed)."""
    s = s.dropna()
    return float(s.std(ddof=1) / math.sqrt(len(s))) if len(s) > 1 else 0.0


def _stat(arm_stats: pd.DataFrame, arm: str, q: int, col: str) -> float:
    hit = arm_stats[(arm_stats["arm"] == arm) & (arm_stats["cycle"] == q)]
    return float(hit[col].iloc[0]) if len(hit) else math.nan


def _silo_max_lr(q: int, rows: pd.DataFrame, silo_plan: Sequence[float | None] | None, has_silo: bool) -> float:
    silo_rows = rows[(rows["arm"] == SILO) & (rows["cycle"] == q)]
    planned = silo_plan[q] if has_silo and silo_plan and q < len(silo_plan) else None
    if planned is not None:
        return float(planned)
    if not silo_rows.empty:
        return float(silo_rows["max_lr"].iloc[0])
    return math.nan


def verdict_row(q: int, rows: pd.DataFrame, arm_stats: pd.DataFrame, r: OracleRound | None,
             silo_plan: Sequence[float | None] | None, has_silo: bool, has_oracle: bool, seeds: list[int], *,
             in_progress: bool, stopped: OracleRound | None) -> dict[str, Any]:
    """Cycle q's row of verdicts.csv: the Oracle's interval, SILO's place in it, both arms'
    accuracy, and the cycle's notes."""
    j = r.judgement if r else None
    silo_lr = _silo_max_lr(q, rows, silo_plan, has_silo)
    inside, position, p, verdict, more = _judge_silo(r, silo_lr)
    oracle_runs = r.rows if r else rows.iloc[0:0]
    silo_rows = rows[(rows["arm"] == SILO) & (rows["cycle"] == q)]
    o, s = _accuracy(arm_stats, ORACLE, q), _accuracy(arm_stats, SILO, q)
    if has_oracle and r is None and stopped is not None:
        notes = [Fact(Finding.NOT_REACHED_STOPPED, cycle=stopped.cycle), *_silo_notes(silo_rows, has_silo)]
    elif has_oracle and r is None and in_progress:
        notes = [Fact(Finding.IN_PROGRESS)]  # the cycle's one note until the Oracle reaches it
    else:
        notes = [*_oracle_notes(r, oracle_runs, has_oracle, seeds), *_silo_notes(silo_rows, has_silo)]
    winner_runs = (oracle_runs[(oracle_runs["max_lr"] == j.winner) & (oracle_runs["status"] == RunStatus.OK)]
                   if j else None)
    return {
        "cycle": q, "sparsity": _sparsity(arm_stats, q),
        "oracle_max_lr": j.winner if j else math.nan,
        "interval_low": j.low if j else math.nan,
        "interval_high": j.high if j else math.nan,
        "judged_low": j.judged_low if j else math.nan,
        "judged_high": j.judged_high if j else math.nan,
        "open_low": j.open_low if j else None,
        "open_high": j.open_high if j else None,
        "silo_max_lr": silo_lr, "silo_in_interval": inside, "silo_position": position,
        "p_inside": p, "verdict": verdict,
        "oracle_val_acc": o["val_acc_mean"], "silo_val_acc": s["val_acc_mean"],
        "oracle_test_acc": o["test_acc_mean"], "silo_test_acc": s["test_acc_mean"],
        "gap_val_acc": s["val_acc_mean"] - o["val_acc_mean"],
        "gap_test_acc": s["test_acc_mean"] - o["test_acc_mean"],
        "oracle_val_std": o["val_acc_std"], "silo_val_std": s["val_acc_std"],
        "oracle_test_std": o["test_acc_std"], "silo_test_std": s["test_acc_std"],
        "oracle_val_se": se(winner_runs["val_acc"]) if winner_runs is not None else math.nan,
        "sd": j.sd if j else math.nan,
        "delta": j.delta if j else math.nan,
        "seeds": r.table.seed_count if j and r else 0,
        "seeds_to_decide": more,
        "grid_values_ok": len(r.table.values) if r else 0,
        "grid_values_run": int(oracle_runs["max_lr"].nunique()),
        "interval_values": len(j.members) if j else 0,
        "refined_values": len(r.refined) if r else 0,
        "note": notes,  # facts here; tabulate() moves them to Analysis.cycle_facts
    }


def _judge_silo(r: OracleRound | None,
                silo_lr: float) -> tuple[bool | None, str | None, float | None, str | None, int | None]:
    """(silo_in_interval, silo_position, p_inside, verdict, seeds_to_decide); all None
    without an interval or a SILO max_lr; seeds_to_decide only for an uncertain verdict."""
    j = r.judgement if r else None
    if r is None or j is None or math.isnan(silo_lr):
        return None, None, None, None, None
    inside = j.contains(silo_lr)
    position = "inside" if inside else ("above" if silo_lr > j.judged_high else "below")
    p = p_inside(j, r.table, silo_lr, grid=r.neighbours)
    verdict = verdict_of(p, seeds=r.table.seed_count)
    more = seeds_to_decide(j, r.table, silo_lr, grid=r.neighbours) if verdict == UNCERTAIN else None
    return inside, position, p, verdict, more


def _sparsity(arm_stats: pd.DataFrame, q: int) -> float:
    """The cycle's sparsity: the Oracle's, else SILO's, else the first arm's that has one."""
    sparsity = math.nan
    for arm in (ORACLE, SILO, *arm_stats["arm"].unique().tolist()):
        sparsity = _stat(arm_stats, arm, q, "sparsity")
        if not math.isnan(sparsity):
            break
    return sparsity


def _accuracy(arm_stats: pd.DataFrame, arm: str, q: int) -> dict[str, float]:
    return {c: _stat(arm_stats, arm, q, c) for c in ("val_acc_mean", "val_acc_std", "test_acc_mean", "test_acc_std")}


def _oracle_notes(r: OracleRound | None, oracle_runs: pd.DataFrame, has_oracle: bool, seeds: list[int]) -> list[Fact]:
    if r is None:
        return [Fact(Finding.NOT_REACHED)] if has_oracle else []
    j = r.judgement
    if has_oracle and j is None and r.pending:
        return [Fact(Finding.PENDING, values=r.pending)]
    if has_oracle and j is None:
        return [Fact(Finding.STOPPED_HERE)]
    if j is None:
        return []
    notes: list[Fact] = []
    if r.pending:  # judged on the values that ran; the pending ones may move it
        notes.append(Fact(Finding.PROVISIONAL, values=r.pending))
    chosen = sorted(set(oracle_runs.loc[oracle_runs["chosen"], "max_lr"].tolist()))
    if chosen and chosen != [j.winner]:
        notes.append(Fact(Finding.CHOICE_DIFFERS, values=tuple(float(v) for v in chosen)))
    if j.open_low or j.open_high:
        notes.append(Fact(Finding.BEYOND_GRID))
    if len(seeds) == 1:
        notes.append(Fact(Finding.ONE_SEED_CYCLE))
    return notes


def _silo_notes(silo_rows: pd.DataFrame, has_silo: bool) -> list[Fact]:
    if not has_silo:
        return []
    if silo_rows.empty:
        return [Fact(Finding.NO_SILO_RUNS)]
    if not (silo_rows["status"] == RunStatus.OK).all():
        ended = sorted(str(x) for x in set(silo_rows["status"]) - {RunStatus.OK})
        return [Fact(Finding.SILO_NOT_OK, labels=tuple(ended))]
    return []
