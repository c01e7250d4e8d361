"""The study as a Ray Tune searcher: the Oracle's rounds and the chain arms in one Tune run.

Tune asks for trials whenever it has room. The Oracle hands out one round per cycle (its
grid x seeds, each from its seed's winner of the previous cycle), chooses the winner exactly
as docs/design.md says once the round is complete, then goes on with the next cycle. Chain arms
(SILO, baselines) are one trial per arm x seed; they fill the room the Oracle's rounds
leave, so everything runs alongside when resources allow.

The end of a round is a barrier: its last runs finish while the other workers have nothing
to do. Tune stops idle reusable actors at such moments, and every new actor pays a cold
start (importing torch, the first optimizer step, loading data) that can exceed a run. So
once every trial of round q has been handed out and nothing else is queued, the next round
is handed out early: its trials start, and wait in their warm actors until the driver
publishes round q's winners (a small file next to the run store), then train from them.
Only one round is released ahead, and only after all of the current round, so a waiting
trial never holds a slot that a trial of the current round still needs, until a node is
lost: Tune then retries the current round's trial that ran there, and the cluster may have
no slot left that a waiting trial does not hold. So when a trial of the current round is
retried (`on_trial_recover`, told by RetryWatch), the early release is withdrawn: the
waiting trials end and free their slots (oracle.sweep.handoff), and their round is handed out
again, from known winners, once the current round closes. With refinement
(`arms.oracle.refine`) the current round may still add trials once its grid is done, so no
round is released early then.

Refinement and the beam: once a round's handed-out trials are all done,
oracle.judge.plan.plan_round says what else the round needs (for every seed, from the same
parents): with a beam (`arms.oracle.search: {beam: W}`), the next grid value beyond an end
of V that sits at the beam's edge; then the midpoints next to the ends of V. The winner is
chosen once it asks for nothing more. A beam round starts from V of the previous round, so
it is never released early either.

The searcher only schedules: the rows, results.csv and the progress lines are the ledger's
(oracle.sweep.ledger, a Tune callback), which it tells each round's decision (`on_round_closed`).
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ray.tune import Callback
from ray.tune.search import Searcher

from oracle.judge.plan import plan_round
from oracle.judge.selection import judge, round_table
from oracle.store.arms import ORACLE
from oracle.store.identity import RunKey
from oracle.sweep.epochs import is_epoch_report
from oracle.sweep.execute import seeds_fused
from oracle.sweep.handoff import WinnersHandoff
from oracle.sweep.trial import SKIPPED, TrialConfig
from silo.accel import ExecutionConfig
from silo.status import RunStatus


@dataclass
class _OracleState:
    cycle: int = 0  # the round being decided
    released: int = -1  # the last round whose trials were queued
    parents: dict[int, dict[int, str]] = field(default_factory=dict)  # cycle -> seed -> winner run id
    members: dict[int, tuple[float, ...]] = field(default_factory=dict)  # cycle -> V (a beam starts from it)
    rows: dict[int, list[dict]] = field(default_factory=dict)  # cycle -> finished rows
    handed: dict[int, int] = field(default_factory=dict)  # cycle -> trials queued for the round
    held: int = -1  # a round with a trial being retried: the next one waits until it closes
    finished: bool = False


RoundClosed = Callable[[int, "float | None", int], None]  # (cycle, winner or None, values tried)


class StudySearcher(Searcher):
    def __init__(self, study, *, store: str, threads: int, on_round_closed: RoundClosed):
        super().__init__(metric="val_acc", mode="max")
        self.study = study
        self.store = store
        self.threads = threads
        self.on_round_closed = on_round_closed
        # Per invocation, so a rerun never reads the winners a previous one published.
        self.handoff = WinnersHandoff(Path(store).parent / "winners" / uuid.uuid4().hex[:12])
        self._queue: deque[TrialConfig] = deque()
        self._configs: dict[str, TrialConfig] = {}
        self._training: dict[str, set[str]] = {}  # trial id -> run ids it has yet to report
        self._members_reported: dict[str, set[tuple[int, float]]] = {}  # Oracle trial -> (seed, max_lr)s reported
        self.oracle = _OracleState()
        ex = study.execution
        self._seeds_fused = seeds_fused(ex.fuse, ex.fuse_seeds, study.task_for_arm(ORACLE), None)
        if study.grid:
            self._release_oracle_round(0)
        else:
            self.oracle.finished = True
        for arm in study.arm_names():
            if arm == ORACLE:
                continue
            schedule = study.schedule(arm)
            max_lrs = [schedule.max_lr(q) for q in range(study.cycles)]
            for seed in study.seeds:
                self._queue.append(self._config(arm, seed, 0, max_lrs, None))

    # -- trial configs -------------------------------------------------------------------
    def _config(self, arm: str, seed: int, first_cycle: int, max_lrs: list[float], parent: str | None,
                wait: str | None = None, *, seeds: list[int] | None = None,
                parents: list[str | None] | None = None) -> TrialConfig:
        """A trial: a chain arm's cycles first_cycle.. at max_lrs (from `parent`), or an
        Oracle round's (`seeds` from `parents`)."""
        task = _with_absolute_root(self.study.task_for_arm(arm))
        ex = self.study.execution  # the study's Execution: ExecutionConfig's fields and its own
        execution = ExecutionConfig.model_validate(ex.model_dump(include=set(ExecutionConfig.model_fields)))
        return TrialConfig(
            arm=arm, seed=seed, first_cycle=first_cycle, max_lrs=tuple(max_lrs), parent_run_id=parent,
            wait_for_winners=wait, task=task, store=self.store, threads=self.threads, round=arm == ORACLE,
            fuse=ex.fuse, execution=execution,
            seeds=tuple(seeds or [seed]), parent_run_ids=tuple(parents or [parent]),
        )

    def _round_config(self, seeds: list[int], q: int, max_lrs: list[float], parents: list[str | None],
                      wait: str | None) -> TrialConfig:
        """An Oracle trial: the runs of round q at the values max_lrs, for each of `seeds` from
        its parent (None: released early, it waits for them), trained together (`round`)."""
        return self._config(ORACLE, seeds[0], q, max_lrs, parents[0], wait, seeds=seeds, parents=parents)

    def _plan(self, q: int):
        """Round q's values as the rule replays them from its rows so far (oracle.judge.plan)."""
        rule = self.study.analysis
        return plan_round(self.oracle.rows.get(q, []), self.study.seeds, grid=self.study.grid,
                          refine=self.study.refine, tolerance=rule.tolerance,
                          beam=self.study.beam, previous=self.oracle.members.get(q - 1))

    def _release_oracle_round(self, q: int) -> None:
        """Queue round q: from known winners, or (released early) waiting for round q-1's.
        A beam round's values depend on V of round q-1, so it is never released early."""
        self._queue_oracle_values(q, list(self._plan(q).missing))
        self.oracle.released = q
        self.oracle.rows.setdefault(q, [])

    def _queue_oracle_values(self, q: int, values) -> None:
        """Queue round q's `values` for every seed: trials of at most max_members runs, each
        one seed's values or (seeds fused) the values of as many seeds as fit."""
        known = self.oracle.parents.get(q - 1)
        wait = None if q == 0 or known is not None else self.handoff.path_for(q - 1)
        size = self.study.execution.max_members
        seeds = list(self.study.seeds)
        chunks = [list(values[i:i + size]) for i in range(0, len(values), size)]
        for chunk in reversed(chunks):
            per_trial = max(1, size // len(chunk)) if self._seeds_fused else 1
            groups = [seeds[i:i + per_trial] for i in range(0, len(seeds), per_trial)]
            for group in reversed(groups):
                parents = [known[seed] if known else None for seed in group]
                # Oracle rounds go first: they are the study's critical path.
                self._queue.appendleft(self._round_config(group, q, chunk, parents, wait))
        self.oracle.handed[q] = self.oracle.handed.get(q, 0) + len(values) * len(seeds)

    # -- Searcher API --------------------------------------------------------------------
    def suggest(self, trial_id: str):
        if not self._queue and self._may_release_early():
            self._release_oracle_round(self.oracle.cycle + 1)
        config = self._next_free_config()
        if config is not None:
            self._configs[trial_id] = config
            self._training[trial_id] = self._planned_run_ids(config)
            return config.to_tune()  # Tune carries configs as plain dicts
        if self.oracle.finished and not self._queue:
            return Searcher.FINISHED
        return None  # waiting for the current Oracle round, or for a run another trial trains

    def _next_free_config(self) -> TrialConfig | None:
        """The first queued config none of whose runs another trial is training right now.

        Two arms can need the same run (SILO and LR rewinding share their cycles q <= delay;
        a grid value can equal SILO's max_lr from the same parent). Handing both out at
        once would train it twice; the second waits here and then reuses it from the store.
        """
        busy = set().union(*self._training.values()) if self._training else set()
        for i, config in enumerate(self._queue):
            if not (self._planned_run_ids(config) & busy):
                del self._queue[i]
                return config
        return None

    def _planned_run_ids(self, config: TrialConfig) -> set[str]:
        """The run ids a trial will train, as far as they are known before it starts
        (a chain's are: each cycle's parent is its previous run); empty if its parent is
        not known yet (an Oracle round released early)."""
        task = self.study.task_for_arm(config.arm)
        if config.round:  # the members of one round: same cycle, per seed one parent
            shares = config.shares
            if config.first_cycle > 0 and any(parent is None for _, parent in shares):
                return set()
            return {RunKey(task, seed=seed, cycle=config.first_cycle, max_lr=v, parent_run_id=parent).run_id
                    for seed, parent in shares for v in config.max_lrs}
        first, *later = config.max_lrs
        key = RunKey(task, seed=config.seed, cycle=config.first_cycle, max_lr=first,
                     parent_run_id=config.parent_run_id)
        ids = {key.run_id}
        for max_lr in later:  # a chain: each cycle continues the previous one
            key = key.next_cycle(max_lr)
            ids.add(key.run_id)
        return ids

    def _may_release_early(self) -> bool:
        o = self.oracle
        return (not o.finished and o.released == o.cycle and o.cycle + 1 < self.study.cycles
                and o.held != o.cycle and not self.study.refine and self.study.beam is None)

    def on_trial_recover(self, trial_id: str) -> None:
        """Tune retries this trial (its actor died, e.g. with its node), so it needs a slot
        again. If it belongs to the current Oracle round, withdraw the round released early
        to wait for it: those trials may hold every slot left, and they wait for it."""
        config, o = self._configs.get(trial_id), self.oracle
        if config is None or config.arm != ORACLE or config.first_cycle != o.cycle or o.finished:
            return
        o.held = o.cycle
        if o.released <= o.cycle:
            return  # nothing released early
        ahead = o.released
        self._queue = deque(c for c in self._queue if not (c.arm == ORACLE and c.first_cycle == ahead))
        o.released, o.handed[ahead], o.rows[ahead] = o.cycle, 0, []
        self.handoff.withdraw(o.cycle)  # the trials of round `ahead` end with status skipped

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if is_epoch_report(result):
            return  # a run still training (oracle.sweep.epochs): nothing for the rounds yet
        config = self._configs[trial_id]
        self._training.get(trial_id, set()).discard(result.get("run_id"))  # in the store now
        if config.arm == ORACLE:
            self._oracle_member_done(trial_id, config, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        config = self._configs[trial_id]
        self._training.pop(trial_id, None)
        if config.arm == ORACLE:
            # Tune hands a trial's final result (done=True) here, not to on_trial_result.
            self._oracle_trial_done(trial_id, config, result, error)

    # -- internals -----------------------------------------------------------------------
    def _oracle_trial_done(self, trial_id: str, config: TrialConfig, result: dict | None, error: bool) -> None:
        """A round trial ended: its last member's result, or (error) every member it did not
        report counts as failed in its round (the ledger writes their rows)."""
        if result and not error and result.get("status") == SKIPPED:
            return  # released early, but the Oracle stopped before this cycle
        if result and not error:
            self._oracle_member_done(trial_id, config, result)
            return
        done = self._members_reported.setdefault(trial_id, set())
        for seed, _ in config.shares:
            for max_lr in config.max_lrs:
                if (seed, max_lr) not in done:  # all the rule needs of it: this value failed for this seed
                    done.add((seed, max_lr))
                    self._oracle_row(config.first_cycle, {"seed": seed, "max_lr": max_lr,
                                                          "status": RunStatus.FAILED, "val_acc": float("nan")})

    def _oracle_member_done(self, trial_id: str, config: TrialConfig, result: dict) -> None:
        done = self._members_reported.setdefault(trial_id, set())
        member = (int(result["seed"]), float(result["max_lr"]))
        if member in done:
            return  # a retried trial reports its members again (reused from the store)
        done.add(member)
        self._oracle_row(config.first_cycle, result)

    def _oracle_row(self, q: int, row: dict) -> None:
        self.oracle.rows[q].append(row)
        if q == self.oracle.cycle and len(self.oracle.rows[q]) == self.oracle.handed[q]:
            self._round_done()

    def _round_done(self) -> None:
        """Every trial handed out for the current round finished: refine, or close it."""
        q = self.oracle.cycle
        plan = self._plan(q)
        if plan.missing:
            self._queue_oracle_values(q, list(plan.missing))
            return
        self._close_oracle_round(plan)

    def _close_oracle_round(self, plan) -> None:
        state, q = self.oracle, self.oracle.cycle
        rows = state.rows[q]
        rule = self.study.analysis
        table = round_table([r for r in rows if float(r["max_lr"]) in plan.values], self.study.seeds)
        judged = judge(table, grid=plan.neighbours(), tolerance=rule.tolerance, pool=plan.pool)
        self.on_round_closed(q, None if judged is None else judged.winner, len({r["max_lr"] for r in rows}))
        if judged is None:
            state.finished = True
            self._publish(q, None)
            return
        state.parents[q] = {int(r["seed"]): r["run_id"] for r in rows if r["max_lr"] == judged.winner}
        state.members[q] = judged.members
        self._publish(q, state.parents[q])
        state.cycle += 1
        if state.cycle >= self.study.cycles:
            state.finished = True
        elif state.released < state.cycle:
            self._release_oracle_round(state.cycle)

    def _publish(self, q: int, parents: dict[int, str] | None) -> None:
        if self.oracle.released > q:  # someone waits for this round's winners
            self.handoff.publish(q, parents)


class RetryWatch(Callback):
    """Tells the searcher when Tune retries a trial: Tune's Searcher API is not told."""

    def __init__(self, searcher: StudySearcher):
        self.searcher = searcher

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        self.searcher.on_trial_recover(trial.trial_id)


def _with_absolute_root(task):
    """Pin the data root as the driver sees it.

    Tune runs each trial in its own working directory, so a relative root (or the ./data
    default) would point somewhere else in every trial and defeat the per-worker DataCache.
    The root is not part of the run identity, so this changes no run id.
    """
    from silo.data import resolve_root

    data = task.data.model_copy(update={"root": str(resolve_root(task.data.root))})
    return task.model_copy(update={"data": data})

