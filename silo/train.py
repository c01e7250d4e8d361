"""The training of one run: prune -> rewind -> train -> evaluate.

A run is (task, seed, cycle, max_lr, parent). This module knows nothing of arms, stores or
schedulers of trials: it takes the parent's state in memory and returns the child's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from silo import curves
from silo.accel import Accel, CompileCache, ExecutionConfig, autocast, check_precision
from silo.config import TaskConfig
from silo.data import DataCache, Splits, load_data, steps_per_epoch
from silo.models import build_model
from silo.models.foreign import check_fingerprint
from silo.pruning import Mask, MaskedStep, PruneContext, prune_once, swd
from silo.schedules import make_scheduler
from silo.seeds import derive_seed
from silo.status import RunStatus

# How often the loss is checked for divergence. Checking every step would force a device
# sync per step on a GPU; a NaN stays NaN, so a periodic check loses nothing but a few steps.
_DIVERGENCE_CHECK_EVERY = 20

StateDict = dict[str, Tensor]


@dataclass
class RunState:
    """What a child run needs from its parent: trained weights, mask, and the rewind point."""

    weights: StateDict
    mask: Mask
    # The dense run's weights at step K, carried down the chain for `early:K` rewinding.
    rewind_weights: StateDict | None = None
    diverged: bool = False


@dataclass
class RunMetrics:
    status: RunStatus  # OK or DIVERGED
    val_acc: float
    test_acc: float
    train_loss: float
    sparsity: float
    steps: int
    wall_s: float
    images_per_s: float
    seed: int
    cycle: int
    max_lr: float
    layer_sparsity: dict[str, float] = field(default_factory=dict)
    curve: list[dict] = field(default_factory=list)  # per epoch: silo.curves

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class RunResult:
    metrics: RunMetrics
    state: RunState


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _seeded_model(task: TaskConfig, data: Splits, seed: int, device: torch.device) -> nn.Module:
    # fork_rng keeps the caller's global RNG untouched while the seed fixes the initial weights.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(
            task.model, num_classes=data.num_classes, in_channels=data.in_channels, **task.model_args
        )
    if task.model_fingerprint is not None:  # a model by import path: the driver's build, checked
        check_fingerprint(model, task.model_fingerprint)
    return model.to(device)


def cpu_copy(state: StateDict) -> StateDict:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def _all_finite(state: RunState) -> bool:
    """Whether every floating tensor of the state (parameters, buffers, rewind point) is finite."""
    tensors = list(state.weights.values()) + list((state.rewind_weights or {}).values())
    flags = [torch.isfinite(t).all() for t in tensors if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def make_optimizer(task: TaskConfig, params, max_lr: float) -> torch.optim.Optimizer:
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


@torch.no_grad()
def evaluate_batches(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]) -> float:
    """Top-1 accuracy as a fraction over model-ready batches (DataSplits.eval_batches)."""
    model.eval()
    correct, total = None, 0
    for xb, yb in batches:
        hits = (model(xb).argmax(1) == yb).sum()
        correct = hits if correct is None else correct + hits
        total += len(yb)
    return 0.0 if correct is None else correct.item() / max(1, total)


def _prune_context(task: TaskConfig, data: Splits, seed: int, cycle: int) -> PruneContext:
    # Data-driven strategies (gradient scores) look at a few seeded training batches.
    gen = torch.Generator().manual_seed(derive_seed(seed, cycle, "prune"))
    batches = []
    for xb, yb in data.train_batches(task.batch_size, gen, augment=False):
        batches.append((xb, yb))
        if len(batches) >= task.pruning.score_batches:
            break
    return PruneContext(batches=batches, loss_fn=F.cross_entropy)


def start_state(
    task: TaskConfig, data: Splits, seed: int, cycle: int, parent: RunState | None,
    device: torch.device,
) -> tuple[nn.Module, Mask, StateDict | None]:
    """Build the model of this run: dense init at cycle 0, else prune the parent and rewind."""
    model = _seeded_model(task, data, seed, device)
    exclude = task.pruning.exclude
    if cycle == 0:
        if parent is not None:
            raise ValueError("cycle 0 trains the dense network and takes no parent")
        return model, Mask.ones(model, exclude=exclude, include=task.pruning.include), None
    if parent is None:
        raise ValueError(f"cycle {cycle} >= 1 needs the parent run's state")

    init_weights = cpu_copy(model.state_dict())
    # Pruning always scores the parent's trained weights (docs/design.md).
    model.load_state_dict(parent.weights)
    if swd.is_swd(task.pruning):  # SWD starts from the parent's mask and cuts at the cycle's end
        mask = parent.mask.to(device)
    else:
        mask = prune_once(model, parent.mask.to(device), task.pruning, _prune_context(task, data, seed, cycle))

    rewind = task.pruning.rewind
    if rewind == "init":
        model.load_state_dict(init_weights)
    elif rewind == "reinit":
        fresh = _seeded_model(task, data, derive_seed(seed, cycle, "reinit"), device)
        model.load_state_dict(fresh.state_dict())
    elif rewind.startswith("early:"):
        if parent.rewind_weights is None:
            raise ValueError(f"rewind {rewind!r} needs the dense run's weights at that step")
        model.load_state_dict(parent.rewind_weights)
    mask.apply_(model)
    return model, mask, parent.rewind_weights


def train_run(
    task: TaskConfig,
    *,
    seed: int,
    cycle: int,
    max_lr: float,
    parent: RunState | None = None,
    data: Splits | None = None,
    cache: DataCache | None = None,
    device: torch.device | str | None = None,
    progress: Callable[[dict], None] | None = None,
    execution: ExecutionConfig | None = None,
    compiled: CompileCache | None = None,
) -> RunResult:
    """Perform one run. Never raises on a non-finite loss: the run ends `diverged`.
    `execution` (silo.accel) changes rounding only; `compiled` is the process's CompileCache."""
    t_start = time.perf_counter()
    device = resolve_device(task.device) if device is None else torch.device(device)
    check_max_lr(max_lr)
    check_precision(task.precision, device)
    if data is None:
        data = load_data(task.data, seed=seed, device=device, cache=cache)

    if parent is not None and parent.diverged:
        # A diverged parent has no usable weights: the child is diverged without training.
        return diverged_result(task, data, seed, cycle, max_lr, parent, t_start, steps=0)

    model, mask, rewind_weights = start_state(task, data, seed, cycle, parent, device)
    accel = Accel.for_run(task.precision, execution, model, device, compiled)
    loop = _StepLoop.set_up(task, data, accel.prepare_model(model), mask, seed=seed, cycle=cycle, max_lr=max_lr,
                            accel=accel)
    accel.set_backends()  # cuDNN autotuning (silo.accel)
    trained = _train_steps(task, data, loop, rewind_weights, cycle=cycle, device=device, progress=progress)
    mask = swd.end_of_cycle(model, mask, task.pruning, cycle=cycle)  # SWD's cut; others: unchanged

    state = RunState(cpu_copy(model.state_dict()), mask.to("cpu"), trained.rewind_weights, trained.diverged)
    return finish_run(
        task, data, model, state, seed=seed, cycle=cycle, max_lr=max_lr, steps=trained.steps,
        train_loss=trained.train_loss, t_start=t_start, train_s=trained.train_s, curve=trained.curve,
    )


@dataclass
class _StepLoop:
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
    ) -> _StepLoop:
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
        (objective if self.scaler is None else self.scaler.scale(objective)).backward()
        return loss


def forward_loss(model: nn.Module, xb: Tensor, yb: Tensor, label_smoothing: float,
                 dtype: torch.dtype | None) -> Tensor:
    """A step's forward pass and loss under the run's autocast (`dtype` None: fp32). Module
    level, the model an argument: compiled once per process, reused by every run."""
    with autocast(xb.device.type, dtype):
        return F.cross_entropy(model(xb), yb, label_smoothing=label_smoothing)


class LossSums:
    """The loss summed over the current divergence-check window and over the current epoch,
    kept on the device: reading one forces a sync, so they are read only when needed.

    One run's sums are scalars; silo.round keeps one per member of a fused round
    (`shape=(G,)`, dropping members with `keep`), judged by the same checks."""

    def __init__(self, device: torch.device, shape: tuple[int, ...] = (), dtype: torch.dtype | None = None):
        self.window = torch.zeros(shape, dtype=dtype, device=device)
        self.epoch, self.epoch_steps = torch.zeros(shape, dtype=dtype, device=device), 0

    def new_epoch(self) -> None:
        self.epoch.zero_()
        self.epoch_steps = 0

    def add(self, loss: Tensor) -> None:
        self.window += loss
        self.epoch += loss
        self.epoch_steps += 1

    @staticmethod
    def check_due(step: int, total_steps: int) -> bool:
        """Whether divergence is judged after `step`: every _DIVERGENCE_CHECK_EVERY steps and
        at the last step."""
        return step % _DIVERGENCE_CHECK_EVERY == 0 or step == total_steps

    def finite(self) -> Tensor:
        """Which window sums are finite (a bool tensor of the sums' shape)."""
        return torch.isfinite(self.window)

    def restart_window(self) -> None:
        self.window.zero_()

    def keep(self, index: Tensor) -> None:
        """Keep only the sums at `index` (positions along the first dimension)."""
        self.window, self.epoch = self.window[index], self.epoch[index]

    def diverged(self, step: int, total_steps: int) -> bool:
        """Whether the window's loss is non-finite, checked at each check_due step (False in
        between); a finite window starts over."""
        if self.check_due(step, total_steps):
            if not self.finite():
                return True
            self.restart_window()
        return False

    def epoch_mean(self) -> Tensor:
        return self.epoch / max(1, self.epoch_steps)


@dataclass
class _Trained:
    """What the step loop leaves for the run's result."""

    steps: int
    train_loss: Tensor  # the last epoch's mean loss
    diverged: bool
    rewind_weights: StateDict | None
    train_s: float
    curve: list[dict]  # silo.curves: one point per epoch


def _train_steps(
    task: TaskConfig, data: Splits, loop: _StepLoop, rewind_weights: StateDict | None, *,
    cycle: int, device: torch.device, progress: Callable[[dict], None] | None,
) -> _Trained:
    """Train the cycle's steps, epoch by epoch, until the last step or the first divergence."""
    step, diverged, curve = 0, False, []
    losses = LossSums(device)
    t_train = time.perf_counter()
    loop.model.train()
    while step < loop.total_steps and not diverged:
        losses.new_epoch()
        # Model-ready batches: augmented (task.data.augment) or prepared, on the device.
        for xb, yb in data.train_batches(task.batch_size, loop.gen, augment=task.data.augment):
            if loop.capture_at is not None and step == loop.capture_at:
                rewind_weights = cpu_copy(loop.model.state_dict())
            losses.add(loop.step(xb, yb, task.label_smoothing))
            step += 1
            diverged = losses.diverged(step, loop.total_steps)
            if diverged or step >= loop.total_steps:
                break
        if not diverged:
            curve.append(_epoch_point(task, data, loop.model, len(curve) + 1, step, loop.total_steps,
                                      losses.epoch_mean().item(), device))
        if progress is not None and not diverged:
            progress({"cycle": cycle, "step": step, "total_steps": loop.total_steps, "epoch": curve[-1]["epoch"],
                      "train_loss": curve[-1]["train_loss"], "val_acc": curve[-1]["val_acc"]})
    train_s = time.perf_counter() - t_train
    if loop.capture_at is not None and rewind_weights is None:
        rewind_weights = cpu_copy(loop.model.state_dict())  # K beyond the cycle: its last weights
    return _Trained(step, losses.epoch_mean(), diverged, rewind_weights, train_s, curve)


def _epoch_point(task: TaskConfig, data, model: nn.Module, epoch: int, step: int, total_steps: int,
                 train_loss: float, device: torch.device) -> dict:
    """The learning curve's point of the epoch ending at `step` (silo.curves: eval mode, no RNG)."""
    val_acc = None
    if curves.eval_due(task.eval_every, epoch, step, total_steps, num_train=data.num_train, num_val=data.num_val):
        val_acc = curves.without_rng(
            lambda: evaluate_batches(model, data.eval_batches("val", task.eval_batch_size)), device)
        model.train()
    return curves.point(epoch, step, train_loss, val_acc)


# The steps below, with start_state, cpu_copy, diverged_result and LossSums above, are shared
# with silo.round, which trains the runs of a round together: each returns exactly what
# train_run uses, so a fused run is the same computation.


def check_max_lr(max_lr: float) -> None:
    if not (isinstance(max_lr, (int, float)) and math.isfinite(max_lr) and max_lr > 0):
        raise ValueError(f"max_lr must be a finite number > 0, got {max_lr!r}")


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


def finish_run(
    task: TaskConfig, data: Splits, model: nn.Module, state: RunState, *,
    seed: int, cycle: int, max_lr: float, steps: int, train_loss: Tensor | float,
    t_start: float, train_s: float, curve: list[dict] | None = None,
) -> RunResult:
    """The result of a trained run whose weights are in `model` and `state`: diverged at
    chance, or evaluated on val and test. `train_loss` is the last epoch's mean loss; `curve`
    its per-epoch points (silo.curves), the last one given the final val accuracy."""
    train_loss = float(train_loss)
    # A finite loss does not prove a usable network: at a huge max_lr BatchNorm's running
    # variance can reach inf while the loss stays finite (2e23), and every child would
    # inherit it. So the final loss and every tensor of the state are checked once here.
    if not state.diverged and not (math.isfinite(train_loss) and _all_finite(state)):
        state = replace(state, diverged=True)
    if state.diverged:
        result = diverged_result(task, data, seed, cycle, max_lr, state, t_start, steps=steps)
        return replace(result, metrics=replace(result.metrics, curve=list(curve or [])))
    mask = state.mask
    val_acc = evaluate_batches(model, data.eval_batches("val", task.eval_batch_size))
    test_acc = evaluate_batches(model, data.eval_batches("test", task.eval_batch_size))
    metrics = RunMetrics(
        status=RunStatus.OK, val_acc=val_acc, test_acc=test_acc, train_loss=train_loss,
        sparsity=mask.sparsity(), steps=steps, wall_s=time.perf_counter() - t_start,
        images_per_s=steps * task.batch_size / max(train_s, 1e-9),
        seed=seed, cycle=cycle, max_lr=float(max_lr), layer_sparsity=mask.layer_sparsity(),
        curve=curves.finished(list(curve or []), steps, val_acc),
    )
    return RunResult(metrics, state)


def diverged_result(task, data, seed, cycle, max_lr, state, t_start, steps) -> RunResult:
    """Accuracies at chance, loss NaN: a diverged run still returns a result, never chosen."""
    mask = state.mask
    if cycle > 0 and state.mask is not None and steps == 0:
        # The child of a diverged parent never pruned; report the sparsity it would have.
        target = 1 - (1 - mask.sparsity()) * (1 - task.pruning.rate)
    else:
        target = mask.sparsity()
    metrics = RunMetrics(
        status=RunStatus.DIVERGED, val_acc=data.chance, test_acc=data.chance, train_loss=float("nan"),
        sparsity=target, steps=steps, wall_s=time.perf_counter() - t_start, images_per_s=0.0,
        seed=seed, cycle=cycle, max_lr=float(max_lr), layer_sparsity=mask.layer_sparsity(),
    )
    return RunResult(metrics, RunState(state.weights, mask, state.rewind_weights, diverged=True))
