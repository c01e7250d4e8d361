"""The winners hand-off between the driver and Oracle trials released early."""

from __future__ import annotations

import os
import threading
import time
import types

import pytest

from oracle.sweep.handoff import HEARTBEAT, STOPPED, WITHDRAWN, WinnersHandoff, WinnersLost, await_winner
from tests._repo import REPO


def test_a_waiting_trial_gets_its_seeds_parent_once_published(tmp_path):
    handoff = WinnersHandoff(tmp_path / "w")
    with handoff.beating(every_s=0.05):
        threading.Timer(0.3, handoff.publish, args=(2, {0: "run-a", 1: "run-b"})).start()
        t0 = time.monotonic()
        assert await_winner(handoff.path_for(2), 1, stale_after_s=0.2) == "run-b"
        assert time.monotonic() - t0 >= 0.25  # it waited, beyond the stale limit, while beats came
    handoff.publish(3, None)
    assert await_winner(handoff.path_for(3), 0) == STOPPED
    handoff.discard()
    assert not (tmp_path / "w").exists()


def test_a_gone_driver_frees_the_waiting_trial(tmp_path):
    handoff = WinnersHandoff(tmp_path / "w")
    handoff.folder.mkdir(parents=True)
    beat = handoff.folder / HEARTBEAT
    beat.touch()
    old = time.time() - 60
    os.utime(beat, (old, old))  # the last beat was a minute ago
    t0 = time.monotonic()
    with pytest.raises(WinnersLost, match="the driver is gone"):
        await_winner(handoff.path_for(0), 0, stale_after_s=30)
    assert time.monotonic() - t0 < 1
    with pytest.raises(WinnersLost, match="the driver is gone"):  # never beat at all
        await_winner(str(tmp_path / "nobody" / "cycle-0.json"), 0, stale_after_s=0.2)


def test_waiting_is_bounded_even_while_the_driver_beats(tmp_path):
    handoff = WinnersHandoff(tmp_path / "w")
    with handoff.beating(every_s=0.05), pytest.raises(WinnersLost, match="no winners"):
        await_winner(handoff.path_for(0), 0, limit_s=0.3)


# -- a node lost while a round released early waits ---------------------------------------------


def _oracle_only_smoke(tmp_path):
    import yaml

    from oracle.study import parse_study

    data = yaml.safe_load((REPO / "studies" / "smoke.yaml").read_text())
    data["arms"] = {"oracle": data["arms"]["oracle"]}
    data["task"]["data"]["root"] = str(tmp_path / "data")
    return parse_study(data)


class _ToyTune:
    """Tune's loop as far as slots go: at most `limit` live trials (max_concurrent_trials),
    at most `capacity` of them running (the cluster's CPUs); pending trials start in order; a
    retried trial goes to the end of the pending ones, and the searcher is not told, only
    the callbacks (RetryWatch). Each step, waiting trials look for their winners and the
    training trials advance (two steps each, and one finishes its runs per step, answered
    without training)."""

    def __init__(self, searcher, *, limit: int):
        from oracle.sweep.searcher import RetryWatch

        self.searcher, self.watch = searcher, RetryWatch(searcher)
        self.limit = self.capacity = limit
        self.pending, self.running, self.n = [], [], 0
        self.rows, self.skipped, self.suggested, self.finished = [], [], [], False

    def trial(self, trial_id, config):
        return types.SimpleNamespace(trial_id=trial_id, config=config, parent=config["parent_run_id"], steps=0)

    def step(self, drill=None) -> bool:
        """One pass; False when nothing changed (a deadlock, unless the study is done).
        `drill()` runs once the new trials have started, before any trial advances."""
        changed = False
        while not self.finished and len(self.pending) + len(self.running) < self.limit:
            self.n += 1
            config = self.searcher.suggest(f"t{self.n}")
            if config is None:
                break
            if config == self.searcher.FINISHED:
                self.finished = changed = True
                break
            self.pending.append(self.trial(f"t{self.n}", config))
            self.suggested.append(self.pending[-1])
            changed = True
        while self.pending and len(self.running) < self.capacity:
            self.running.append(self.pending.pop(0))
            changed = True
        if drill is not None:
            drill()
        for t in list(self.running):
            if t.parent is None and t.config["wait_for_winners"]:
                if not os.path.exists(t.config["wait_for_winners"]):
                    continue
                parent = await_winner(t.config["wait_for_winners"], t.config["seed"])
                if parent in (STOPPED, WITHDRAWN):
                    self.running.remove(t)
                    self.skipped.append(t)
                    self.searcher.on_trial_complete(t.trial_id, {"status": "skipped", "val_acc": float("nan")})
                    changed = True
                    continue
                t.parent, changed = parent, True
        training = [t for t in self.running if t.parent is not None or t.config["first_cycle"] == 0]
        for t in training:  # a trial trains for two steps; one finishes per step
            t.steps += 1
            changed = True
        done = [t for t in training if t.steps >= 2]
        if done:
            self.finish(done[0])
        return changed

    def finish(self, t) -> None:
        from oracle.store.identity import RunKey
        from silo.config import TaskConfig

        q, seed, task = t.config["first_cycle"], t.config["seed"], TaskConfig.model_validate(t.config["task"])
        results = [{"arm": "oracle", "seed": seed, "cycle": q, "max_lr": v, "status": "ok",
                    "val_acc": 0.5 + v + 0.01 * q, "parent_run_id": t.parent,
                    "run_id": RunKey(task, seed=seed, cycle=q, max_lr=v, parent_run_id=t.parent).run_id}
                   for v in t.config["max_lrs"]]
        self.running.remove(t)
        self.rows.extend(results)
        for r in results[:-1]:
            self.searcher.on_trial_result(t.trial_id, r)
        self.searcher.on_trial_complete(t.trial_id, results[-1])

    def lose_a_node_under(self, t) -> None:
        """The node of running trial t is gone: one slot fewer, t retried at the end."""
        self.running.remove(t)
        t.steps = 0
        self.capacity -= 1
        self.watch.on_trial_recover(iteration=0, trials=[], trial=t)
        self.pending.append(t)


def test_a_lost_node_under_the_current_round_withdraws_the_round_released_early(tmp_path):
    """Two slots: round 0's two trials (one per seed) train, round 1 is released early and
    waits in a slot; then the node under round 0's last trial is lost. The one slot left is
    held by round 1's waiting trial, and round 0's retried trial needs it: the searcher must
    withdraw round 1 (its trials end, skipped) and hand it out again once round 0 closes."""
    from oracle.sweep.searcher import StudySearcher

    study = _oracle_only_smoke(tmp_path)
    searcher = StudySearcher(study, store=str(tmp_path / "runs"), threads=1, on_round_closed=lambda *a: None)
    tune = _ToyTune(searcher, limit=2)
    lost = []

    def drill():
        waiting = [t for t in tune.running if t.config["first_cycle"] == 1 and t.parent is None]
        current = [t for t in tune.running if t.config["first_cycle"] == 0]
        if not lost and waiting and current:  # the moment of the drill: round 1 holds a slot
            tune.lose_a_node_under(current[0])
            lost.append(len(tune.suggested))  # trials handed out so far

    for _ in range(200):
        if tune.finished and not tune.running and not tune.pending:
            break
        assert tune.step(drill), (f"deadlock: running {[t.config['first_cycle'] for t in tune.running]}, "
                             f"pending {[t.config['first_cycle'] for t in tune.pending]}")
    assert lost and tune.finished and not tune.running and not tune.pending
    after = tune.suggested[lost[0]:]  # no trial of round 1 may wait while round 0 is retried
    handed_again = [t for t in after if t.config["first_cycle"] == 1]
    assert handed_again and all(t.config["wait_for_winners"] is None for t in handed_again)
    assert {t.config["first_cycle"] for t in tune.skipped} == {1}  # only round 1, released early, withdrawn
    trained = [(r["cycle"], r["seed"], r["max_lr"]) for r in tune.rows]
    assert len(trained) == len(set(trained)) == study.cycles * len(study.seeds) * len(study.grid)
    # Round 1 was handed out again from round 0's winners (not waiting): its parents are known runs.
    round0 = {r["run_id"] for r in tune.rows if r["cycle"] == 0}
    assert {r["parent_run_id"] for r in tune.rows if r["cycle"] == 1} <= round0
    assert searcher.oracle.cycle == study.cycles


def test_a_retried_trial_of_a_round_behind_withdraws_nothing(tmp_path):
    """Only a retry of the current round withdraws the early release: a waiting trial of the
    round ahead that is itself retried just waits again."""
    from oracle.sweep.searcher import StudySearcher

    study = _oracle_only_smoke(tmp_path)
    searcher = StudySearcher(study, store=str(tmp_path / "runs"), threads=1, on_round_closed=lambda *a: None)
    tune = _ToyTune(searcher, limit=3)
    for _ in range(20):
        waiting = [t for t in tune.running if t.config["first_cycle"] == 1 and t.parent is None]
        if waiting:
            break
        tune.step()
    assert waiting and searcher.oracle.released == 1
    tune.lose_a_node_under(waiting[0])
    assert searcher.oracle.released == 1 and not os.path.exists(searcher.handoff.path_for(0))
