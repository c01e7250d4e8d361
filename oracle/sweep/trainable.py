"""The Ray Tune trainable: one trial trains several runs.

An Oracle trial is one or (`execution.fuse_seeds`) several seeds' share of a round (grid
values of one cycle, at most `execution.max_members` runs), trained together
(oracle.sweep.execute.obtain_round: fused or one after another) and reported one member per
step. A chain-arm trial (one seed) loops over the cycles, reporting and checkpointing after
each. Between those, a step reports each epoch's learning
curve as the runs train (oracle.sweep.epochs). A class trainable keeps the worker's DataCache
across trials when Tune reuses the actor, so data is loaded once per worker.
"""

from __future__ import annotations

import ray
import torch
from ray import tune

from oracle.store.identity import RunKey
from oracle.store.runs import RunStore
from oracle.sweep.epochs import EpochFeed, epoch_report
from oracle.sweep.execute import obtain_round, obtain_run
from oracle.sweep.faults import maybe_inject_fault
from oracle.sweep.handoff import STOPPED, WITHDRAWN, WinnersLost, await_winner
from oracle.sweep.trial import SKIPPED, TrialConfig
from silo.accel import CompileCache
from silo.data import DataCache


class RunTrainable(tune.Trainable):
    def setup(self, config: dict) -> None:
        self._cache = DataCache()
        self._compiled = CompileCache()  # torch.compile once per worker process (execution.compile)
        self._configure(config)

    def reset_config(self, new_config: dict) -> bool:
        # Tune reuses this actor for the next trial: keep the DataCache, take the new run.
        self._configure(new_config)
        return True

    def _configure(self, config: dict) -> None:
        trial = TrialConfig.from_tune(config)  # the searcher's, checked before anything trains
        self.arm = trial.arm
        self.task = trial.task
        self.seed = trial.seed
        self.first_cycle = trial.first_cycle
        self.max_lrs = list(trial.max_lrs)
        self.store = RunStore(trial.store)
        self.cycle = self.first_cycle
        self.parent_run_id = trial.parent_run_id
        self.wait_for_winners = trial.wait_for_winners
        self.round = trial.round  # an Oracle round: the values of one cycle
        # A round's seeds and their parents: one, or several trained as one stack (fuse_seeds).
        self.shares = trial.shares if self.round else []
        self.fuse = trial.fuse
        self.execution = trial.execution
        self._members: list[tuple[dict, bool]] | None = None  # a round's trained or reused runs
        self._mode: tuple[str, str] | None = None  # how the round trained its members, and why
        self._reported = 0
        self._feed: EpochFeed | None = None  # the run or round training now, epoch by epoch
        # As many torch threads as CPUs given: more would fight the other trials. Only set
        # when it changes: resetting the pool drops oneDNN's caches (~1 s per trial on CPU).
        threads = max(1, trial.threads)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)

    def _skipped(self, reason: str | None) -> dict:
        """A trial released early that ends without training: its slot is freed, and the
        searcher and the ledger count nothing for it."""
        said = {} if reason is None else {"reason": reason}
        return {"status": SKIPPED, **said, "arm": self.arm, "val_acc": float("nan"), "done": True}

    def step(self) -> dict:
        if self._feed is not None:  # training: the next epoch's report, or the result
            return self._next_from_feed()
        # Before the wait for winners: a test's hold on one node must not wait on a round
        # released early there, whose winners the held node has yet to train.
        maybe_inject_fault(self.arm)  # tests and drills only (oracle.sweep.faults)
        if self.round and self.wait_for_winners and any(p is None for _, p in self.shares):
            # Released early (oracle.sweep.searcher): wait, warm, for the previous round's winners.
            try:
                parents = [await_winner(self.wait_for_winners, seed) for seed, _ in self.shares]
            except WinnersLost as lost:  # the driver is gone: free the slot, say why
                return self._skipped(str(lost))
            if STOPPED in parents:  # the Oracle stopped: nothing to train
                return self._skipped(None)
            if WITHDRAWN in parents:  # a retried trial of the previous round needs this slot
                return self._skipped("withdrawn: handed out again once the previous round closes")
            self.shares = [(seed, parent) for (seed, _), parent in zip(self.shares, parents)]
        if self.round:
            if self._members is None:
                self._start_round()
                return self._next_from_feed()
            return self._round_step()
        max_lr = self.max_lrs[self.cycle - self.first_cycle]
        key = self._key(self.cycle, max_lr)
        self._feed = EpochFeed(lambda progress: obtain_run(
            self.store, key, cache=self._cache, execution=self.execution, compiled=self._compiled,
            progress=progress))
        return self._next_from_feed()

    def _next_from_feed(self) -> dict:
        feed = self._feed
        assert feed is not None, "step() reads the feed only while a run or a round trains"
        kind, value = feed.next()
        # The last epoch's point is the run's own result, which comes next with its val_acc.
        while kind == "epoch" and value["step"] >= value["total_steps"]:
            kind, value = feed.next()
        if kind == "epoch":
            lone = None if self.round else self.max_lrs[self.cycle - self.first_cycle]
            return epoch_report(value, arm=self.arm, seed=self.seed, max_lr=lone,
                                node_id=ray.get_runtime_context().get_node_id())
        self._feed = None
        if self.round:
            self._members = value
            return self._round_step()
        return self._chain_step(*value)

    def _chain_step(self, metrics: dict, reused: bool) -> dict:
        """A chain's run of this cycle is in the store: report it, move to the next cycle."""
        result = _result(metrics, self.arm, reused)
        self.parent_run_id = metrics["run_id"]
        self.cycle += 1
        result["done"] = self.cycle >= self.first_cycle + len(self.max_lrs)
        # A chain resumes from its last finished cycle after a crash; the weights are in the
        # run store already, so the checkpoint is only where the chain is.
        result["should_checkpoint"] = not result["done"]
        return result

    def _start_round(self) -> None:
        """Train the round's missing members together, in the feed's thread."""
        keys = [RunKey(self.task, seed=seed, cycle=self.first_cycle, max_lr=v, parent_run_id=parent)
                for seed, parent in self.shares for v in self.max_lrs]
        self._feed = EpochFeed(lambda progress: obtain_round(
            self.store, keys, fuse=self.fuse, cache=self._cache,
            on_mode=lambda mode, why: setattr(self, "_mode", (mode, why)),
            execution=self.execution, compiled=self._compiled, progress=progress))

    def _round_step(self) -> dict:
        """Once the round is trained, each step reports one member, so Tune's results (and
        the searcher) see every run as it is."""
        members = self._members
        assert members is not None, "a round reports its members once they are trained"
        metrics, reused = members[self._reported]
        self._reported += 1
        result = _result(metrics, self.arm, reused)
        if self._mode is not None and not reused:  # how this trial trained its members, and why
            result["round_mode"], result["round_mode_why"] = self._mode
        result["done"] = self._reported >= len(members)
        result["should_checkpoint"] = False  # every member is in the store already
        return result

    def _key(self, cycle: int, max_lr: float) -> RunKey:
        return RunKey(self.task, seed=self.seed, cycle=cycle, max_lr=max_lr, parent_run_id=self.parent_run_id)

    def save_checkpoint(self, checkpoint_dir: str) -> dict:
        # The weights live in the run store; the checkpoint only says where the chain is.
        return {"cycle": self.cycle, "parent_run_id": self.parent_run_id}

    def load_checkpoint(self, checkpoint: dict | None) -> None:
        if checkpoint is None:  # Tune's type allows it; save_checkpoint always returns a dict
            return
        self.cycle = int(checkpoint["cycle"])
        self.parent_run_id = checkpoint["parent_run_id"]


def _result(metrics: dict, arm: str, reused: bool) -> dict:
    # The node, so a cluster run shows where each run trained (Tune's result.json).
    result = dict(metrics, arm=arm, reused=reused, node_id=ray.get_runtime_context().get_node_id())
    result.pop("layer_sparsity", None)  # keep Tune's result table flat and small
    return result

