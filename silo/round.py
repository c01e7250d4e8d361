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

Both modes are the same computation: in float64 they agree to rounding (tests/test_round.py
checks 1e-10); in float32 a member trained at a high max_lr can drift from its sequential
twin as between two GPUs. The master dtype follows torch's default dtype when the model is
built and the data's dtype, as in train_run. Under task.precision bf16 or fp16 the fused step
makes autocast's casts itself (silo.fused_precision: autocast does not reach vmap) and fp16
scales each member's loss with its own scale (StackedGradScaler), as its lone run's
GradScaler does. A fused round never runs channels_last (silo.accel: vmap's BatchNorm cannot).

The step: with SGD (the paper's optimizer), fp32 or bf16 and no SWD penalty, one function
does forward, loss, backward (torch.func.grad), the stacked optimizer step and the masks, so
`execution.compile` compiles the whole step into one graph; otherwise the forward and loss
are compiled (their backward with them) and the optimizer runs eagerly.

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
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from silo import curves, fused_precision
from silo.accel import Accel, CompileCache, ExecutionConfig, check_precision
from silo.config import TaskConfig
from silo.data import DataCache, DataSplits, StreamingSplits, load_data
from silo.pruning import Mask, swd
from silo.schedules import shape_multiplier
from silo.stacked_optim import StackedGradScaler, StackedOptimizer
from silo.train import (
    RunResult,
    RunState,
    StateDict,
    _cpu_copy,
    _diverged_result,
    _LossSums,
    _start_state,
    check_max_lr,
    cycle_steps,
    finish_run,
    order_generator,
    resolve_device,
    rewind_capture_step,
    train_run,
)

Mode = Literal["fused", "sequential"]
MODES: tuple[str, ...] = ("fused", "sequential")

# Modules whose forward draws random numbers: vmap would draw once for all members (or
# differently from a lone run), so a fused member would no longer be the run it stands for.
_RANDOM_MODULES: tuple[type[nn.Module], ...] = (nn.modules.dropout._DropoutNd,)


class FusionUnsupported(ValueError):
    """This model cannot be trained fused; train the round with mode="sequential"."""


@dataclass
class Share:
    """One seed's share of a round: the values it trains from its parent (None at cycle 0),
    and its data if the caller has it loaded."""

    seed: int
    max_lrs: list[float]
    parent: RunState | None = None
    data: DataSplits | StreamingSplits | None = None


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
    check (`_Members.check_precision`). What the driver asks of a foreign model."""
    check_fusable(model)
    fp32 = Accel.for_run("fp32", None, model, xb.device, fused=True)
    members = _Members.copies(copy.deepcopy(model), 2, task, Mask({}), fp32)
    try:  # the step the round will run, on copies (learning rate 0)
        members.train_step([(xb, yb)], torch.zeros(2, dtype=next(iter(members.params.values())).dtype))
    except Exception as exc:
        raise FusionUnsupported(_cannot_fuse(model, exc)) from exc
    if task.precision == "bf16":  # the casts of a fused bf16 step reach every matrix product
        bf16 = Accel.for_run("bf16", None, model, xb.device, fused=True)
        try:
            _Members.copies(copy.deepcopy(model), 2, task, Mask({}), bf16).check_precision([(xb, yb)])
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
    data: DataSplits | StreamingSplits | None = None,
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
            out[k] = [_diverged_result(task, s.data, s.seed, cycle, lr, s.parent, t_start, steps=0)
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


def _whole_step(task: TaskConfig, accel: Accel) -> bool:
    """Whether the fused step runs as one function (forward, backward, SGD, masks): SGD, no
    loss scaler (fp16 needs the scaler's skip), no SWD penalty (it keeps a step counter)."""
    return task.optimizer.name == "sgd" and accel.scaler() is None and not swd.is_swd(task.pruning)


class _Members:
    """The stacked state of the members: parameters, buffers, optimizer, masks.

    `owner` (None: one seed) gives each stack slot's share, whose batch it reads; masks are
    then per member, else one mask broadcast over the members."""

    def __init__(self, models: list[nn.Module], task: TaskConfig, masks: list[Mask], accel: Accel,
                 owner: list[int] | None) -> None:
        self.model = models[0]  # the architecture functional_call runs (its own tensors unused)
        self.whole = _whole_step(task, accel)
        params, buffers = stack_module_state([copy.deepcopy(m) for m in models])
        # torch.func.grad differentiates the whole step's parameters itself; in-place updates
        # of tensors that require grad would be refused there.
        self.params: dict[str, Tensor] = {n: p.detach() for n, p in params.items()} if self.whole else params
        self.buffers: dict[str, Tensor] = buffers
        self._check_buffers()
        self.state_keys = list(self.model.state_dict())
        self.optimizer = StackedOptimizer(task.optimizer, len(params))
        if self.whole:
            self.optimizer.init_state(list(self.params.values()))  # one compiled graph from step 1
        self.decay: swd.SelectiveDecay | None = None  # SWD's penalty, per member (set by _train_fused)
        self.owner = None if owner is None else torch.tensor(owner, device=accel.device)
        self.masks = _stacked_masks(masks, self.params, shared=owner is None)
        self.smoothing = task.label_smoothing
        self.accel = accel
        # bf16/fp16: the model the fused step calls, casting as autocast would (silo.fused_precision);
        # evaluation (val_acc, finish_run) uses `model`, in the master dtype, as a lone run's.
        low = accel.autocast_dtype
        self.step_model = self.model if low is None else fused_precision.casting_model(
            self.model, low, accel.device.type)
        lone_scaler = accel.scaler()
        self.scaler = None if lone_scaler is None else StackedGradScaler(len(models), lone_scaler, accel.device)
        model = self.model
        self._logits = vmap(lambda p, b, x: functional_call(model, (p, b), (x,)), in_dims=(0, 0, None))

    @classmethod
    def copies(cls, model: nn.Module, count: int, task: TaskConfig, mask: Mask, accel: Accel) -> _Members:
        """`count` members of one seed, all starting from `model` under one mask."""
        return cls([model] * count, task, [mask] * count, accel, owner=None)

    def batch(self, batches: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor, int | None]:
        """The step's input: one seed's batch shared by every member (in_dims None), or each
        member its own seed's batch, gathered (G, B, ...) (in_dims 0)."""
        if self.owner is None:
            (xb, yb), = batches
            return xb.contiguous(), yb, None  # never channels_last under vmap (silo.accel)
        xs, ys = torch.stack([b[0] for b in batches]), torch.stack([b[1] for b in batches])
        return xs.index_select(0, self.owner), ys.index_select(0, self.owner), 0

    @torch.no_grad()
    def val_acc(self, batches: Iterable[tuple[Tensor, Tensor]], slots: list[int] | None = None) -> list[float]:
        """The top-1 accuracy over the batches of the members at `slots` (all: None), in eval
        mode, as train_run's evaluate_batches counts it; the model is left in train mode."""
        params, buffers = self.params, self.buffers
        if slots is not None:
            index = torch.tensor(slots, device=self.accel.device)
            params = {n: p.index_select(0, index) for n, p in params.items()}
            buffers = {n: b.index_select(0, index) for n, b in buffers.items()}
        self.model.eval()
        correct, total = None, 0
        for xb, yb in batches:
            hits = (self._logits(params, buffers, xb).argmax(-1) == yb).sum(1)
            correct = hits if correct is None else correct + hits
            total += len(yb)
        self.model.train()
        if correct is None:
            return [0.0] * next(iter(params.values())).shape[0]
        return [c / max(1, total) for c in correct.tolist()]

    def _check_buffers(self) -> None:
        # BatchNorm updates its running stats in place; on a non-contiguous stacked buffer
        # vmap would write into a copy and the stats would silently stop updating.
        for name, b in self.buffers.items():
            if not b.is_contiguous():
                raise AssertionError(f"stacked buffer {name!r} is not contiguous")

    def train_step(self, batches: list[tuple[Tensor, Tensor]], lr: Tensor) -> Tensor:
        """One optimizer step of every member on its seed's batch; returns their losses, (G,)."""
        xb, yb, in_batch = self.batch(batches)
        if self.whole:
            return self.accel.call(fused_sgd_step, (self.step_model, self.params, self.buffers, self.optimizer,
                                                    self.masks, xb, yb, lr, self.smoothing, in_batch),
                                   _as_is, self._tensors).detach()
        names = list(self.params)
        plist = [self.params[n] for n in names]
        grads: list = []

        def backward(losses: Tensor) -> Tensor:
            # The members share no parameter, so d(sum)/d(member g) is member g's own gradient;
            # SWD's penalty (per member) joins eagerly, outside the compiled forward.
            if self.scaler is None:
                total = losses.sum() if self.decay is None else losses.sum() + self.decay.of_members(self.params)
            else:  # fp16: each member's objective times its own scale, as its GradScaler would
                objective = losses if self.decay is None else losses + self.decay.each_of_members(self.params)
                total = (objective * self.scaler.scale.to(objective.dtype)).sum()
            grads[:] = torch.autograd.grad(total, plist, allow_unused=True)
            return losses

        args = (self.step_model, self.params, self.buffers, xb, yb, self.smoothing, in_batch)
        losses = self.accel.call(fused_losses, args, backward, lambda: list(self.buffers.values()))
        with torch.no_grad():
            skip = None
            if self.scaler is not None:  # members whose gradients overflowed float16 skip this step
                skip = self.scaler.unscale(grads)
                self.scaler.update(skip)
            self.optimizer.step(plist, grads, lr, skip)
            _apply_masks(self.params, self.masks)
        return losses.detach()

    def _tensors(self) -> list[Tensor]:
        """What a failed first compiled whole step may have changed: restored before the eager retry."""
        return [*self.params.values(), *self.buffers.values(), *self.optimizer.tensors()]

    def state(self, j: int) -> StateDict:
        """The state_dict of the member at slot j (keys and order of the model's), on the CPU."""
        stacked = {**self.params, **self.buffers}
        return _cpu_copy({k: stacked[k][j] for k in self.state_keys})

    def retire(self, dead: list[int], kept: list[int], lr_table: Tensor, losses: _LossSums) -> tuple[list[int], Tensor]:
        """The members at slots `dead` leave the training; `kept`: the slots of those that stay.
        Returns the kept members' new slots and the lr table.

        Eager, the stack shrinks to the kept members. Compiled, it keeps its size: a new G
        would compile the step again (tens of seconds on a GPU, at every divergence), so each
        dead slot takes a copy of a live member's state and trains it at learning rate 0."""
        if self.accel.compile is None:
            index = torch.tensor(kept, device=lr_table.device)
            self.params = {n: p.detach()[index].requires_grad_(not self.whole) for n, p in self.params.items()}
            self.buffers = {n: b[index] for n, b in self.buffers.items()}
            self._check_buffers()
            self.optimizer.keep(index)
            if self.scaler is not None:
                self.scaler.keep(index)
            if self.owner is not None:
                self.owner = self.owner[index]
            self.masks = {n: m if m.shape[0] == 1 else m[index] for n, m in self.masks.items()}
            losses.keep(index)
            return list(range(len(kept))), lr_table[:, index]
        donor = kept[0]
        with torch.no_grad():
            for t in [*self.params.values(), *self.buffers.values()]:
                t[dead] = t[donor].clone()
            self.optimizer.copy_member(donor, dead)
            if self.scaler is not None:
                self.scaler.copy_member(donor, dead)
        lr_table = lr_table.clone()
        lr_table[:, dead] = 0
        return kept, lr_table

    def check_precision(self, batches: list[tuple[Tensor, Tensor]]) -> None:
        """bf16/fp16: FusionUnsupported unless every convolution and matrix product of the
        fused forward runs in the low dtype (one forward on the batch; no state changes)."""
        low = self.accel.autocast_dtype
        if low is None:
            return
        xb, yb, in_batch = self.batch(batches)
        buffers = {n: b.clone() for n, b in self.buffers.items()}  # BatchNorm's stats stay untouched
        with torch.no_grad():
            why = fused_precision.check_matrix_ops(
                lambda: fused_losses(self.step_model, self.params, buffers, xb, yb, self.smoothing, in_batch, low),
                low)
        if why is not None:
            raise FusionUnsupported(f"cannot fuse {type(self.model).__name__} in {self.accel.precision}: {why}; "
                                    "train this round with mode='sequential'")


def _as_is(losses: Tensor) -> Tensor:
    return losses


def _stacked_masks(masks: list[Mask], params: dict[str, Tensor], *, shared: bool) -> dict[str, Tensor]:
    """Each masked parameter's mask over the stack: one broadcast (1, ...) mask when the
    members share it, else (G, ...). Tensors kept whole by every mask need no work (MaskedStep)."""
    names = [n for n in masks[0].names() if any(not bool(m[n].all()) for m in masks)]
    out = {}
    for n in names:
        p = params[n]
        chosen = masks[:1] if shared else masks
        out[n] = torch.stack([m[n].to(device=p.device, dtype=p.dtype) for m in chosen])
    return out


def _apply_masks(params: dict[str, Tensor], masks: dict[str, Tensor]) -> None:
    for n, m in masks.items():
        params[n].mul_(m)


def fused_losses(model: nn.Module, params: dict, buffers: dict, xb: Tensor, yb: Tensor, label_smoothing: float,
                 in_batch: int | None, dtype: torch.dtype | None) -> Tensor:
    """Every member's loss on the batch, (G,). Module level, the model an argument: compiled
    once per process (silo.accel). `in_batch`: None, one batch shared by every member (one
    input feeds G grouped convolutions); 0, each member its own batch along dim 0.
    `dtype` (bf16/fp16; None: fp32): `model` is then silo.fused_precision's casting model,
    and Conv/Linear weights are cast here, where the lone run's autocast would cast them; the
    loss reads float32 logits."""
    if dtype is not None:
        params = fused_precision.cast_params(model, params, dtype)

    def member_loss(p: dict, b: dict, x: Tensor, y: Tensor) -> Tensor:
        logits = functional_call(model, (p, b), (x,))
        if dtype is not None:
            logits = fused_precision.loss_logits(logits)
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing)

    return vmap(member_loss, in_dims=(0, 0, in_batch, in_batch))(params, buffers, xb, yb)


def fused_sgd_step(model: nn.Module, params: dict, buffers: dict, optimizer: StackedOptimizer, masks: dict,
                   xb: Tensor, yb: Tensor, lr: Tensor, label_smoothing: float, in_batch: int | None,
                   dtype: torch.dtype | None) -> Tensor:
    """One whole step of every member: forward, loss, backward (torch.func.grad), the stacked
    SGD update and the masks, updating `params`, `buffers` and the optimizer in place; returns
    the losses, (G,). One function, so torch.compile makes it one graph (silo.accel)."""

    def objective(p: dict, b: dict) -> tuple[Tensor, Tensor]:
        # The buffers an argument, not captured: BatchNorm updates them in place, which
        # torch.func.grad allows only on its function's inputs.
        losses = fused_losses(model, p, b, xb, yb, label_smoothing, in_batch, dtype)
        return losses.sum(), losses

    grads, losses = torch.func.grad(objective, has_aux=True)(params, buffers)
    with torch.no_grad():
        optimizer.step(list(params.values()), [grads[n] for n in params], lr)
        _apply_masks(params, masks)
    return losses


def _train_fused(
    task: TaskConfig, shares: list[Share], *, cycle: int, device: torch.device, progress, t_start: float,
    execution: ExecutionConfig | None, compiled: CompileCache | None,
) -> list[list[RunResult]]:
    """The shares' members as one stack (none with a diverged parent); per share, its results."""
    starts = [_start_state(task, s.data, s.seed, cycle, s.parent, device) for s in shares]
    owner = [k for k, s in enumerate(shares) for _ in s.max_lrs]
    max_lrs = [lr for s in shares for lr in s.max_lrs]
    count = len(max_lrs)
    model = starts[0][0]
    check_fusable(model)
    accel = Accel.for_run(task.precision, execution, model, device, compiled, fused=True)
    masks = [start[1] for start in starts]
    members = _Members([starts[k][0] for k in owner], task, [masks[k] for k in owner], accel,
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

    def diverged_result(i: int, slot: int, steps: int) -> RunResult:
        """Member i, caught diverging after `steps`, as train_run returns such a run."""
        s = shares[owner[i]]
        result = _diverged_result(task, s.data, s.seed, cycle, max_lrs[i], state_of(i, slot, True), t_start,
                                  steps=steps)
        return replace(result, metrics=replace(result.metrics, curve=member_curves[i]))

    step = 0
    member_curves: list[list[dict]] = [[] for _ in range(count)]  # silo.curves, one per member
    losses = _LossSums(device, (count,), dtype)
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
                        results[alive[j]] = diverged_result(alive[j], slots[j], step)
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


def _epoch_points(task: TaskConfig, shares: list[Share], owner: list[int], members: _Members,
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
