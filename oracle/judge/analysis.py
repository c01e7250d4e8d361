"""The tables of a study, from its Optuna record alone: the Oracle's interval, SILO's verdict,
every arm's accuracy, and the compute each arm spent. Pure: rows and attributes in, tables,
numbers and findings out (oracle.judge.facts), no prose: which runs count is
oracle.judge.lineage's, the findings' words and the verdict in words are oracle.report's
(notes, words); oracle.report.build.analyse_record puts them together, as every report is built.

    record = oracle.store.record.load_record(storage, "smoke")   # the Optuna record's rows and attrs
    result = tabulate(record.rows, record.settings)              # pure: DataFrames, a summary, findings
    a = oracle.report.build.analyse_record(record)               # with the findings and verdict in words
    oracle.report.build.write_tables(a, out)                     # verdicts.csv, arms.csv, summary.json

Definitions (docs/design.md; the rule itself is oracle.judge.selection's):
- The study as it is now: only the current arms, seeds and cycles; for the Oracle, round q
  is its runs whose parent is the winner run of the same seed at q-1, at the values the rule
  replays for it (oracle.judge.plan.plan_round: grid plus the refinements it asks for; a value
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

import pandas as pd

from oracle.judge.comparisons import comparison_summary, paired_comparisons
from oracle.judge.facts import Fact, Finding
from oracle.judge.lineage import OracleRound, current_rows, oracle_rounds, tolerance_of
from oracle.judge.selection import INSIDE, OUTSIDE, UNCERTAIN, Judgement
from oracle.judge.verdicts import VERDICT_COLUMNS, mean, se, std, verdict_row
from oracle.store.arms import ORACLE, SILO
from oracle.store.plain import json_safe
from oracle.store.rows import planned_runs, round_values, rows_frame
from oracle.store.settings import StudySettings
from silo.status import RunStatus

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
    summary: dict[str, Any]
    # the findings the report words (oracle.judge.facts; oracle.report.notes.worded): the study's,
    # and each cycle's; `messages` and each verdict's `note` are empty until then
    facts: list[Fact] = field(default_factory=list)
    cycle_facts: dict[int, list[Fact]] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    # oracle.judge.comparisons.COLUMNS: each arm against SILO and the Oracle, paired by seed
    comparisons: pd.DataFrame = field(default_factory=pd.DataFrame)


def tabulate(rows: pd.DataFrame | list[Mapping[str, Any]], attrs: StudySettings | Mapping[str, Any], *,
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
        [verdict_row(q, rows, arm_stats, rounds.get(q), silo_plan, SILO in arms, ORACLE in arms, seeds,
                  in_progress=not progress["complete"], stopped=stopped)
         for q in cycles],
        columns=VERDICT_COLUMNS,
    )
    cost = _cost(rows, arms)
    facts = _facts(arms, verdicts, rows, superseded, stale, len(seeds), dropped, progress)
    if noise_k is not None:  # first: it says how every verdict below was judged
        facts.insert(0, Fact(Finding.RETIRED_RULE, numbers=(tolerance, float(noise_k))))
    cycle_facts = {int(q): notes for q, notes in zip(verdicts["cycle"], verdicts.pop("note"))}
    verdicts["note"] = ""  # the note's words are the report's (oracle.report.notes)
    summary = _summary(study, settings, verdicts, cost, arms, tolerance, seeds,
                       _search(settings, rounds, seeds))
    comparisons = paired_comparisons(rows, verdicts, arms)
    versions = summary.pop("versions")  # stays last but for the text and progress (oracle.report.build)
    summary.update(comparisons=json_safe(comparison_summary(comparisons)), versions=versions)
    summary["progress"] = progress
    return Analysis(study, settings, rows, verdicts, arm_stats, cost, landscape_df, summary, facts, cycle_facts,
                    comparisons=comparisons)


def _landscape(r: OracleRound, seeds: list[int]) -> list[dict[str, Any]]:
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
            "mean_val_acc": float(complete[v]) if v in complete else mean(ok),
            "se": se(ok) if v in complete else math.nan, "seeds_ok": len(ok),
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


def _arm_cycle(rows: pd.DataFrame, arm: str, q: int, j: Judgement | None) -> dict[str, Any] | None:
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
        "sparsity": mean(ok["sparsity"]) if not ok.empty else mean(used["sparsity"]),
        "val_acc_mean": mean(ok["val_acc"]), "val_acc_std": std(ok["val_acc"]),
        "test_acc_mean": mean(ok["test_acc"]), "test_acc_std": std(ok["test_acc"]),
        "seeds_ok": len(ok), "runs": len(mine),
        **{s.value: int((mine["status"] == s).sum()) for s in (RunStatus.DIVERGED, RunStatus.FAILED)},
    }


def _progress(rows: pd.DataFrame, settings: StudySettings, arms: list[str], seeds: list[int], cycles: list[int],
              rounds: Mapping[int, OracleRound]) -> dict[str, Any]:
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
            "oracle_stopped": None if stopped is None else {"cycle": int(stopped)}}  # "why": the report's


def _cost(rows: pd.DataFrame, arms: list[str]) -> pd.DataFrame:
    def spent(df: pd.DataFrame, name: str) -> dict[str, Any]:
        named = df[df["run_id"].notna()].drop_duplicates("run_id")
        runs = pd.concat([named, df[df["run_id"].isna()]])
        return {
            "arm": name, "runs": len(runs), "run_seconds": float(runs["wall_s"].fillna(0.0).sum()),
            **{s.value: int((runs["status"] == s).sum()) for s in RunStatus},
        }

    out = [spent(rows[rows["arm"] == arm], arm) for arm in arms]
    out.append(spent(rows, TOTAL))
    return pd.DataFrame(out, columns=COST_COLUMNS)


def _facts(arms: list[str], verdicts: pd.DataFrame, rows: pd.DataFrame, superseded: int, stale: int,
           seeds: int, dropped: pd.Series, progress: dict[str, Any]) -> list[Fact]:
    """The study's findings (summary.json's "messages" once worded): missing arms, cycles without
    a winner, few seeds, failed runs, superseded and stale rows. Found here, not in the report,
    for the facts they state (stale and superseded counts, failures per arm) are seen only here
    and are not in the summary."""
    out = []
    if SILO not in arms:
        out.append(Fact(Finding.NO_SILO_ARM))
    if ORACLE not in arms:
        out.append(Fact(Finding.NO_ORACLE_ARM))
    if ORACLE in arms:
        missing = tuple(int(q) for q in verdicts.loc[verdicts["oracle_max_lr"].isna(), "cycle"])
        stop = progress.get("oracle_stopped")
        if stop:
            out.append(Fact(Finding.ORACLE_STOPPED, cycle=int(stop["cycle"]), cycles=missing))
        elif missing:
            out.append(Fact(Finding.NO_WINNER_YET, cycles=missing))
        if seeds == 1:
            out.append(Fact(Finding.ONE_SEED))
        elif seeds == 2:
            out.append(Fact(Finding.TWO_SEEDS))
    bad = rows[rows["status"] != RunStatus.OK]
    for arm, grp in bad.groupby("arm", sort=True):
        counts = grp["status"].value_counts()
        out.append(Fact(Finding.BAD_RUNS, arm=str(arm),
                        counts=tuple((str(status), int(n)) for status, n in sorted(counts.items()))))
    if superseded:
        out.append(Fact(Finding.SUPERSEDED, count=int(superseded)))
    if len(dropped):
        out.append(Fact(Finding.DROPPED_ARMS, count=int(dropped.sum()),
                        counts=tuple((str(arm), int(n)) for arm, n in dropped.items())))
    if stale:
        out.append(Fact(Finding.STALE, count=int(stale)))
    return out


def _counts(df: pd.DataFrame) -> dict[str, Any]:
    """How many cycles have a verdict, and how many of each kind."""
    n = len(df)
    k = {v: int((df["verdict"] == v).sum()) if n else 0 for v in (INSIDE, OUTSIDE, UNCERTAIN)}
    return {"judged": n, **k, "decided": k[INSIDE] + k[OUTSIDE],
            "fraction_inside": (k[INSIDE] / n) if n else None}


def _search(settings: StudySettings, rounds: Mapping[int, OracleRound], seeds: list[int]) -> dict[str, Any]:
    """Which search the Oracle ran, and the grid runs a beam left untrained in the rounds it
    reached (what the exhaustive grid would have trained there on the same trajectory)."""
    beam = settings.beam
    grid_runs = sum(len(settings.grid or ()) for _ in rounds) * len(seeds)
    saved = sum(len(r.untrained) for r in rounds.values()) * len(seeds)
    return {"name": "exhaustive" if beam is None else "beam", "beam": beam,
            "grid_runs": grid_runs, "grid_runs_trained": grid_runs - saved, "saved_runs": saved}


def _count(x: Any) -> int | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else int(x)


def _summary(study: str, settings: StudySettings, verdicts: pd.DataFrame, cost: pd.DataFrame, arms: list[str],
             tolerance: float, seeds: list[int], search: dict[str, Any]) -> dict[str, Any]:
    judged = verdicts[verdicts["verdict"].notna()]
    pruned = judged[judged["cycle"] >= 1]
    both = verdicts[verdicts["gap_test_acc"].notna()]
    final = both.iloc[-1] if len(both) else None
    by_arm = {r["arm"]: {"runs": int(r["runs"]), "run_seconds": float(r["run_seconds"])}
              for r in cost.to_dict("records")}

    def ratio(key: str) -> float | None:
        o, s = by_arm.get(ORACLE, {}).get(key), by_arm.get(SILO, {}).get(key)
        return (o / s) if o is not None and s else None

    def listed(kind: str) -> list[dict[str, Any]]:
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
            "question": None,  # in words: oracle.report.notes.worded
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
            "mean_gap_test_acc": mean(both["gap_test_acc"]),
            "mean_gap_val_acc": mean(both["gap_val_acc"]),
            "final_cycle": int(final["cycle"]) if final is not None else None,
            "final_sparsity": final["sparsity"] if final is not None else None,
            "final_oracle_test_acc": final["oracle_test_acc"] if final is not None else None,
            "final_silo_test_acc": final["silo_test_acc"] if final is not None else None,
            "final_gap_test_acc": final["gap_test_acc"] if final is not None else None,
        },
        "cost": by_arm,
        "cost_ratio_oracle_to_silo": {"run_seconds": ratio("run_seconds"), "runs": ratio("runs")},
        "messages": [],  # the findings in words: oracle.report.notes.worded
        # what built the report ("report_built_with") is oracle.report.build.analyse_record's to add
        "versions": {"recorded_with": settings.recorded_with},
    }
    safe: dict[str, Any] = json_safe(summary)
    return safe
