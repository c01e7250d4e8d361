# mypy: ignore-errors
# Not yet typed (issue 31, open): the one module of oracle/judge the strict check skips until it
# is cut into lineage and tables.
"""Analysis of a study from its Optuna record alone: the Oracle's interval, SILO's verdict,
every arm's accuracy, and the compute each arm spent. Pure: rows and attributes in, tables
and numbers out, with the short notes on the data that only the analysis sees (each cycle's
`note`, `messages`). The verdict in words is oracle.report.render's (`verdict_text`, from the
summary); oracle.report.build.analyse_record puts the two together, as every report is built.

    record = oracle.store.record.load_record(storage, "smoke")   # the Optuna record's rows and attrs
    result = analyse(record.rows, record.settings)         # pure: DataFrames and a summary dict
    oracle.report.render.verdict_text(result.summary)             # the verdict's paragraph
    a = oracle.report.build.analyse_record(record)               # both: the summary with its "text"
    oracle.report.build.write_tables(a, out)                     # verdicts.csv, arms.csv, summary.json

Definitions (docs/design.md; the rule itself is oracle.judge.selection's):
- The study as it is now: only the current arms, seeds and cycles; for the Oracle, round q
  is its runs whose parent is the winner run of the same seed at q-1, at the values the rule
  replays for it (oracle.judge.selection.plan_round: grid plus the refinements it asks for; a value
  not yet run for every seed is pending, never a neighbour); for a chain arm, its runs at its
  planned max_lr per cycle on its own lineage. Rows an earlier invocation left in the same
  storage never enter a table or figure. An Oracle round whose values all ran and none ran
  ok for every seed is where the Oracle stopped.
- Per cycle, the Oracle's winner, pooled noise (sd), grid interval [min V, max V] and judged
  interval (each end halfway in log to the next grid value outside V, or open at the grid's
  edge) come from oracle.judge.selection, with the study's tolerance as delta: V holds every
  value whose mean is within delta of the best's, whatever the number of seeds. A grid value
  with a diverged or failed run, or a missing seed, is out of the running.
- SILO's max_lr of cycle q is the one its rule gives (recorded with the study), or, for
  records without it, the one its runs used. p_inside: the share of 2,000 draws of the grid
  means (and of the noise estimate) whose judged interval holds it; verdict inside
  (p >= 0.8), outside (p <= 0.2) or uncertain; for an uncertain one, seeds_to_decide: about
  how many seeds would decide it (oracle.judge.selection.seeds_to_decide).
  silo_in_interval / silo_position: the point estimate against the judged interval.
- Accuracy per arm and cycle: mean and sample std (ddof=1; empty with one seed) over the
  seeds' `ok` runs. For the oracle arm these are the chosen runs (the winner's).
- Paired comparisons (oracle.judge.comparisons, Analysis.comparisons, summary["comparisons"]):
  each baseline against SILO, SILO and each baseline against the Oracle, per cycle, test
  accuracy paired by seed, with a 95 % t interval (and a percentile bootstrap from 4 seeds)
  and the reading better / worse / not separated.
- Compute per arm: the distinct runs (by run_id) the arm needed, and the sum of their
  wall_s (run-seconds). A run shared by two arms (the dense cycle, a grid value equal to
  SILO's max_lr) counts for each arm that needed it: an arm's cost is what it costs on its
  own. Runs that diverged or failed count too: they were paid for. `study total` counts
  every run once, i.e. what the study actually trained.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from oracle.judge.comparisons import comparison_summary, paired_comparisons
from oracle.judge.plan import plan_round
from oracle.judge.selection import (
    DEFAULT_TOLERANCE,
    INSIDE,
    OUTSIDE,
    UNCERTAIN,
    Judgement,
    RoundTable,
    judge,
    p_inside,
    retired_rule_line,
    round_table,
    seeds_to_decide,
    verdict_of,
)
from oracle.store.arms import ORACLE, SILO
from oracle.store.identity import key_payload, run_id_of
from oracle.store.plain import json_safe
from oracle.store.rows import planned_runs, round_values, rows_frame
from oracle.store.settings import StudySettings
from silo.status import RunStatus

VERDICT_COLUMNS = [
    "cycle", "sparsity", "oracle_max_lr", "interval_low", "interval_high", "judged_low",
    "judged_high", "open_low", "open_high", "silo_max_lr", "silo_in_interval", "silo_position",
    "p_inside", "verdict", "oracle_val_acc", "silo_val_acc", "oracle_test_acc",
    "silo_test_acc", "gap_val_acc", "gap_test_acc", "oracle_val_std", "silo_val_std",
    "oracle_test_std", "silo_test_std", "oracle_val_se", "sd", "delta", "seeds", "seeds_to_decide",
    "grid_values_ok", "grid_values_run", "interval_values", "refined_values", "note",
]
ARM_COLUMNS = [
    "arm", "cycle", "max_lr", "sparsity", "val_acc_mean", "val_acc_std", "test_acc_mean",
    "test_acc_std", "seeds_ok", "runs", RunStatus.DIVERGED.value, RunStatus.FAILED.value,
]
COST_COLUMNS = ["arm", "runs", "run_seconds", *(s.value for s in RunStatus)]
LANDSCAPE_COLUMNS = ["cycle", "max_lr", "mean_val_acc", "se", "seeds_ok", "state", "in_interval", "winner",
                     "refined"]
TOTAL = "study total"
PENDING = "pending"  # a landscape cell planned for the round but not run (for every seed) yet
NOT_TRAINED = "not trained (beam)"  # a grid value outside a beam round


# ----------------------------------------------------------------------------- analysis


@dataclass
class Analysis:
    study: str
    settings: StudySettings  # the study's recorded settings (oracle.store.settings)
    rows: pd.DataFrame  # the study as it is now: stale rows (other seeds, grid, lineage) left out
    verdicts: pd.DataFrame  # VERDICT_COLUMNS, one row per cycle
    arms: pd.DataFrame  # ARM_COLUMNS, one row per arm and cycle
    cost: pd.DataFrame  # COST_COLUMNS, one row per arm and the study total
    landscape: pd.DataFrame  # LANDSCAPE_COLUMNS: the Oracle's grid, per cycle and max_lr
    summary: dict
    messages: list[str] = field(default_factory=list)
    # oracle.judge.comparisons.COLUMNS: each arm against SILO and the Oracle, paired by seed
    comparisons: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass(frozen=True)
class OracleRound:
    """One cycle of the Oracle as the rule sees it (oracle.judge.selection), on its own lineage."""

    cycle: int
    rows: pd.DataFrame  # this lineage's runs of the round's values
    values: tuple[float, ...]  # grid plus the refinement values the rule asked for
    refined: tuple[float, ...]  # the refinement values among them
    table: RoundTable
    judgement: Judgement | None
    pending: tuple[float, ...] = ()  # values of the round not yet run for every seed
    untrained: tuple[float, ...] = ()  # grid values the beam left out of this round
    pool: int | None = None  # a beam round's noise pool (oracle.judge.selection.RoundPlan.pool)

    @property
    def ran(self) -> tuple[float, ...]:
        """The round's values that ran for every seed."""
        return tuple(v for v in self.values if v not in self.pending)

    @property
    def neighbours(self) -> tuple[float, ...]:
        """What V's ends may reach halfway to: the values that ran and the grid values the
        beam left untrained, never a pending value (oracle.judge.selection.RoundPlan.neighbours)."""
        return tuple(sorted(self.ran + self.untrained))

    @property
    def stopped(self) -> bool:
        """The Oracle stopped here: every value of the round ran, none ok for every seed."""
        return self.judgement is None and not self.pending


def analyse(rows: pd.DataFrame | list[Mapping[str, Any]], attrs: StudySettings | Mapping[str, Any], *,
            superseded: int = 0) -> Analysis:
    """Per cycle verdicts, per arm accuracy and cost, and the summary. Pure. `attrs`: the
    record's settings, or the attrs they are read from (StudySettings.from_attrs)."""
    if not isinstance(rows, pd.DataFrame):
        rows = rows_frame(rows)
    settings = StudySettings.from_attrs(attrs)
    study = settings.study or "?"
    # The study as it is now: its arms and cycles as recorded (a record without them: the rows')
    arms = list(settings.arms or dict.fromkeys(rows["arm"].tolist()))
    tolerance = tolerance_of(settings)
    # Only a study (or a record) written for the retired rule gives noise_k; it is ignored
    noise_k = settings.noise_k
    seeds = [int(s) for s in (settings.seeds or sorted(rows["seed"].unique().tolist()))]
    cycles = (list(range(settings.cycles)) if settings.cycles
              else sorted(rows["cycle"].unique().tolist()))

    dropped = rows.loc[~rows["arm"].isin(arms), "arm"].value_counts().sort_index()
    rows = rows[rows["arm"].isin(arms)]
    rounds = oracle_rounds(rows, settings, seeds, cycles, tolerance=tolerance)
    stopped = next((r for r in rounds.values() if r.stopped), None)
    current = current_rows(rows, settings, seeds, cycles, rounds)
    stale = len(rows) - len(current)
    rows = current
    judgements = {q: r.judgement for q, r in rounds.items()}
    landscape_df = pd.DataFrame([x for r in rounds.values() for x in _landscape(r, seeds)],
                                columns=LANDSCAPE_COLUMNS)
    arm_stats = pd.DataFrame(
        [s for arm in arms for q in cycles if (s := _arm_cycle(rows, arm, q, judgements.get(q))) is not None],
        columns=ARM_COLUMNS,
    )
    silo_plan = settings.silo_plan
    progress = _progress(rows, settings, arms, seeds, cycles, rounds)
    verdicts = pd.DataFrame(
        [_verdict(q, rows, arm_stats, rounds.get(q), silo_plan, SILO in arms, ORACLE in arms, seeds,
                  in_progress=not progress["complete"], stopped=stopped)
         for q in cycles],
        columns=VERDICT_COLUMNS,
    )
    cost = _cost(rows, arms)
    messages = _messages(arms, verdicts, rows, superseded, stale, len(seeds), dropped, progress)
    if noise_k is not None:  # first: it says how every verdict below was judged
        messages.insert(0, retired_rule_line(tolerance, float(noise_k)) + ".")
    summary = _summary(study, settings, verdicts, cost, arms, tolerance, seeds, messages,
                       _search(settings, rounds, seeds))
    comparisons = paired_comparisons(rows, verdicts, arms)
    versions = summary.pop("versions")  # stays last but for the text and progress (oracle.report.build)
    summary.update(comparisons=json_safe(comparison_summary(comparisons)), versions=versions)
    summary["progress"] = progress
    return Analysis(study, settings, rows, verdicts, arm_stats, cost, landscape_df, summary, messages,
                    comparisons=comparisons)


def without_other_tasks_roots(rows: pd.DataFrame, settings: StudySettings) -> pd.DataFrame:
    """`rows` less the cycle-0 runs of another task than the study's now (its recorded
    `task_identity`): a cycle-0 run has no parent, so lineage cannot tell a run of the task
    before a change from one of the task now; its run id can. Their descendants then fall
    off by lineage. A row without a run id (a failure before one was known) is kept, and so
    is everything in a record that predates `task_identity`."""
    identity = settings.task_identity
    if not identity or rows.empty:
        return rows
    at_root = (rows["cycle"] == 0) & rows["parent_run_id"].isna() & rows["run_id"].notna()
    if not at_root.any():
        return rows
    roots = rows[at_root]
    wanted = [identity.get(arm) is None or rid == run_id_of(key_payload(identity[arm], seed, 0, lr, None))
              for arm, seed, lr, rid in zip(roots["arm"], roots["seed"], roots["max_lr"], roots["run_id"])]
    return rows.drop(roots.index[~np.array(wanted, dtype=bool)])


def oracle_rounds(rows: pd.DataFrame, attrs: StudySettings | Mapping[str, Any], seeds: list[int], cycles: list[int], *,
                  tolerance: float) -> dict[int, OracleRound]:
    """The Oracle's rounds on its own trajectory, cycle by cycle, as the sweep decided them.

    Round q holds the Oracle's runs of the study's seeds whose parent is the winner run of
    the same seed at q-1 (no parent at q = 0), at the study's grid values plus the
    refinement values the rule asks for (replayed, so refinements of another setting or
    lineage are left out). Runs left in the storage by an earlier invocation with other
    seeds, another grid or another lineage therefore never enter a round.
    """
    settings = StudySettings.from_attrs(attrs)
    rows = without_other_tasks_roots(rows, settings)
    oracle = rows[(rows["arm"] == ORACLE) & rows["seed"].isin(seeds)]
    grid = [float(v) for v in (settings.grid or sorted(oracle["max_lr"].unique().tolist()))]
    refine = settings.refine
    beam = settings.beam
    parents: dict[int, str | None] = {s: None for s in seeds}
    previous: tuple[float, ...] | None = None  # V of the round before: where a beam starts
    out: dict[int, OracleRound] = {}
    for q in cycles:
        mine = oracle[oracle["cycle"] == q]
        if mine.empty:
            break
        lineage = mine[[parents.get(int(s)) == p for s, p in zip(mine["seed"], mine["parent_run_id"])]]
        plan = plan_round(ran_for_every_seed(lineage, seeds), seeds, grid=grid, refine=refine,
                          tolerance=tolerance, beam=beam, previous=previous)
        round_rows = lineage[lineage["max_lr"].isin(plan.values)]
        table = round_table(round_rows.to_dict("records"), seeds)
        # judged on the values that ran: a pending value is never a neighbour of V, an
        # untrained one is (the grid's resolution does not depend on what the beam trained)
        judgement = judge(table, grid=plan.neighbours(), tolerance=tolerance, pool=plan.pool)
        out[q] = OracleRound(q, round_rows, plan.values, plan.refined, table, judgement, plan.missing,
                             plan.untrained, plan.pool)
        if judgement is None:
            break  # no winner yet (values pending) or ever (the Oracle stopped here)
        previous = judgement.members
        won = round_rows[round_rows["max_lr"] == judgement.winner]
        parents = {int(s): rid for s, rid in zip(won["seed"], won["run_id"])}
    return out


def tolerance_of(settings: StudySettings) -> float:
    """delta as recorded; the rule's default for a record without it."""
    return DEFAULT_TOLERANCE if settings.tolerance is None else settings.tolerance


def ran_for_every_seed(rows: pd.DataFrame, seeds: list[int]) -> list[dict]:
    """The rows of the values that have a row (any status) for every one of `seeds`: the
    values that ran. A value some seed has not reported yet is still pending."""
    want = set(seeds)
    ran = [v for v, grp in rows.groupby("max_lr") if want <= set(grp["seed"].astype(int))]
    return rows[rows["max_lr"].isin(ran)].to_dict("records")


def current_rows(rows: pd.DataFrame, settings: StudySettings, seeds: list[int], cycles: list[int],
                 rounds: Mapping[int, OracleRound]) -> pd.DataFrame:
    """The rows of the study as it is now: the Oracle's rounds, and each chain arm's runs of
    the current seeds and cycles at its planned max_lr per cycle (when the plan is recorded),
    on its own lineage: cycle 0 from no parent, cycle q from the arm's current run of the same
    seed at q-1 (after a failed run, the failed rows the sweep writes for the rest of the
    chain, which have no parent). A row left by a chain of another task or setting is not."""
    planned = settings.chain_plans
    keep = pd.Series(False, index=rows.index)
    for r in rounds.values():
        keep[r.rows.index] = True
    chain = without_other_tasks_roots(rows, settings)
    chain = chain[(chain["arm"] != ORACLE) & chain["seed"].isin(seeds)]
    for (arm, _), grp in chain.groupby(["arm", "seed"], sort=False):
        plan = planned.get(arm)
        parents: set = {None}  # the parents a current row of the next cycle may have
        for q in cycles:
            at = grp[grp["cycle"] == q]
            if plan is not None:
                if q >= len(plan) or plan[q] is None:
                    break
                at = at[np.isclose(at["max_lr"].to_numpy(dtype=float), float(plan[q]), rtol=1e-9, atol=0.0)]
            at = at[np.array([p in parents for p in at["parent_run_id"]], dtype=bool)]
            keep[at.index] = True
            failed = bool((at["status"] == RunStatus.FAILED).any())
            parents = {rid for rid in at["run_id"] if rid is not None} | ({None} if failed else set())
    return rows[keep].reset_index(drop=True)


def _landscape(r: OracleRound, seeds) -> list[dict]:
    j = r.judgement
    complete = dict(zip(r.table.values, r.table.means))
    members = set(j.members) if j else set()
    out = []
    for v, runs in r.rows.groupby("max_lr", sort=True):
        v = float(v)
        statuses = set(runs["status"])
        ok = runs.loc[runs["status"] == RunStatus.OK, "val_acc"]
        state = (RunStatus.OK if v in complete else RunStatus.FAILED if RunStatus.FAILED in statuses
                 else RunStatus.DIVERGED if RunStatus.DIVERGED in statuses else "incomplete")
        out.append({
            "cycle": r.cycle, "max_lr": v,
            "mean_val_acc": float(complete[v]) if v in complete else _mean(ok),
            "se": _se(ok) if v in complete else math.nan, "seeds_ok": len(ok),
            "state": PENDING if v in r.pending else state,
            "in_interval": v in members, "winner": bool(j is not None and j.winner == v),
            "refined": bool(runs["refined"].any()),
        })
    for v in sorted(set(r.pending) - set(r.rows["max_lr"])):  # planned, not run by any seed yet
        out.append({"cycle": r.cycle, "max_lr": float(v), "mean_val_acc": math.nan, "se": math.nan,
                    "seeds_ok": 0, "state": PENDING, "in_interval": False, "winner": False,
                    "refined": v in r.refined})
    for v in r.untrained:  # outside the beam: never trained, never judged, never missing
        out.append({"cycle": r.cycle, "max_lr": float(v), "mean_val_acc": math.nan, "se": math.nan,
                    "seeds_ok": 0, "state": NOT_TRAINED, "in_interval": False, "winner": False,
                    "refined": False})
    return sorted(out, key=lambda x: x["max_lr"])


def _arm_cycle(rows: pd.DataFrame, arm: str, q: int, j: Judgement | None) -> dict | None:
    mine = rows[(rows["arm"] == arm) & (rows["cycle"] == q)]
    if mine.empty:
        return None
    if arm == ORACLE:
        max_lr = j.winner if j else math.nan
        used = mine[mine["max_lr"] == max_lr] if j else mine.iloc[0:0]
    else:
        max_lr = float(mine["max_lr"].iloc[0])
        used = mine
    ok = used[used["status"] == RunStatus.OK]
    return {
        "arm": arm, "cycle": q, "max_lr": max_lr,
        "sparsity": _mean(ok["sparsity"]) if not ok.empty else _mean(used["sparsity"]),
        "val_acc_mean": _mean(ok["val_acc"]), "val_acc_std": _std(ok["val_acc"]),
        "test_acc_mean": _mean(ok["test_acc"]), "test_acc_std": _std(ok["test_acc"]),
        "seeds_ok": len(ok), "runs": len(mine),
        **{s.value: int((mine["status"] == s).sum()) for s in (RunStatus.DIVERGED, RunStatus.FAILED)},
    }


def _mean(s: pd.Series) -> float:
    s = s.dropna()
    return float(s.mean()) if len(s) else math.nan


def _std(s: pd.Series) -> float:
    s = s.dropna()
    return float(s.std(ddof=1)) if len(s) > 1 else math.nan


def _se(s: pd.Series) -> float:
    """Standard error of one value's mean over seeds (0 with one seed)."""
    s = s.dropna()
    return float(s.std(ddof=1) / math.sqrt(len(s))) if len(s) > 1 else 0.0


def _stat(arm_stats: pd.DataFrame, arm: str, q: int, col: str) -> float:
    hit = arm_stats[(arm_stats["arm"] == arm) & (arm_stats["cycle"] == q)]
    return float(hit[col].iloc[0]) if len(hit) else math.nan


def _silo_max_lr(q, rows, silo_plan, has_silo) -> float:
    silo_rows = rows[(rows["arm"] == SILO) & (rows["cycle"] == q)]
    if has_silo and silo_plan and q < len(silo_plan) and silo_plan[q] is not None:
        return float(silo_plan[q])
    if not silo_rows.empty:
        return float(silo_rows["max_lr"].iloc[0])
    return math.nan


def _verdict(q, rows, arm_stats, r: OracleRound | None, silo_plan, has_silo, has_oracle, seeds, *,
             in_progress: bool, stopped: OracleRound | None) -> dict:
    """Cycle q's row of verdicts.csv: the Oracle's interval, SILO's place in it, both arms'
    accuracy, and the cycle's notes."""
    j = r.judgement if r else None
    silo_lr = _silo_max_lr(q, rows, silo_plan, has_silo)
    inside, position, p, verdict, more = _judge_silo(r, silo_lr)
    oracle_runs = r.rows if r else rows.iloc[0:0]
    silo_rows = rows[(rows["arm"] == SILO) & (rows["cycle"] == q)]
    o, s = _accuracy(arm_stats, ORACLE, q), _accuracy(arm_stats, SILO, q)
    if has_oracle and r is None and stopped is not None:
        notes = [f"the Oracle did not reach this cycle: it stopped at cycle {stopped.cycle} ({STOPPED_WHY})",
                 *_silo_notes(silo_rows, has_silo)]
    elif has_oracle and r is None and in_progress:
        notes = ["not yet judged: the study is in progress"]  # the cycle's one note until the Oracle reaches it
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
        "oracle_val_se": _se(winner_runs["val_acc"]) if j else math.nan,
        "sd": j.sd if j else math.nan,
        "delta": j.delta if j else math.nan,
        "seeds": r.table.seed_count if j else 0,
        "seeds_to_decide": more,
        "grid_values_ok": len(r.table.values) if r else 0,
        "grid_values_run": int(oracle_runs["max_lr"].nunique()),
        "interval_values": len(j.members) if j else 0,
        "refined_values": len(r.refined) if r else 0,
        "note": "; ".join(notes),
    }


def _judge_silo(r: OracleRound | None, silo_lr: float) -> tuple:
    """(silo_in_interval, silo_position, p_inside, verdict, seeds_to_decide); all None
    without an interval or a SILO max_lr; seeds_to_decide only for an uncertain verdict."""
    j = r.judgement if r else None
    if j is None or math.isnan(silo_lr):
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


def _oracle_notes(r: OracleRound | None, oracle_runs: pd.DataFrame, has_oracle: bool, seeds) -> list[str]:
    j = r.judgement if r else None
    if has_oracle and r is None:
        return ["the Oracle did not reach this cycle"]
    if has_oracle and j is None and r.pending:
        return [f"not yet judged: {_values(r.pending)} pending"]
    if has_oracle and j is None:
        return [f"the Oracle stopped here: {STOPPED_WHY}"]
    if j is None:
        return []
    notes = []
    if r.pending:  # judged on the values that ran; the pending ones may move it
        notes.append(f"provisional: {_values(r.pending)} pending")
    chosen = sorted(set(oracle_runs.loc[oracle_runs["chosen"], "max_lr"].tolist()))
    if chosen and chosen != [j.winner]:
        notes.append(f"recorded choice {', '.join(f'{v:g}' for v in chosen)} differs from the rule's winner")
    if j.open_low or j.open_high:
        notes.append("the best max_lr may lie beyond the grid: widen it")
    if len(seeds) == 1:
        notes.append("one seed: no noise estimate")
    return notes


STOPPED_WHY = "no grid value ran ok for every seed"


def _values(values) -> str:
    return f"max_lr {', '.join(f'{v:g}' for v in values)}"


def _silo_notes(silo_rows: pd.DataFrame, has_silo: bool) -> list[str]:
    if not has_silo:
        return []
    if silo_rows.empty:
        return ["no SILO runs recorded"]
    if not (silo_rows["status"] == RunStatus.OK).all():
        return [f"SILO runs {' and '.join(sorted(set(silo_rows['status']) - {RunStatus.OK}))}"]
    return []


def _progress(rows, settings: StudySettings, arms, seeds, cycles, rounds: Mapping[int, OracleRound]) -> dict:
    """How far the study is: its planned runs against those recorded, and the cycles where
    the Oracle has a winner. The Oracle plans, per round it reached, the values the rule
    replays for it (refinements included), its grid for each round still to come, and
    nothing after a round where it stopped."""
    grid = settings.grid or ()
    beam = settings.beam
    chains = [arm for arm in arms if arm != ORACLE]
    planned = sum(planned_runs(arm, len(grid), len(seeds), len(cycles)) for arm in chains)
    complete = int(rows["arm"].isin(chains).sum()) >= planned
    stopped = None
    if ORACLE in arms:
        for q in cycles:
            if stopped is not None:
                break
            r = rounds.get(q)
            planned += len(seeds) * (len(r.values) if r else round_values(len(grid), q, beam))
            complete &= r is not None and not r.pending and (r.judgement is not None or r.stopped)
            stopped = q if r is not None and r.stopped else None
    done = len(rows)
    judged = [int(q) for q in cycles if q in rounds and rounds[q].judgement is not None]
    return {"runs_done": done, "runs_planned": int(max(planned, done)), "complete": bool(complete),
            "judged_cycles": judged,
            "oracle_stopped": None if stopped is None else {"cycle": int(stopped), "why": STOPPED_WHY}}


def _cost(rows: pd.DataFrame, arms: list[str]) -> pd.DataFrame:
    def spent(df: pd.DataFrame, name: str) -> dict:
        named = df[df["run_id"].notna()].drop_duplicates("run_id")
        runs = pd.concat([named, df[df["run_id"].isna()]])
        return {
            "arm": name, "runs": len(runs), "run_seconds": float(runs["wall_s"].fillna(0.0).sum()),
            **{s.value: int((runs["status"] == s).sum()) for s in RunStatus},
        }

    out = [spent(rows[rows["arm"] == arm], arm) for arm in arms]
    out.append(spent(rows, TOTAL))
    return pd.DataFrame(out, columns=COST_COLUMNS)


def _messages(arms, verdicts: pd.DataFrame, rows: pd.DataFrame, superseded: int, stale: int,
              seeds: int, dropped: pd.Series, progress: dict) -> list[str]:
    """Notes on the data (summary.json's "messages", Analysis.messages): missing arms, cycles
    without a winner, few seeds, failed runs, superseded and stale rows. They stay here, not in
    oracle.report.render, for the facts they state (stale and superseded counts, failures per arm)
    are seen only here and are not in the summary; like each cycle's `note` in verdicts.csv,
    they are part of the tables."""
    out = []
    if SILO not in arms:
        out.append("This study has no silo arm: there is no verdict, only the Oracle's landscape "
                   "and the arms' accuracy and cost.")
    if ORACLE not in arms:
        out.append("This study has no oracle arm: SILO's max_lr cannot be judged against the "
                   "Oracle's optimal interval; the report compares accuracy and cost only.")
    if ORACLE in arms:
        missing = ", ".join(str(int(q)) for q in verdicts.loc[verdicts["oracle_max_lr"].isna(), "cycle"])
        stop = progress.get("oracle_stopped")
        if stop:
            out.append(f"The Oracle stopped at cycle {stop['cycle']} ({stop['why']}), as its rule says: "
                       f"it has no winner at cycle(s) {missing}.")
        elif missing:
            out.append(f"The Oracle has no winner yet at cycle(s) {missing}: the study is in progress.")
        if seeds == 1:
            out.append("One seed: there is no estimate of seed noise, so each verdict is the point "
                       "estimate (inside or outside the judged interval), not a probability. Run 3 "
                       "or more seeds for a verdict that holds up.")
        elif seeds == 2:
            out.append("Two seeds: the noise estimate has very few degrees of freedom, so the "
                       "verdicts are fragile; 3 or more seeds make them hold up.")
    bad = rows[rows["status"] != RunStatus.OK]
    for arm, grp in bad.groupby("arm", sort=True):
        counts = grp["status"].value_counts()
        what = ", ".join(f"{int(n)} {status}" for status, n in sorted(counts.items()))
        out.append(f"{arm}: {what} run(s); they are left out of every mean, and a grid value with "
                   "one never wins nor enters the interval.")
    if superseded:
        out.append(f"{superseded} older trial(s) in the storage were superseded by later records "
                   "of the same run key and ignored.")
    if len(dropped):
        which = ", ".join(f"{int(n)} of {arm}" for arm, n in dropped.items())
        out.append(f"{int(dropped.sum())} run(s) in the record belong to arm(s) no longer in this study "
                   f"({which}) and were left out of every table and figure.")
    if stale:
        out.append(f"{stale} run(s) in the record belong to an earlier version of this study "
                   "(other seeds, grid values, schedules or lineage) and were left out.")
    return out


def _counts(df: pd.DataFrame) -> dict:
    """How many cycles have a verdict, and how many of each kind."""
    n = len(df)
    k = {v: int((df["verdict"] == v).sum()) if n else 0 for v in (INSIDE, OUTSIDE, UNCERTAIN)}
    return {"judged": n, **k, "decided": k[INSIDE] + k[OUTSIDE],
            "fraction_inside": (k[INSIDE] / n) if n else None}


def _search(settings: StudySettings, rounds: Mapping[int, OracleRound], seeds) -> dict:
    """Which search the Oracle ran, and the grid runs a beam left untrained in the rounds it
    reached (what the exhaustive grid would have trained there on the same trajectory)."""
    beam = settings.beam
    grid_runs = sum(len(settings.grid or ()) for _ in rounds) * len(seeds)
    saved = sum(len(r.untrained) for r in rounds.values()) * len(seeds)
    return {"name": "exhaustive" if beam is None else "beam", "beam": beam,
            "grid_runs": grid_runs, "grid_runs_trained": grid_runs - saved, "saved_runs": saved}


def question(delta: float) -> str:
    """What every verdict answers, in one line (delta as a fraction, said in points)."""
    points = f"{100 * delta:.3g}"
    return (f"is SILO's max_lr within {points} point{'' if points == '1' else 's'} of the best max_lr's "
            "expected validation accuracy?")


def _count(x) -> int | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else int(x)


def _summary(study, settings: StudySettings, verdicts, cost, arms, tolerance, seeds, messages, search) -> dict:
    judged = verdicts[verdicts["verdict"].notna()]
    pruned = judged[judged["cycle"] >= 1]
    both = verdicts[verdicts["gap_test_acc"].notna()]
    final = both.iloc[-1] if len(both) else None
    by_arm = {r["arm"]: {"runs": int(r["runs"]), "run_seconds": float(r["run_seconds"])}
              for r in cost.to_dict("records")}

    def ratio(key: str):
        o, s = by_arm.get(ORACLE, {}).get(key), by_arm.get(SILO, {}).get(key)
        return (o / s) if o is not None and s else None

    def listed(kind):
        return [{"cycle": int(r["cycle"]), "position": r["silo_position"], "silo_max_lr": r["silo_max_lr"],
                 "interval": [r["judged_low"], r["judged_high"]], "p_inside": r["p_inside"],
                 "seeds_to_decide": _count(r["seeds_to_decide"])}
                for r in judged.to_dict("records") if r["verdict"] == kind]

    is_open = judged["open_low"].astype(bool) | judged["open_high"].astype(bool)
    summary = {
        "study": study,
        "arms": arms,
        "cycles": settings.cycles or len(verdicts),
        "seeds": list(seeds),
        "grid": settings.grid,
        "refine": settings.refine,
        "search": search,
        "tolerance": tolerance,  # delta, accuracy as a fraction
        "verdict": {
            "question": question(tolerance),
            **_counts(judged),
            "pruned_cycles": _counts(pruned),
            "noise": "none (one seed)" if len(seeds) == 1 else "fragile (two seeds)" if len(seeds) == 2 else "pooled",
            "outside_cycles": listed(OUTSIDE),
            "uncertain_cycles": listed(UNCERTAIN),
            "open_cycles": [int(q) for q in judged.loc[is_open, "cycle"]],
            "uncertain_open": int((is_open & (judged["verdict"] == UNCERTAIN)).sum()),
        },
        "gap": {  # SILO minus Oracle, accuracy as a fraction
            "cycles": len(both),
            "mean_gap_test_acc": _mean(both["gap_test_acc"]),
            "mean_gap_val_acc": _mean(both["gap_val_acc"]),
            "final_cycle": int(final["cycle"]) if final is not None else None,
            "final_sparsity": final["sparsity"] if final is not None else None,
            "final_oracle_test_acc": final["oracle_test_acc"] if final is not None else None,
            "final_silo_test_acc": final["silo_test_acc"] if final is not None else None,
            "final_gap_test_acc": final["gap_test_acc"] if final is not None else None,
        },
        "cost": by_arm,
        "cost_ratio_oracle_to_silo": {"run_seconds": ratio("run_seconds"), "runs": ratio("runs")},
        "messages": messages,
        # what built the report ("report_built_with") is oracle.report.build.analyse_record's to add
        "versions": {"recorded_with": settings.recorded_with},
    }
    return json_safe(summary)
