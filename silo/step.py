"""One optimizer step of a run, and what fixes a cycle's steps: the optimizer, the LR
scheduler, the batch order, the cycle's length and the rewind step.

silo.train's step loop is built here; silo.round fuses the same steps (its StackedOptimizer
takes make_optimizer as its reference, its lr table the same scheduler's multipliers), so
the helpers below are what keeps a fused member's steps those of its lone run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from silo.accel import Accel, autocast
from silo.config import TaskConfig
from silo.data import Splits, steps_per_epoch
from silo.pruning import Mask, MaskedStep, swd
from silo.schedules import make_scheduler
from silo.seeds import derive_seed


def make_optimizer(task: TaskConfig, params: Iterable[nn.Parameter], max_lr: float) -> torch.optim.Optimizer:
    o = task.optimizer
    if o.name == "sgd":
        return torch.optim.SGD(
            params, lr=max_lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0,
            weight_decay=o.weight_decay,
        )
    if o.name == "adam":
        return torch.optim.Adam(params, lr=max_lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
    return torch.optim.RMSprop(
        params, lr=max_lr, alpha=o.alpha, eps=o.eps, momentum=o.momentum, weight_decay=o.weight_decay
    )


@dataclass
class StepLoop:
    """What one optimizer step of a run works with, set up once the run's model is built."""

    model: nn.Module
    masked_step: MaskedStep
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR
    gen: torch.Generator  # the batch order and augmentation
    total_steps: int
    capture_at: int | None  # the step whose weights `early:K` rewinding keeps
    accel: Accel  # precision, memory format, compile (silo.accel)
    scaler: torch.amp.GradScaler | None  # fp16 only
    decay: swd.SelectiveDecay | None = None  # SWD's penalty (strategy swd, cycles q >= 1)

    @classmethod
    def set_up(
        cls, task: TaskConfig, data: Splits, model: nn.Module, mask: Mask, *,
        seed: int, cycle: int, max_lr: float, accel: Accel,
    ) -> StepLoop:
        masked_step = MaskedStep(model, mask)
        optimizer = make_optimizer(task, model.parameters(), max_lr)
        spe, total_steps = cycle_steps(task, data)
        scheduler = make_scheduler(optimizer, task.shape, total_steps, spe)
        decay = swd.selective_decay(task.pruning, task.optimizer.weight_decay, mask, cycle=cycle,
                                    total_steps=total_steps)
        return cls(model, masked_step, optimizer, scheduler, order_generator(seed, cycle), total_steps,
                   rewind_capture_step(task, cycle), accel, accel.scaler(), decay)

    def step(self, xb: Tensor, yb: Tensor, label_smoothing: float) -> Tensor:
        """One optimizer step on a batch; returns its loss, detached."""
        loss = self.accel.call(forward_loss, (self.model, self.accel.batch(xb), yb, label_smoothing),
                               self._backward, lambda: list(self.model.buffers()))
        if self.scaler is None:
            self.optimizer.step()
        else:  # skips the step if the gradients overflowed float16, then adapts the scale
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.masked_step()  # momentum and weight decay moved the pruned weights off zero
        self.scheduler.step()
        return loss.detach()

    def _backward(self, loss: Tensor) -> Tensor:
        # SWD's penalty joins the objective here, eagerly (outside the compiled forward), in
        # float32 weights, before any loss scaling; the loss reported stays the data loss.
        objective = loss if self.decay is None else loss + self.decay.of_model(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        (objective if self.scaler is None else self.scaler.scale(objective)).backward()  # type: ignore[no-untyped-call]  # torch: Tensor.backward is unannotated
        return loss


def forward_loss(model: nn.Module, xb: Tensor, yb: Tensor, label_smoothing: float,
                 dtype: torch.dtype | None) -> Tensor:
    """A step's forward pass and loss under the run's autocast (`dtype` None: fp32). Module
    level, the model an argument: compiled once per process, reused by every run."""
    with autocast(xb.device.type, dtype):
        return F.cross_entropy(model(xb), yb, label_smoothing=label_smoothing)


def cycle_steps(task: TaskConfig, data: Splits) -> tuple[int, int]:
    """(steps per epoch, optimizer steps of the cycle)."""
    spe = steps_per_epoch(data.num_train, task.batch_size)
    return spe, max(1, round(task.epochs * spe))


def order_generator(seed: int, cycle: int) -> torch.Generator:
    """The generator of a run's batch order and augmentation: a function of (seed, cycle) only."""
    return torch.Generator().manual_seed(derive_seed(seed, cycle, "order"))


def rewind_capture_step(task: TaskConfig, cycle: int) -> int | None:
    """The step whose weights the dense run keeps for `early:K` rewinding (None: no capture)."""
    return task.pruning.rewind_step if cycle == 0 else None
