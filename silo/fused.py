"""The fused stack: the members of a round as one model, and the step that trains them.

G runs that differ in max_lr (and, seeds fused, in their seed's batches, parent and mask)
are held as stacked tensors (torch.func.stack_module_state: parameters and BatchNorm
buffers of shape (G, ...)), run with `functional_call` under `vmap`, and stepped by one
`StackedOptimizer` with a per-member learning rate; the masks are applied after each step.
silo.round drives a stack through a cycle (batches, divergence, curves, results); this module
is the stack and its step only.

The step: with SGD (the paper's optimizer), fp32 or bf16 and no SWD penalty, one function
(`fused_sgd_step`) does forward, loss, backward (torch.func.grad), the stacked optimizer
step and the masks, so `execution.compile` compiles the whole step into one graph;
otherwise the forward and loss are compiled (their backward with them) and the optimizer
runs eagerly. A stack never runs channels_last (silo.accel: vmap's BatchNorm cannot on CUDA).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from silo import fused_precision
from silo.accel import Accel
from silo.config import TaskConfig
from silo.epoch_loop import LossSums
from silo.pruning import Mask, swd
from silo.stacked_optim import StackedGradScaler, StackedOptimizer
from silo.train import StateDict, cpu_copy


class FusionUnsupported(ValueError):
    """This model cannot be trained fused; train the round with mode="sequential"."""


# Modules whose forward draws random numbers: vmap would draw once for all members (or
# differently from a lone run), so a fused member would no longer be the run it stands for.
_RANDOM_MODULES: tuple[type[nn.Module], ...] = (nn.modules.dropout._DropoutNd,)


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


def cannot_fuse(model: nn.Module, exc: BaseException) -> str:
    """FusionUnsupported's message for an error torch.func raised running `model` fused."""
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
        raise FusionUnsupported(cannot_fuse(model, exc)) from exc
    if task.precision == "bf16":  # the casts of a fused bf16 step reach every matrix product
        bf16 = Accel.for_run("bf16", None, model, xb.device, fused=True)
        try:
            FusedStack.copies(copy.deepcopy(model), 2, task, Mask({}), bf16).check_precision([(xb, yb)])
        except FusionUnsupported:
            raise
        except Exception as exc:
            raise FusionUnsupported(cannot_fuse(model, exc)) from exc


def whole_step(task: TaskConfig, accel: Accel) -> bool:
    """Whether the fused step runs as one function (forward, backward, SGD, masks): SGD, no
    loss scaler (fp16 needs the scaler's skip), no SWD penalty (it keeps a step counter)."""
    return task.optimizer.name == "sgd" and accel.scaler() is None and not swd.is_swd(task.pruning)


class FusedStack:
    """The stacked state of a fused round's members: parameters, buffers, optimizer, masks.

    `owner` (None: one seed) gives each stack slot's share, whose batch it reads; masks are
    then per member, else one mask broadcast over the members."""

    def __init__(self, models: list[nn.Module], task: TaskConfig, masks: list[Mask], accel: Accel,
                 owner: list[int] | None) -> None:
        self.model = models[0]  # the architecture functional_call runs (its own tensors unused)
        self.whole = whole_step(task, accel)
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
    def copies(cls, model: nn.Module, count: int, task: TaskConfig, mask: Mask, accel: Accel) -> FusedStack:
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
        grads: list[Tensor | None] = []  # filled by backward, None where a parameter has no gradient

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
        return cpu_copy({k: stacked[k][j] for k in self.state_keys})

    def retire(self, dead: list[int], kept: list[int], lr_table: Tensor, losses: LossSums) -> tuple[list[int], Tensor]:
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


def fused_losses(model: nn.Module, params: StateDict, buffers: StateDict, xb: Tensor, yb: Tensor,
                 label_smoothing: float, in_batch: int | None, dtype: torch.dtype | None) -> Tensor:
    """Every member's loss on the batch, (G,). Module level, the model an argument: compiled
    once per process (silo.accel). `in_batch`: None, one batch shared by every member (one
    input feeds G grouped convolutions); 0, each member its own batch along dim 0.
    `dtype` (bf16/fp16; None: fp32): `model` is then silo.fused_precision's casting model,
    and Conv/Linear weights are cast here, where the lone run's autocast would cast them; the
    loss reads float32 logits."""
    if dtype is not None:
        params = fused_precision.cast_params(model, params, dtype)

    def member_loss(p: StateDict, b: StateDict, x: Tensor, y: Tensor) -> Tensor:
        logits = functional_call(model, (p, b), (x,))
        if dtype is not None:
            logits = fused_precision.loss_logits(logits)
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing)

    return vmap(member_loss, in_dims=(0, 0, in_batch, in_batch))(params, buffers, xb, yb)


def fused_sgd_step(model: nn.Module, params: StateDict, buffers: StateDict, optimizer: StackedOptimizer,
                   masks: StateDict,
                   xb: Tensor, yb: Tensor, lr: Tensor, label_smoothing: float, in_batch: int | None,
                   dtype: torch.dtype | None) -> Tensor:
    """One whole step of every member: forward, loss, backward (torch.func.grad), the stacked
    SGD update and the masks, updating `params`, `buffers` and the optimizer in place; returns
    the losses, (G,). One function, so torch.compile makes it one graph (silo.accel)."""

    def objective(p: StateDict, b: StateDict) -> tuple[Tensor, Tensor]:
        # The buffers an argument, not captured: BatchNorm updates them in place, which
        # torch.func.grad allows only on its function's inputs.
        losses = fused_losses(model, p, b, xb, yb, label_smoothing, in_batch, dtype)
        return losses.sum(), losses

    grads: StateDict
    losses: Tensor
    grads, losses = torch.func.grad(objective, has_aux=True)(params, buffers)
    with torch.no_grad():
        optimizer.step(list(params.values()), [grads[n] for n in params], lr)
        _apply_masks(params, masks)
    return losses
