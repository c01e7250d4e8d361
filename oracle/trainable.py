"""The Ray Tune trainable: one trial trains several runs of one seed.

An Oracle trial is one seed's share of a round (its grid values of one cycle, at most
`execution.max_members`), trained together (oracle.execute.obtain_round: fused or one after
another) and reported one member per step. A chain-arm trial loops over the cycles,
reporting and checkpointing after each. A class trainable keeps the worker's DataCache
across trials when Tune reuses the actor, so data is loaded once per worker.
"""

from __future__ import annotations

import ray
import torch
from ray import tune

from oracle.execute import obtain_round, obtain_run
from oracle.faults import maybe_inject_fault
from oracle.handoff import STOPPED, WinnersLost, await_winner
from oracle.identity import RunKey
from oracle.store import RunStore
from silo.config import TaskConfig
from silo.data import DataCache


class RunTrainable(tune.Trainable):
    def setup(self, config: dict) -> None:
        self._cache = DataCache()
        self._configure(config)

    def reset_config(self, new_config: dict) -> bool:
        # Tune reuses this actor for the next trial: keep the DataCache, take the new run.
        self._configure(new_config)
        return True

    def _configure(self, config: dict) -> None:
        self.arm = config["arm"]
        self.task = TaskConfig.model_validate(config["task"])
        self.seed = int(config["seed"])
        self.first_cycle = int(config["first_cycle"])
        self.max_lrs = [float(v) for v in config["max_lrs"]]
        self.store = RunStore(config["store"])
        self.cycle = self.first_cycle
        self.parent_run_id = config["parent_run_id"]
        self.wait_for_winners = config.get("wait_for_winners")
        self.round = bool(config.get("round"))  # an Oracle round: the values of one cycle
        self.fuse = config.get("fuse", "auto")
        self._members: list[tuple[dict, bool]] | None = None  # a round's trained or reused runs
        self._reported = 0
        # As many torch threads as CPUs given: more would fight the other trials. Only set
        # when it changes: resetting the pool drops oneDNN's caches (~1 s per trial on CPU).
        threads = max(1, int(config.get("threads", 1)))
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)

    def step(self) -> dict:
        if self.parent_run_id is None and self.wait_for_winners and self.cycle == self.first_cycle:
            # Released early (oracle.searcher): wait, warm, for the previous round's winners.
            try:
                parent = await_winner(self.wait_for_winners, self.seed)
            except WinnersLost as lost:  # the driver is gone: free the slot, say why
                return {"status": "skipped", "reason": str(lost), "arm": self.arm,
                        "val_acc": float("nan"), "done": True}
            if parent == STOPPED:  # the Oracle stopped: nothing to train
                return {"status": "skipped", "arm": self.arm, "val_acc": float("nan"), "done": True}
            self.parent_run_id = parent
        maybe_inject_fault()  # tests and drills only (oracle.faults)
        if self.round:
            return self._round_step()
        max_lr = self.max_lrs[self.cycle - self.first_cycle]
        metrics, reused = obtain_run(self.store, self._key(self.cycle, max_lr), cache=self._cache)
        result = _result(metrics, self.arm, reused)
        self.parent_run_id = metrics["run_id"]
        self.cycle += 1
        result["done"] = self.cycle >= self.first_cycle + len(self.max_lrs)
        # A chain resumes from its last finished cycle after a crash; the weights are in the
        # run store already, so the checkpoint is only where the chain is.
        result["should_checkpoint"] = not result["done"]
        return result

    def _round_step(self) -> dict:
        """The first step trains the round's missing members together; each step reports
        one member, so Tune's results (and the searcher) see every run as it is."""
        if self._members is None:
            keys = [self._key(self.first_cycle, v) for v in self.max_lrs]
            self._mode: tuple[str, str] | None = None
            self._members = obtain_round(self.store, keys, fuse=self.fuse, cache=self._cache,
                                         on_mode=lambda mode, why: setattr(self, "_mode", (mode, why)))
        metrics, reused = self._members[self._reported]
        self._reported += 1
        result = _result(metrics, self.arm, reused)
        if self._mode is not None and not reused:  # how this trial trained its members, and why
            result["round_mode"], result["round_mode_why"] = self._mode
        result["done"] = self._reported >= len(self._members)
        result["should_checkpoint"] = False  # every member is in the store already
        return result

    def _key(self, cycle: int, max_lr: float) -> RunKey:
        return RunKey(self.task, seed=self.seed, cycle=cycle, max_lr=max_lr, parent_run_id=self.parent_run_id)

    def save_checkpoint(self, checkpoint_dir: str) -> dict:
        # The weights live in the run store; the checkpoint only says where the chain is.
        return {"cycle": self.cycle, "parent_run_id": self.parent_run_id}

    def load_checkpoint(self, checkpoint: dict) -> None:
        self.cycle = int(checkpoint["cycle"])
        self.parent_run_id = checkpoint["parent_run_id"]


def _result(metrics: dict, arm: str, reused: bool) -> dict:
    # The node, so a cluster run shows where each run trained (Tune's result.json).
    result = dict(metrics, arm=arm, reused=reused, node_id=ray.get_runtime_context().get_node_id())
    result.pop("layer_sparsity", None)  # keep Tune's result table flat and small
    return result

