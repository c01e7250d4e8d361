"""The study as a Ray Tune searcher: the Oracle's rounds and the chain arms in one Tune run.

Tune asks for trials whenever it has room. The Oracle hands out one round per cycle (its
grid x seeds, each from its seed's winner of the previous cycle) and waits (returns None)
until the round is complete, chooses the winner exactly as DESIGN.md says, then releases the
next round. Chain arms (SILO, baselines) are one trial per arm x seed; they fill the room the
Oracle's rounds leave, so everything runs alongside when resources allow.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ray.tune.search import Searcher

from oracle.identity import run_id as compute_run_id
from oracle.ledger import Ledger
from oracle.selection import choose_winner, grid_points

ORACLE = "oracle"


@dataclass
class _OracleState:
    cycle: int = 0
    parents: dict[int, str | None] = field(default_factory=dict)  # seed -> winner run id
    round_rows: list[dict] = field(default_factory=list)
    outstanding: int = 0
    finished: bool = False
    winners: list[float] = field(default_factory=list)


class StudySearcher(Searcher):
    def __init__(self, study, *, store: str, threads: int, ledger: Ledger):
        super().__init__(metric="val_acc", mode="max")
        self.study = study
        self.store = store
        self.threads = threads
        self.ledger = ledger
        self._queue: deque[dict] = deque()
        self._configs: dict[str, dict] = {}
        self._last: dict[str, dict] = {}  # trial id -> last reported result
        self.oracle = _OracleState(parents={s: None for s in study.seeds})
        if study.grid:
            self._enqueue_oracle_round()
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
    def _config(self, arm: str, seed: int, first_cycle: int, max_lrs: list[float], parent):
        task = _with_absolute_root(self.study.task_for_arm(arm))
        return {
            "arm": arm, "seed": seed, "first_cycle": first_cycle, "max_lrs": max_lrs,
            "parent_run_id": parent, "task": task.model_dump(mode="json"),
            "store": self.store, "threads": self.threads,
        }

    def _enqueue_oracle_round(self) -> None:
        q = self.oracle.cycle
        for max_lr in self.study.grid:
            for seed in self.study.seeds:
                # Oracle rounds go first: they are the study's critical path.
                self._queue.appendleft(self._config(ORACLE, seed, q, [max_lr], self.oracle.parents[seed]))
                self.oracle.outstanding += 1

    # -- Searcher API --------------------------------------------------------------------
    def suggest(self, trial_id: str):
        if self._queue:
            config = self._queue.popleft()
            self._configs[trial_id] = config
            return config
        if self.oracle.finished:
            return Searcher.FINISHED
        return None  # waiting for the current Oracle round to finish

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        config = self._configs[trial_id]
        self._last[trial_id] = result
        if config["arm"] != ORACLE:
            self.ledger.chain_row(_row(result, config["arm"]))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        config = self._configs[trial_id]
        if config["arm"] == ORACLE:
            row = _row(result, ORACLE) if (result and not error) else self._failed_row(config, 0, config["parent_run_id"])
            self.oracle.round_rows.append(row)
            self.oracle.outstanding -= 1
            if self.oracle.outstanding == 0:
                self._close_oracle_round()
        elif error:
            self._fail_rest_of_chain(trial_id, config)
        elif result:
            # Tune hands the final result (done=True) here, not to on_trial_result.
            self.ledger.chain_row(_row(result, config["arm"]))

    # -- internals -----------------------------------------------------------------------
    def _close_oracle_round(self) -> None:
        state, q = self.oracle, self.oracle.cycle
        winner = choose_winner(grid_points(state.round_rows, self.study.seeds))
        self.ledger.oracle_round(q, state.round_rows, None if winner is None else winner.max_lr)
        if winner is None:
            state.finished = True
            return
        state.winners.append(winner.max_lr)
        state.parents = {
            int(r["seed"]): r["run_id"] for r in state.round_rows if r["max_lr"] == winner.max_lr
        }
        state.round_rows = []
        state.cycle += 1
        if state.cycle >= self.study.cycles:
            state.finished = True
        else:
            self._enqueue_oracle_round()

    def _fail_rest_of_chain(self, trial_id: str, config: dict) -> None:
        last = self._last.get(trial_id)
        start = (int(last["cycle"]) + 1) if last else config["first_cycle"]
        parent = last["run_id"] if last else config["parent_run_id"]
        for q in range(start, config["first_cycle"] + len(config["max_lrs"])):
            self.ledger.chain_row(self._failed_row(config, q - config["first_cycle"], parent))
            parent = None  # later runs never existed, so their ids are unknown

    def _failed_row(self, config: dict, offset: int, parent: str | None) -> dict:
        cycle = config["first_cycle"] + offset
        max_lr = config["max_lrs"][offset]
        rid = None
        if parent is not None or cycle == 0:
            task = self.study.task_for_arm(config["arm"])
            rid = compute_run_id(task, seed=config["seed"], cycle=cycle, max_lr=max_lr, parent_run_id=parent)
        return {
            "arm": config["arm"], "seed": config["seed"], "cycle": cycle, "max_lr": max_lr,
            "status": "failed", "run_id": rid, "parent_run_id": parent, "reused": False,
            "val_acc": float("nan"), "test_acc": float("nan"), "sparsity": None,
        }


def _with_absolute_root(task):
    """Pin the data root as the driver sees it.

    Tune runs each trial in its own working directory, so a relative root (or the ./data
    default) would point somewhere else in every trial and defeat the per-worker DataCache.
    The root is not part of the run identity, so this changes no run id.
    """
    from silo.data import resolve_root

    data = task.data.model_copy(update={"root": str(resolve_root(task.data.root))})
    return task.model_copy(update={"data": data})


def _row(result: dict, arm: str) -> dict:
    return dict(result, arm=arm)
