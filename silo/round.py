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
GradScaler does. The stack and its step (compiled whole where it can be) are silo.fused's.

Time: a fused member's `wall_s` and training time are the round's divided by its member
count (its share), so summing `wall_s` over runs still gives the time spent.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import partial
from typing import Literal

import torch
from torch import Tensor, nn

from silo import curves
from silo.accel import Accel, CompileCache, ExecutionConfig, check_precision
from silo.config import TaskConfig
from silo.data import DataCache, Splits, load_data
from silo.fused import FusedStack, FusionUnsupported
from silo.pruning import Mask, swd
from silo.schedules import shape_multiplier
from silo.train import (
    LossSums,
    RunResult,
    RunState,
    StateDict,
    check_max_lr,
    cycle_steps,
    diverged_result,
    finish_run,
    order_generator,
    resolve_device,
    rewind_capture_step,
    start_state,
    train_run,
)

__all__ = ["MODES", "FusionUnsupported", "Mode", "Share", "check_fusable", "check_fusable_on", "train_round",
           "train_shares"]

Mode = Literal["fused", "sequential"]
MODES: tuple[str, ...] = ("fused", "sequential")

# Modules whose forward draws random numbers: vmap would draw once for all members (or
# differently from a lone run), so a fused member would no longer be the run it stands for.
_RANDOM_MODULES: tuple[type[nn.Module], ...] = (nn.modules.dropout._DropoutNd,)


@dataclass
class Share:
    """One seed's share of a round: the values it trains from its parent (None at cycle 0),
    and its data if the caller has it loaded."""

    seed: int
    max_lrs: list[float]
    parent: RunState | None = None
    data: Splits | None = None


def check_fusable(model: nn.Module) -> None:
    """Raise FusionUnsupported if fusing `model` would not reproduce its lone runs."""
    for name, module in model.named_modules():
        if isinstance(module, _RANDOM_MODULES):
            raise FusionUnsupported(
                f"cannot fuse {type(model).__name__}: module {name!r} ({type(module).__name__}) "
                "draws random numbers; train this round with mode='sequential'"
            )
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.momentum is None:
            # A cumulative average reads num_batches_tracked as a Python number, which a
            # stacked buffer under vmap cannot give.
            raise FusionUnsupported(
                f"cannot fuse {type(model).__name__}: BatchNorm {name!r} has momentum=None; "
                "train this round with mode='sequential'"
            )


def _cannot_fuse(model: nn.Module, exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"torch.func cannot run {type(model).__name__} fused ({type(exc).__name__}: {first[:200]})"


def check_fusable_on(model: nn.Module, task: TaskConfig, xb: Tensor, yb: Tensor) -> None:
    """check_fusable, then one fused step of two copies of `model` on a batch (learning rate
    0, on copies): FusionUnsupported for what vmap cannot run (in-place ops on inputs, data-
    dependent control flow, .item() in forward), and for a bf16 task the fused bf16 forward's
    check (`FusedStack.check_precision`). What the driver asks of a foreign model."""
    check_fusable(model)
    fp32 = Accel.for_run("fp32", None, model, xb.device, fused=True)
    members = FusedStack.copies(copy.deepcopy(model), 2, task, Mask({}), fp32)
    try:  # the step the round will run, on copies (learning rate 0)
        members.train_step([(xb, yb)], torch.zeros(2, dtype=next(iter(members.params.values())).dtype))
    except Exception as exc:
        raise FusionUnsupported(_cannot_fuse(model, exc)) from exc
    if task.precision == "bf16":  # the casts of a fused bf16 step reach every matrix product
        bf16 = Accel.for_run("bf16", None, model, xb.device, fused=True)
        try:
            FusedStack.copies(copy.deepcopy(model), 2, task, Mask({}), bf16).check_precision([(xb, yb)])
        except FusionUnsupported:
            raise
        except Exception as exc:
            raise FusionUnsupported(_cannot_fuse(model, exc)) from exc


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
    progress: Callable[[dict], None] | None = None,
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
    progress: Callable[[dict], None] | None = None,
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
    shares = [replace(s, max_lrs=list(s.max_lrs), data=s.data if s.data is not None else
                      load_data(task.data, seed=s.seed, device=device, cache=cache)) for s in shares]
    offsets = _offsets(shares)
    count = offsets[-1]

    common = dict(cycle=cycle, device=device, execution=execution, compiled=compiled)
    if mode == "sequential":
        return [[train_run(task, seed=s.seed, max_lr=lr, parent=s.parent, data=s.data,
                           progress=_for_member(_spread_parts(progress, [first + i], [1], count)), **common)
                 for i, lr in enumerate(s.max_lrs)] for s, first in zip(shares, offsets)]
    out: list[list[RunResult] | None] = [None] * len(shares)
    live = []
    for k, s in enumerate(shares):
        if s.parent is not None and s.parent.diverged:
            out[k] = [diverged_result(task, s.data, s.seed, cycle, lr, s.parent, t_start, steps=0)
                      for lr in s.max_lrs]
        else:
            live.append(k)
    for part in _fusable_parts(task, shares, live):
        spread = _spread_parts(progress, [offsets[k] for k in part], [len(shares[k].max_lrs) for k in part], count)
        for k, results in zip(part, _train_fused(task, [shares[k] for k in part], progress=spread, t_start=t_start,
                                                 **common)):
            out[k] = results
    return out  # type: ignore[return-value]


def _offsets(shares: list[Share]) -> list[int]:
    """Where each share's members start in the flat member order, then the member count."""
    offsets = [0]
    for s in shares:
        offsets.append(offsets[-1] + len(s.max_lrs))
    return offsets


def _spread_parts(progress, firsts: list[int], sizes: list[int], count: int):
    """A fused part's report (its shares' members one after another) placed in the whole's lists."""
    if progress is None:
        return None

    def report(info: dict) -> None:
        spread = {}
        for key in ("train_loss", "val_acc"):
            out: list = [None] * count
            at = 0
            for first, size in zip(firsts, sizes):
                out[first:first + size] = info[key][at:at + size]
                at += size
            spread[key] = out
        progress({**info, **spread})

    return report


def _fusable_parts(task: TaskConfig, shares: list[Share], live: list[int]) -> list[list[int]]:
    """The live shares grouped into what one stack can train: all of them, or (SWD: its
    penalty follows one mask; or cycles of different lengths) one share at a time."""
    if len(live) <= 1:
        return [live] if live else []
    lengths = {cycle_steps(task, shares[k].data) for k in live}
    if swd.is_swd(task.pruning) or len(lengths) > 1:
        return [[k] for k in live]
    return [live]


def _for_member(progress: Callable[[dict], None] | None) -> Callable[[dict], None] | None:
    """train_run's report of one member as a round's: train_loss and val_acc lists of one."""
    if progress is None:
        return None

    def report(info: dict) -> None:
        progress({**info, "train_loss": [info["train_loss"]], "val_acc": [info["val_acc"]]})

    return report


def _train_fused(
    task: TaskConfig, shares: list[Share], *, cycle: int, device: torch.device, progress, t_start: float,
    execution: ExecutionConfig | None, compiled: CompileCache | None,
) -> list[list[RunResult]]:
    """The shares' members as one stack (none with a diverged parent); per share, its results."""
    starts = [start_state(task, s.data, s.seed, cycle, s.parent, device) for s in shares]
    owner = [k for k, s in enumerate(shares) for _ in s.max_lrs]
    max_lrs = [lr for s in shares for lr in s.max_lrs]
    count = len(max_lrs)
    model = starts[0][0]
    check_fusable(model)
    accel = Accel.for_run(task.precision, execution, model, device, compiled, fused=True)
    masks = [start[1] for start in starts]
    members = FusedStack([starts[k][0] for k in owner], task, [masks[k] for k in owner], accel,
                       owner=owner if len(shares) > 1 else None)
    masks_cpu = [m.to("cpu") for m in masks]
    data = shares[0].data
    spe, total_steps = cycle_steps(task, data)
    members.decay = swd.selective_decay(task.pruning, task.optimizer.weight_decay, masks[0], cycle=cycle,
                                        total_steps=total_steps)
    dtype = next(iter(members.params.values())).dtype
    lr_table = _lr_table(task, max_lrs, total_steps, spe, dtype, device)
    gens = [order_generator(s.seed, cycle) for s in shares]
    capture_at = rewind_capture_step(task, cycle)
    rewinds: list[StateDict | None] = [starts[k][2] for k in owner]
    results: list[RunResult | None] = [None] * count
    alive = list(range(count))  # members still training, by their place in max_lrs
    slots = list(range(count))  # their slots in the stack

    def state_of(i: int, slot: int, diverged: bool) -> RunState:
        """Member i, at `slot` of the stack, as the RunState train_run would leave for it."""
        weights = members.state(slot)
        weights, cut_mask = swd.end_of_cycle_state(weights, masks_cpu[owner[i]], task.pruning, cycle=cycle)
        # As train_run: a dense run that never reached step K keeps its last weights.
        rewind = weights if capture_at is not None and rewinds[i] is None else rewinds[i]
        return RunState(weights, cut_mask, rewind, diverged=diverged)

    def member_diverged(i: int, slot: int, steps: int) -> RunResult:
        """Member i, caught diverging after `steps`, as train_run returns such a run."""
        s = shares[owner[i]]
        result = diverged_result(task, s.data, s.seed, cycle, max_lrs[i], state_of(i, slot, True), t_start,
                                  steps=steps)
        return replace(result, metrics=replace(result.metrics, curve=member_curves[i]))

    step = 0
    member_curves: list[list[dict]] = [[] for _ in range(count)]  # silo.curves, one per member
    losses = LossSums(device, (count,), dtype)
    t_train = time.perf_counter()
    model.train()
    accel.set_backends()  # cuDNN autotuning (silo.accel)
    while step < total_steps and alive:
        losses.new_epoch()
        epochs = [s.data.train_batches(task.batch_size, gen, augment=task.data.augment)
                  for s, gen in zip(shares, gens)]
        for batches in zip(*epochs):
            if capture_at is not None and step == capture_at:
                for i, slot in zip(alive, slots):
                    rewinds[i] = members.state(slot)
            try:
                if step == 0:
                    members.check_precision(list(batches))
                step_losses = members.train_step(list(batches), lr_table[step])
            except Exception as exc:  # torch.func could not run this model (a foreign one)
                if step or isinstance(exc, (torch.OutOfMemoryError, FusionUnsupported)):
                    raise
                raise FusionUnsupported(_cannot_fuse(model, exc)) from exc
            losses.add(step_losses)
            step += 1
            if losses.check_due(step, total_steps):
                finite = losses.finite().tolist()
                dead = [j for j, slot in enumerate(slots) if not finite[slot]]
                if dead:
                    for j in dead:
                        results[alive[j]] = member_diverged(alive[j], slots[j], step)
                    staying = [j for j in range(len(alive)) if j not in dead]
                    alive = [alive[j] for j in staying]
                    if not alive:
                        break
                    slots, lr_table = members.retire([slots[j] for j in dead], [slots[j] for j in staying],
                                                     lr_table, losses)
                losses.restart_window()
            if step >= total_steps:
                break
        if alive:
            epoch_losses = losses.epoch_mean().tolist()
            _epoch_points(task, shares, owner, members, member_curves, alive, slots,
                          [epoch_losses[s] for s in slots], step, total_steps, device)
        if progress is not None and alive:
            progress({"cycle": cycle, "step": step, "total_steps": total_steps,
                      "epoch": member_curves[alive[0]][-1]["epoch"],
                      "train_loss": _by_member([epoch_losses[s] for s in slots], alive, count),
                      "val_acc": [c[-1]["val_acc"] if i in alive else None for i, c in enumerate(member_curves)]})
    train_s = time.perf_counter() - t_train

    epoch_loss = losses.epoch_mean()
    for i, slot in zip(alive, slots):
        s, (start_model, _, _) = shares[owner[i]], starts[owner[i]]
        state = state_of(i, slot, diverged=False)
        start_model.load_state_dict(state.weights)  # evaluated through the same code as a lone run
        results[i] = finish_run(
            task, s.data, start_model, state, seed=s.seed, cycle=cycle, max_lr=max_lrs[i], steps=step,
            train_loss=epoch_loss[slot], t_start=t_start, train_s=train_s / count, curve=member_curves[i],
        )
    wall_share = (time.perf_counter() - t_start) / count
    flat = [replace(r, metrics=replace(r.metrics, wall_s=wall_share)) for r in results]
    offsets = _offsets(shares)
    return [flat[a:b] for a, b in zip(offsets, offsets[1:])]


def _epoch_points(task: TaskConfig, shares: list[Share], owner: list[int], members: FusedStack,
                  member_curves: list[list[dict]], alive: list[int], slots: list[int], epoch_losses: list[float],
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
