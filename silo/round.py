"""The runs of a round trained together: one (task, cycle), per seed a parent and G values of max_lr.

Within an Oracle round the runs of one seed differ only in max_lr: same parent, same mask,
same rewound weights, same batches in the same order (docs/design.md, "Fused rounds").
`train_round` trains one seed's share of a round; `train_shares` several seeds' shares at
once (`execution.fuse_seeds`), each member then with its own seed's batches, parent weights
and mask. Both return one `RunResult` per run, each what `silo.train.train_run` returns for
that run, in one of two modes:

- ``"fused"``: the members as one model (torch.func: stacked parameters and BatchNorm
  buffers, `functional_call` under `vmap`; one seed's batch shared by its members), the loss
  the sum of the members' mean losses (so each member's gradient is its own), one
  `StackedOptimizer` with a per-member learning rate, the masks applied after each step,
  divergence judged per member. A member that diverges gets the result train_run returns
  for a diverged run (weights at the check that caught it, accuracies at chance) and leaves
  the stack: eager, the stack shrinks; compiled, the stack keeps its size (one compiled
  graph per G, never a recompilation per divergence) and the member's slot trains a copy of
  a live member at learning rate 0, its results ignored. Models it cannot fuse raise
  `FusionUnsupported` before anything trains; catch it and call again with
  ``mode="sequential"``.
- ``"sequential"``: the runs one after another through `train_run`, in this process.

Both modes are the same computation: in float64 they agree to rounding (tests/silo/test_round.py
checks 1e-10); in float32 a member trained at a high max_lr can drift from its sequential
twin as between two GPUs. The master dtype follows torch's default dtype when the model is
built and the data's dtype, as in train_run. Under task.precision bf16 or fp16 the fused step
makes autocast's casts itself (silo.fused_precision: autocast does not reach vmap) and fp16
scales each member's loss with its own scale (StackedGradScaler), as its lone run's
GradScaler does. The stack, its step (compiled whole where it can be) and the checks that a
model can fuse are silo.fused's; the epoch loop, shared with train_run, is silo.epoch_loop's.

Time: a fused member's `wall_s` and training time are the round's divided by its member
count (its share), so summing `wall_s` over runs still gives the time spent.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor

from silo import curves
from silo.accel import Accel, CompileCache, ExecutionConfig, check_precision
from silo.config import TaskConfig
from silo.curves import CurvePoint
from silo.data import DataCache, Splits, load_data
from silo.epoch_loop import LossSums, train_epochs
from silo.fused import FusedStack, FusionUnsupported, cannot_fuse, check_fusable, check_fusable_on
from silo.pruning import swd
from silo.schedules import shape_multiplier
from silo.step import cycle_steps, order_generator, rewind_capture_step
from silo.train import (
    Progress,
    RunResult,
    RunState,
    StateDict,
    check_max_lr,
    diverged_result,
    finish_run,
    resolve_device,
    start_state,
    train_run,
)

__all__ = ["MODES", "FusionUnsupported", "Mode", "Share", "check_fusable", "check_fusable_on", "train_round",
           "train_shares"]

Mode = Literal["fused", "sequential"]
MODES: tuple[str, ...] = ("fused", "sequential")

@dataclass
class Share:
    """One seed's share of a round: the values it trains from its parent (None at cycle 0),
    and its data if the caller has it loaded."""

    seed: int
    max_lrs: list[float]
    parent: RunState | None = None
    data: Splits | None = None


@dataclass
class _Loaded:
    """A share with its data loaded."""

    seed: int
    max_lrs: list[float]
    parent: RunState | None
    data: Splits


def train_round(
    task: TaskConfig,
    *,
    seed: int,
    cycle: int,
    max_lrs: Iterable[float],
    parent: RunState | None = None,
    mode: Mode = "fused",
    data: Splits | None = None,
    cache: DataCache | None = None,
    device: torch.device | str | None = None,
    progress: Progress | None = None,
    execution: ExecutionConfig | None = None,
    compiled: CompileCache | None = None,
) -> list[RunResult]:
    """Train the runs (task, seed, cycle, max_lr, parent) for each max_lr; results in order.

    `progress`, if given, is called after each epoch with cycle, step, total_steps, epoch,
    train_loss and val_acc: lists over max_lrs of the epoch's mean loss and curve point (val_acc
    None where the epoch has none), None for the members not training (diverged; in
    sequential mode, all but the one training now).
    Raises FusionUnsupported (mode="fused" only) before training if the model cannot be
    fused; never raises on a non-finite loss. `execution` and `compiled` as in train_run.
    """
    share = Share(seed, list(max_lrs), parent, data)
    return train_shares(task, cycle=cycle, shares=[share], mode=mode, cache=cache, device=device,
                        progress=progress, execution=execution, compiled=compiled)[0]


def train_shares(
    task: TaskConfig,
    *,
    cycle: int,
    shares: list[Share],
    mode: Mode = "fused",
    cache: DataCache | None = None,
    device: torch.device | str | None = None,
    progress: Progress | None = None,
    execution: ExecutionConfig | None = None,
    compiled: CompileCache | None = None,
) -> list[list[RunResult]]:
    """Train several seeds' shares of one round; per share, its results in its max_lrs' order.

    Fused, every member of every share is one member of one stack (G = the shares' values
    summed), each with its own seed's batches, parent weights and mask: the results are those
    of train_round per share, and of train_run per run. `progress` as in train_round, its
    lists over all members, share after share. SWD rounds (a penalty per mask) and shares
    whose cycles differ in length are fused share by share.
    """
    t_start = time.perf_counter()
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not shares or not all(s.max_lrs for s in shares):
        raise ValueError("max_lrs is empty: a round trains at least one run per share")
    for s in shares:
        for lr in s.max_lrs:
            check_max_lr(lr)
    device = resolve_device(task.device) if device is None else torch.device(device)
    check_precision(task.precision, device)
    loaded = [_Loaded(s.seed, list(s.max_lrs), s.parent, s.data if s.data is not None else
                      load_data(task.data, seed=s.seed, device=device, cache=cache)) for s in shares]
    offsets = _offsets(loaded)
    count = offsets[-1]

    if mode == "sequential":
        return [[train_run(task, seed=s.seed, cycle=cycle, max_lr=lr, parent=s.parent, data=s.data, device=device,
                           progress=_for_member(_spread_parts(progress, [first + i], [1], count)),
                           execution=execution, compiled=compiled)
                 for i, lr in enumerate(s.max_lrs)] for s, first in zip(loaded, offsets)]
    out: dict[int, list[RunResult]] = {}
    live = []
    for k, one in enumerate(loaded):
        if one.parent is not None and one.parent.diverged:
            out[k] = [diverged_result(task, one.data, one.seed, cycle, lr, one.parent, t_start, steps=0)
                      for lr in one.max_lrs]
        else:
            live.append(k)
    for part in _fusable_parts(task, loaded, live):
        spread = _spread_parts(progress, [offsets[k] for k in part], [len(loaded[k].max_lrs) for k in part], count)
        fused = _train_fused(task, [loaded[k] for k in part], cycle=cycle, device=device, progress=spread,
                             t_start=t_start, execution=execution, compiled=compiled)
        out.update(zip(part, fused))
    return [out[k] for k in range(len(loaded))]


def _offsets(shares: list[_Loaded]) -> list[int]:
    """Where each share's members start in the flat member order, then the member count."""
    offsets = [0]
    for s in shares:
        offsets.append(offsets[-1] + len(s.max_lrs))
    return offsets


def _spread_parts(progress: Progress | None, firsts: list[int], sizes: list[int], count: int) -> Progress | None:
    """A fused part's report (its shares' members one after another) placed in the whole's lists."""
    if progress is None:
        return None

    def report(info: dict[str, Any]) -> None:
        spread = {}
        for key in ("train_loss", "val_acc"):
            out: list[float | None] = [None] * count
            at = 0
            for first, size in zip(firsts, sizes):
                out[first:first + size] = info[key][at:at + size]
                at += size
            spread[key] = out
        progress({**info, **spread})

    return report


def _fusable_parts(task: TaskConfig, shares: list[_Loaded], live: list[int]) -> list[list[int]]:
    """The live shares grouped into what one stack can train: all of them, or (SWD: its
    penalty follows one mask; or cycles of different lengths) one share at a time."""
    if len(live) <= 1:
        return [live] if live else []
    lengths = {cycle_steps(task, shares[k].data) for k in live}
    if swd.is_swd(task.pruning) or len(lengths) > 1:
        return [[k] for k in live]
    return [live]


def _for_member(progress: Progress | None) -> Progress | None:
    """train_run's report of one member as a round's: train_loss and val_acc lists of one."""
    if progress is None:
        return None

    def report(info: dict[str, Any]) -> None:
        progress({**info, "train_loss": [info["train_loss"]], "val_acc": [info["val_acc"]]})

    return report


class _FusedEpochs:
    """The shares' members as one stack (none with a diverged parent): their side of the shared
    epoch loop (silo.epoch_loop), and their results, each what train_run returns for that run."""

    def __init__(self, task: TaskConfig, shares: list[_Loaded], *, cycle: int, device: torch.device,
                 progress: Progress | None, t_start: float, execution: ExecutionConfig | None,
                 compiled: CompileCache | None):
        self.task, self.shares, self.cycle, self.device = task, shares, cycle, device
        self.progress, self.t_start = progress, t_start
        self.starts = [start_state(task, s.data, s.seed, cycle, s.parent, device) for s in shares]
        self.owner = [k for k, s in enumerate(shares) for _ in s.max_lrs]  # member -> its share
        self.max_lrs = [lr for s in shares for lr in s.max_lrs]
        self.count = len(self.max_lrs)
        self.model = self.starts[0][0]
        check_fusable(self.model)
        self.accel = Accel.for_run(task.precision, execution, self.model, device, compiled, fused=True)
        masks = [start[1] for start in self.starts]
        self.members = FusedStack([self.starts[k][0] for k in self.owner], task, [masks[k] for k in self.owner],
                                  self.accel, owner=self.owner if len(shares) > 1 else None)
        self.masks_cpu = [m.to("cpu") for m in masks]
        spe, self.total_steps = cycle_steps(task, shares[0].data)
        self.members.decay = swd.selective_decay(task.pruning, task.optimizer.weight_decay, masks[0], cycle=cycle,
                                                 total_steps=self.total_steps)
        self.dtype = next(iter(self.members.params.values())).dtype
        self.lr_table = _lr_table(task, self.max_lrs, self.total_steps, spe, self.dtype, device)
        self.gens = [order_generator(s.seed, cycle) for s in shares]
        self.capture_at = rewind_capture_step(task, cycle)
        self.rewinds: list[StateDict | None] = [self.starts[k][2] for k in self.owner]
        self.results: list[RunResult | None] = [None] * self.count
        self.alive = list(range(self.count))  # members still training, by their place in max_lrs
        self.slots = list(range(self.count))  # their slots in the stack
        self.curves: list[list[CurvePoint]] = [[] for _ in range(self.count)]  # silo.curves, one per member
        self.losses = LossSums(device, (self.count,), self.dtype)

    def state_of(self, i: int, slot: int, diverged: bool) -> RunState:
        """Member i, at `slot` of the stack, as the RunState train_run would leave for it."""
        weights = self.members.state(slot)
        weights, cut_mask = swd.end_of_cycle_state(weights, self.masks_cpu[self.owner[i]], self.task.pruning,
                                                   cycle=self.cycle)
        # As train_run: a dense run that never reached step K keeps its last weights.
        rewind = weights if self.capture_at is not None and self.rewinds[i] is None else self.rewinds[i]
        return RunState(weights, cut_mask, rewind, diverged=diverged)

    # -- the shared epoch loop's side (silo.epoch_loop.EpochSteps)

    def training(self) -> bool:
        return bool(self.alive)

    def epoch_batches(self) -> Iterator[tuple[tuple[Tensor, Tensor], ...]]:
        """Per step, one batch of each share, from its own seed's order."""
        return zip(*[s.data.train_batches(self.task.batch_size, gen, augment=self.task.data.augment)
                     for s, gen in zip(self.shares, self.gens)])

    def capture(self) -> None:
        for i, slot in zip(self.alive, self.slots):
            self.rewinds[i] = self.members.state(slot)

    def step(self, batch: tuple[tuple[Tensor, Tensor], ...], step: int) -> Tensor:
        try:
            if step == 0:
                self.members.check_precision(list(batch))
            return self.members.train_step(list(batch), self.lr_table[step])
        except Exception as exc:  # torch.func could not run this model (a foreign one)
            if step or isinstance(exc, (torch.OutOfMemoryError, FusionUnsupported)):
                raise
            raise FusionUnsupported(cannot_fuse(self.model, exc)) from exc

    def judge(self, finite: Tensor, step: int) -> None:
        """Members caught diverging get train_run's result for such a run and leave the stack."""
        flags = finite.tolist()
        dead = [j for j, slot in enumerate(self.slots) if not flags[slot]]
        if not dead:
            return
        for j in dead:
            i, s = self.alive[j], self.shares[self.owner[self.alive[j]]]
            result = diverged_result(self.task, s.data, s.seed, self.cycle, self.max_lrs[i],
                                     self.state_of(i, self.slots[j], True), self.t_start, steps=step)
            self.results[i] = replace(result, metrics=replace(result.metrics, curve=self.curves[i]))
        staying = [j for j in range(len(self.alive)) if j not in dead]
        self.alive = [self.alive[j] for j in staying]
        if self.alive:
            self.slots, self.lr_table = self.members.retire([self.slots[j] for j in dead],
                                                            [self.slots[j] for j in staying], self.lr_table,
                                                            self.losses)

    def end_epoch(self, step: int, epoch_loss: Tensor) -> None:
        by_slot = epoch_loss.tolist()
        losses = [by_slot[s] for s in self.slots]
        _epoch_points(self.task, self.shares, self.owner, self.members, self.curves, self.alive, self.slots,
                      losses, step, self.total_steps, self.device)
        if self.progress is not None:
            self.progress({"cycle": self.cycle, "step": step, "total_steps": self.total_steps,
                           "epoch": self.curves[self.alive[0]][-1]["epoch"],
                           "train_loss": _by_member(losses, self.alive, self.count),
                           "val_acc": [c[-1]["val_acc"] if i in self.alive else None
                                       for i, c in enumerate(self.curves)]})

    # -- after the loop

    def finish(self, steps: int, train_s: float) -> list[list[RunResult]]:
        """The members still alive evaluated as train_run evaluates a run; per share, its results."""
        epoch_loss = self.losses.epoch_mean()
        for i, slot in zip(self.alive, self.slots):
            s, start_model = self.shares[self.owner[i]], self.starts[self.owner[i]][0]
            state = self.state_of(i, slot, diverged=False)
            start_model.load_state_dict(state.weights)  # evaluated through the same code as a lone run
            self.results[i] = finish_run(
                self.task, s.data, start_model, state, seed=s.seed, cycle=self.cycle, max_lr=self.max_lrs[i],
                steps=steps, train_loss=epoch_loss[slot], t_start=self.t_start, train_s=train_s / self.count,
                curve=self.curves[i],
            )
        wall_share = (time.perf_counter() - self.t_start) / self.count
        flat = [replace(r, metrics=replace(r.metrics, wall_s=wall_share)) for r in self.results if r is not None]
        assert len(flat) == self.count  # every member either diverged (judge) or finished here
        offsets = _offsets(self.shares)
        return [flat[a:b] for a, b in zip(offsets, offsets[1:])]


def _train_fused(
    task: TaskConfig, shares: list[_Loaded], *, cycle: int, device: torch.device, progress: Progress | None,
    t_start: float, execution: ExecutionConfig | None, compiled: CompileCache | None,
) -> list[list[RunResult]]:
    """The shares' members as one stack (none with a diverged parent); per share, its results."""
    fused = _FusedEpochs(task, shares, cycle=cycle, device=device, progress=progress, t_start=t_start,
                         execution=execution, compiled=compiled)
    t_train = time.perf_counter()
    fused.model.train()
    fused.accel.set_backends()  # cuDNN autotuning (silo.accel)
    steps = train_epochs(fused, fused.losses, fused.total_steps, fused.capture_at)
    return fused.finish(steps, time.perf_counter() - t_train)


def _epoch_points(task: TaskConfig, shares: list[_Loaded], owner: list[int], members: FusedStack,
                  member_curves: list[list[CurvePoint]], alive: list[int], slots: list[int], epoch_losses: list[float],
                  step: int, total_steps: int, device: torch.device) -> None:
    """Each member's learning-curve point of the epoch ending at `step`, as train_run takes it:
    its val accuracy on its own seed's validation split."""
    epoch = len(member_curves[alive[0]]) + 1
    data = shares[0].data
    accs: list[float | None] = [None] * len(alive)
    if curves.eval_due(task.eval_every, epoch, step, total_steps, num_train=data.num_train, num_val=data.num_val):
        for k, s in enumerate(shares):
            mine = [j for j, i in enumerate(alive) if owner[i] == k]
            if not mine:
                continue
            got = curves.without_rng(partial(members.val_acc, s.data.eval_batches("val", task.eval_batch_size),
                                             [slots[j] for j in mine]), device)
            for j, acc in zip(mine, got):
                accs[j] = acc
    for j, i in enumerate(alive):
        member_curves[i].append(curves.point(epoch, step, epoch_losses[j], accs[j]))


def _lr_table(
    task: TaskConfig, max_lrs: list[float], total_steps: int, spe: int, dtype: torch.dtype, device: torch.device,
) -> Tensor:
    """lr[t, g] = max_lr[g] * m(t) in Python floats, exactly as LambdaLR sets each run's lr."""
    multiplier = shape_multiplier(task.shape, total_steps, spe)
    return torch.tensor([[lr * multiplier(t) for lr in max_lrs] for t in range(total_steps)],
                        dtype=dtype, device=device)


def _by_member(values: list[float], alive: list[int], count: int) -> list[float | None]:
    """Values of the members in the stack, placed at their original positions (None elsewhere)."""
    out: list[float | None] = [None] * count
    for j, i in enumerate(alive):
        out[i] = values[j]
    return out
