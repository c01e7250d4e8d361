"""The study as it is now, round by round: which recorded runs are the Oracle's rounds on its
own trajectory (the winner of each seed at q-1 is the parent of its runs at q, at the values the
rule replays for the round), and which are each chain arm's current runs. Runs an earlier
invocation left in the storage (other seeds, grid values, schedules, task or lineage) are in no
round and in no current row. Pure: rows and the record's settings in, rows out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from oracle.judge.plan import plan_round
from oracle.judge.selection import DEFAULT_TOLERANCE, Judgement, RoundTable, judge, round_table
from oracle.store.arms import ORACLE
from oracle.store.identity import key_payload, run_id_of
from oracle.store.settings import StudySettings
from silo.status import RunStatus


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


def ran_for_every_seed(rows: pd.DataFrame, seeds: list[int]) -> list[dict[str, Any]]:
    """The rows of the values that have a row (any status) for every one of `seeds`: the
    values that ran. A value some seed has not reported yet is still pending."""
    want = set(seeds)
    ran = [v for v, grp in rows.groupby("max_lr") if want <= set(grp["seed"].astype(int))]
    records: list[dict[str, Any]] = rows[rows["max_lr"].isin(ran)].to_dict("records")
    return records


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
        parents: set[str | None] = {None}  # the parents a current row of the next cycle may have
        for q in cycles:
            at = grp[grp["cycle"] == q]
            if plan is not None:
                planned_lr = plan[q] if q < len(plan) else None
                if planned_lr is None:
                    break
                at = at[np.isclose(at["max_lr"].to_numpy(dtype=float), float(planned_lr), rtol=1e-9, atol=0.0)]
            at = at[np.array([p in parents for p in at["parent_run_id"]], dtype=bool)]
            keep[at.index] = True
            failed = bool((at["status"] == RunStatus.FAILED).any())
            parents = {rid for rid in at["run_id"] if rid is not None} | ({None} if failed else set())
    return rows[keep].reset_index(drop=True)
