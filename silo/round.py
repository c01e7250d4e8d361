"""The runs of a round trained together: one (task, seed, cycle, parent), G values of max_lr.

Within an Oracle round the G runs of one seed differ only in max_lr: same parent, same
mask, same rewound weights, same batches in the same order (docs/design.md, "Fused rounds").
`train_round` returns one `RunResult` per max_lr, each what `silo.train.train_run` returns
for that run, in one of two modes:

- ``"fused"``: the G members as one model (torch.func: stacked parameters and BatchNorm
  buffers, `functional_call` under `vmap`, the batch shared), the loss the sum of the
  members' mean losses (so each member's gradient is its own), one `StackedOptimizer` with
  a per-member learning rate, the shared mask applied after each step, divergence judged
  per member. A member that diverges gets the result train_run returns for a diverged run
  (weights at the check that caught it, accuracies at chance) and is dropped from the
  stack: it costs nothing more and touches nothing else. Models it cannot fuse raise
  `FusionUnsupported` before anything trains; catch it and call again with
  ``mode="sequential"``.
- ``"sequential"``: the members one after another through `train_run`, in this process.

Both modes are the same computation: in float64 they agree to rounding (tests/test_round.py
checks 1e-10); in float32 a member trained at a high max_lr can drift from its sequential
twin as between two GPUs. The master dtype follows torch's default dtype when the model is
built and the data's dtype, as in train_run. Under task.precision bf16 or fp16 the fused step
makes autocast's casts itself (silo.fused_precision: autocast does not reach vmap) and fp16
scales each member's loss with its own scale (StackedGradScaler), as its lone run's
GradScaler does.

Time: a fused member's `wall_s` and training time are the round's divided by G (its share),
so summing `wall_s` over runs still gives the time spent.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
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
    """check_fusable, then one fused forward and backward of two copies of `model` on a batch
    (no step): FusionUnsupported for what vmap cannot run (in-place ops on inputs, data-
    dependent control flow, .item() in forward), and for a bf16 task the fused bf16 forward's
    check (`_Members.check_precision`). What the driver asks of a foreign model."""
    check_fusable(model)
    members = _Members(copy.deepcopy(model), 2, task, Mask({}), Accel.for_run("fp32", None, model, xb.device))
    try:
        losses = fused_losses(members.model, members.params, members.buffers, xb, yb, members.smoothing, None)
        torch.autograd.grad(losses.sum(), list(members.params.values()), allow_unused=True)
    except Exception as exc:
        raise FusionUnsupported(_cannot_fuse(model, exc)) from exc
    if task.precision == "bf16":  # the casts of a fused bf16 step reach every matrix product
        bf16 = Accel.for_run("bf16", None, model, xb.device)
        try:
            _Members(copy.deepcopy(model), 2, task, Mask({}), bf16).check_precision(xb, yb)
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
    t_start = time.perf_counter()
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    max_lrs = list(max_lrs)
    if not max_lrs:
        raise ValueError("max_lrs is empty: a round trains at least one run")
    for lr in max_lrs:
        check_max_lr(lr)
    device = resolve_device(task.device) if device is None else torch.device(device)
    check_precision(task.precision, device)
    if data is None:
        data = load_data(task.data, seed=seed, device=device, cache=cache)
    if mode == "sequential":
        return [
            train_run(task, seed=seed, cycle=cycle, max_lr=lr, parent=parent, data=data, device=device,
                      progress=None if progress is None else _for_member(progress, i, len(max_lrs)),
                      execution=execution, compiled=compiled)
            for i, lr in enumerate(max_lrs)
        ]
    if parent is not None and parent.diverged:
        return [_diverged_result(task, data, seed, cycle, lr, parent, t_start, steps=0) for lr in max_lrs]
    return _train_fused(task, data, seed=seed, cycle=cycle, max_lrs=max_lrs, parent=parent,
                        device=device, progress=progress, t_start=t_start, execution=execution,
                        compiled=compiled)


def _for_member(progress: Callable[[dict], None], i: int, count: int) -> Callable[[dict], None]:
    """train_run's report of member i as a round's: train_loss a list over the members."""

    def report(info: dict) -> None:
        losses: list[float | None] = [None] * count
        accs: list[float | None] = [None] * count
        losses[i], accs[i] = info["train_loss"], info["val_acc"]
        progress({**info, "train_loss": losses, "val_acc": accs})

    return report


class _Members:
    """The stacked state of the members still training: parameters, buffers, optimizer."""

    def __init__(self, model: nn.Module, count: int, task: TaskConfig, mask: Mask, accel: Accel) -> None:
        self.model = model
        params, buffers = stack_module_state([copy.deepcopy(model) for _ in range(count)])
        self.params: dict[str, Tensor] = params
        self.buffers: dict[str, Tensor] = buffers
        self._check_buffers()
        self.state_keys = list(model.state_dict())
        self.optimizer = StackedOptimizer(task.optimizer, len(params))
        self.decay: swd.SelectiveDecay | None = None  # SWD's penalty, per member (set by _train_fused)
        # The shared mask, broadcast over members; fully kept tensors need no work (MaskedStep).
        self.masks = {n: m.to(device=params[n].device, dtype=params[n].dtype).unsqueeze(0)
                      for n, m in mask.items() if not bool(m.all())}
        self.smoothing = task.label_smoothing
        self.accel = accel
        # bf16/fp16: the model the fused step calls, casting as autocast would (silo.fused_precision);
        # evaluation (val_acc, finish_run) uses `model`, in the master dtype, as a lone run's.
        low = accel.autocast_dtype
        self.step_model = model if low is None else fused_precision.casting_model(model, low, accel.device.type)
        lone_scaler = accel.scaler()
        self.scaler = None if lone_scaler is None else StackedGradScaler(count, lone_scaler, accel.device)
        self._logits = vmap(lambda p, b, x: functional_call(model, (p, b), (x,)), in_dims=(0, 0, None))

    @torch.no_grad()
    def val_acc(self, batches: Iterable[tuple[Tensor, Tensor]]) -> list[float]:
        """Every member's top-1 accuracy over the batches, in eval mode, as train_run's
        evaluate_batches counts it; the model is left in train mode."""
        self.model.eval()
        correct, total = None, 0
        for xb, yb in batches:
            hits = (self._logits(self.params, self.buffers, xb).argmax(-1) == yb).sum(1)
            correct = hits if correct is None else correct + hits
            total += len(yb)
        self.model.train()
        if correct is None:
            return [0.0] * next(iter(self.params.values())).shape[0]
        return [c / max(1, total) for c in correct.tolist()]

    def _check_buffers(self) -> None:
        # BatchNorm updates its running stats in place; on a non-contiguous stacked buffer
        # vmap would write into a copy and the stats would silently stop updating.
        for name, b in self.buffers.items():
            if not b.is_contiguous():
                raise AssertionError(f"stacked buffer {name!r} is not contiguous")

    def train_step(self, xb: Tensor, yb: Tensor, lr: Tensor) -> Tensor:
        """One optimizer step of every member on the batch; returns their losses, (G,)."""
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

        losses = self.accel.call(fused_losses, (self.step_model, self.params, self.buffers, self.accel.batch(xb),
                                                yb, self.smoothing), backward, lambda: list(self.buffers.values()))
        with torch.no_grad():
            skip = None
            if self.scaler is not None:  # members whose gradients overflowed float16 skip this step
                skip = self.scaler.unscale(grads)
                self.scaler.update(skip)
            self.optimizer.step(plist, grads, lr, skip)
            for n, m in self.masks.items():
                self.params[n].mul_(m)
        return losses.detach()

    def state(self, j: int) -> StateDict:
        """Member j's state_dict (keys and order of the model's), on the CPU."""
        stacked = {**self.params, **self.buffers}
        return _cpu_copy({k: stacked[k][j] for k in self.state_keys})

    def keep(self, index: Tensor) -> None:
        """Keep only the members at `index` (positions in the current stack)."""
        self.params = {n: p.detach()[index].requires_grad_(True) for n, p in self.params.items()}
        self.buffers = {n: b[index] for n, b in self.buffers.items()}
        self._check_buffers()
        self.optimizer.keep(index)
        if self.scaler is not None:
            self.scaler.keep(index)

    def check_precision(self, xb: Tensor, yb: Tensor) -> None:
        """bf16/fp16: FusionUnsupported unless every convolution and matrix product of the
        fused forward runs in the low dtype (one forward on the batch; no state changes)."""
        low = self.accel.autocast_dtype
        if low is None:
            return
        buffers = {n: b.clone() for n, b in self.buffers.items()}  # BatchNorm's stats stay untouched
        with torch.no_grad():
            why = fused_precision.check_matrix_ops(
                lambda: fused_losses(self.step_model, self.params, buffers, self.accel.batch(xb), yb,
                                     self.smoothing, low), low)
        if why is not None:
            raise FusionUnsupported(f"cannot fuse {type(self.model).__name__} in {self.accel.precision}: {why}; "
                                    "train this round with mode='sequential'")


def fused_losses(model: nn.Module, params: dict, buffers: dict, xb: Tensor, yb: Tensor, label_smoothing: float,
                 dtype: torch.dtype | None) -> Tensor:
    """Every member's loss on the batch, (G,). Module level, the model an argument: compiled
    once per process (silo.accel). `dtype` (bf16/fp16; None: fp32): `model` is then
    silo.fused_precision's casting model, and Conv/Linear weights are cast here, where the
    lone run's autocast would cast them; the loss reads float32 logits."""
    if dtype is not None:
        params = fused_precision.cast_params(model, params, dtype)

    def member_loss(p: dict, b: dict, x: Tensor, y: Tensor) -> Tensor:
        logits = functional_call(model, (p, b), (x,))
        if dtype is not None:
            logits = fused_precision.loss_logits(logits)
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing)

    # The batch is shared (in_dims None): one input feeds G grouped convolutions.
    return vmap(member_loss, in_dims=(0, 0, None, None))(params, buffers, xb, yb)


def _train_fused(
    task: TaskConfig, data, *, seed: int, cycle: int, max_lrs: list[float], parent: RunState | None,
    device: torch.device, progress, t_start: float, execution: ExecutionConfig | None,
    compiled: CompileCache | None,
) -> list[RunResult]:
    count = len(max_lrs)
    model, mask, rewind_weights = _start_state(task, data, seed, cycle, parent, device)
    check_fusable(model)
    accel = Accel.for_run(task.precision, execution, model, device, compiled)
    members = _Members(model, count, task, mask, accel)
    mask_cpu = mask.to("cpu")
    spe, total_steps = cycle_steps(task, data)
    members.decay = swd.selective_decay(task.pruning, task.optimizer.weight_decay, mask, cycle=cycle,
                                        total_steps=total_steps)
    dtype = next(iter(members.params.values())).dtype
    lr_table = _lr_table(task, max_lrs, total_steps, spe, dtype, device)
    gen = order_generator(seed, cycle)
    capture_at = rewind_capture_step(task, cycle)
    rewinds: list[StateDict | None] = [rewind_weights] * count
    results: list[RunResult | None] = [None] * count
    alive = list(range(count))  # original positions of the members still in the stack

    def state_of(j: int, diverged: bool) -> RunState:
        """Member j of the stack as the RunState train_run would leave for it."""
        i, weights = alive[j], members.state(j)
        weights, cut_mask = swd.end_of_cycle_state(weights, mask_cpu, task.pruning, cycle=cycle)  # SWD's cut
        # As train_run: a dense run that never reached step K keeps its last weights.
        rewind = weights if capture_at is not None and rewinds[i] is None else rewinds[i]
        return RunState(weights, cut_mask, rewind, diverged=diverged)

    def diverged_result(j: int, steps: int) -> RunResult:
        """Member j of the stack, caught diverging after `steps`, as train_run returns such a run."""
        state = state_of(j, diverged=True)
        result = _diverged_result(task, data, seed, cycle, max_lrs[alive[j]], state, t_start, steps=steps)
        return replace(result, metrics=replace(result.metrics, curve=member_curves[alive[j]]))

    step = 0
    member_curves: list[list[dict]] = [[] for _ in range(count)]  # silo.curves, one per member
    losses = _LossSums(device, (count,), dtype)
    t_train = time.perf_counter()
    model.train()
    accel.set_backends()  # cuDNN autotuning (silo.accel)
    while step < total_steps and alive:
        losses.new_epoch()
        for xb, yb in data.train_batches(task.batch_size, gen, augment=task.data.augment):
            if capture_at is not None and step == capture_at:
                for j, i in enumerate(alive):
                    rewinds[i] = members.state(j)
            try:
                if step == 0:
                    members.check_precision(xb, yb)
                step_losses = members.train_step(xb, yb, lr_table[step])
            except Exception as exc:  # torch.func could not run this model (a foreign one)
                if step or isinstance(exc, (torch.OutOfMemoryError, FusionUnsupported)):
                    raise
                raise FusionUnsupported(_cannot_fuse(model, exc)) from exc
            losses.add(step_losses)
            step += 1
            if losses.check_due(step, total_steps):
                finite = losses.finite()
                if not bool(finite.all()):
                    for j in (~finite).nonzero().flatten().tolist():
                        results[alive[j]] = diverged_result(j, step)
                    alive, lr_table = _keep_finite(finite, alive, members, losses, lr_table)
                    if not alive:
                        break
                losses.restart_window()
            if step >= total_steps:
                break
        if alive:
            epoch_losses = losses.epoch_mean().tolist()
            _epoch_points(task, data, members, member_curves, alive, epoch_losses, step, total_steps, device)
        if progress is not None and alive:
            progress({"cycle": cycle, "step": step, "total_steps": total_steps,
                      "epoch": member_curves[alive[0]][-1]["epoch"],
                      "train_loss": _by_member(epoch_losses, alive, count),
                      "val_acc": [c[-1]["val_acc"] if i in alive else None for i, c in enumerate(member_curves)]})
    train_s = time.perf_counter() - t_train

    epoch_loss = losses.epoch_mean()
    for j, i in enumerate(alive):
        state = state_of(j, diverged=False)
        model.load_state_dict(state.weights)  # evaluated through the same code as a lone run
        results[i] = finish_run(
            task, data, model, state, seed=seed, cycle=cycle, max_lr=max_lrs[i], steps=step,
            train_loss=epoch_loss[j], t_start=t_start, train_s=train_s / count, curve=member_curves[i],
        )
    wall_share = (time.perf_counter() - t_start) / count
    return [replace(r, metrics=replace(r.metrics, wall_s=wall_share)) for r in results]


def _epoch_points(task: TaskConfig, data, members: _Members, member_curves: list[list[dict]], alive: list[int],
                  epoch_losses: list[float], step: int, total_steps: int, device: torch.device) -> None:
    """Each member's learning-curve point of the epoch ending at `step`, as train_run takes it."""
    epoch = len(member_curves[alive[0]]) + 1
    accs: list[float | None] = [None] * len(alive)
    if curves.eval_due(task.eval_every, epoch, step, total_steps, num_train=data.num_train, num_val=data.num_val):
        accs = curves.without_rng(lambda: members.val_acc(data.eval_batches("val", task.eval_batch_size)), device)
    for j, i in enumerate(alive):
        member_curves[i].append(curves.point(epoch, step, epoch_losses[j], accs[j]))


def _lr_table(
    task: TaskConfig, max_lrs: list[float], total_steps: int, spe: int, dtype: torch.dtype, device: torch.device,
) -> Tensor:
    """lr[t, g] = max_lr[g] * m(t) in Python floats, exactly as LambdaLR sets each run's lr."""
    multiplier = shape_multiplier(task.shape, total_steps, spe)
    return torch.tensor([[lr * multiplier(t) for lr in max_lrs] for t in range(total_steps)],
                        dtype=dtype, device=device)


def _keep_finite(
    finite: Tensor, alive: list[int], members: _Members, losses: _LossSums, lr_table: Tensor,
) -> tuple[list[int], Tensor]:
    """Drop the members whose window loss is not finite from the stack and the loss sums;
    returns the original positions and the lr table of the members kept."""
    index = finite.nonzero().flatten()
    members.keep(index)
    losses.keep(index)
    return [alive[j] for j in index.tolist()], lr_table[:, index]


def _by_member(values: list[float], alive: list[int], count: int) -> list[float | None]:
    """Values of the members in the stack, placed at their original positions (None elsewhere)."""
    out: list[float | None] = [None] * count
    for j, i in enumerate(alive):
        out[i] = values[j]
    return out
