"""The training of one run: prune -> rewind -> train -> evaluate.

A run is (task, seed, cycle, max_lr, parent). This module knows nothing of arms, stores or
schedulers of trials: it takes the parent's state in memory and returns the child's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from silo import curves
from silo.accel import Accel, CompileCache, ExecutionConfig, check_precision
from silo.config import TaskConfig
from silo.curves import CurvePoint
from silo.data import DataCache, Splits, load_data
from silo.epoch_loop import LossSums, train_epochs
from silo.models import build_model
from silo.models.foreign import check_fingerprint
from silo.pruning import Mask, PruneContext, prune_once, swd
from silo.seeds import derive_seed
from silo.status import RunStatus
from silo.step import StepLoop

StateDict = dict[str, Tensor]
# Called after each epoch with cycle, step, total_steps, epoch, train_loss and val_acc.
Progress = Callable[[dict[str, Any]], None]


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
    curve: list[CurvePoint] = field(default_factory=list)  # per epoch: silo.curves

    def as_dict(self) -> dict[str, Any]:
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
    progress: Progress | None = None,
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
    loop = StepLoop.set_up(task, data, accel.prepare_model(model), mask, seed=seed, cycle=cycle, max_lr=max_lr,
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
class _Trained:
    """What the step loop leaves for the run's result."""

    steps: int
    train_loss: Tensor  # the last epoch's mean loss
    diverged: bool
    rewind_weights: StateDict | None
    train_s: float
    curve: list[CurvePoint]  # silo.curves: one point per epoch


class _RunEpochs:
    """One run's side of the shared epoch loop (silo.epoch_loop): its batches and steps, stopping
    at the first divergence, its learning-curve point and progress report after each epoch."""

    def __init__(self, task: TaskConfig, data: Splits, loop: StepLoop, rewind_weights: StateDict | None, *,
                 cycle: int, device: torch.device, progress: Progress | None):
        self.task, self.data, self.loop, self.rewind_weights = task, data, loop, rewind_weights
        self.cycle, self.device, self.progress = cycle, device, progress
        self.diverged = False
        self.curve: list[CurvePoint] = []

    def training(self) -> bool:
        return not self.diverged

    def epoch_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        # Model-ready batches: augmented (task.data.augment) or prepared, on the device.
        return self.data.train_batches(self.task.batch_size, self.loop.gen, augment=self.task.data.augment)

    def capture(self) -> None:
        self.rewind_weights = cpu_copy(self.loop.model.state_dict())

    def step(self, batch: tuple[Tensor, Tensor], step: int) -> Tensor:
        xb, yb = batch
        return self.loop.step(xb, yb, self.task.label_smoothing)

    def judge(self, finite: Tensor, step: int) -> None:
        self.diverged = not bool(finite)

    def end_epoch(self, step: int, epoch_loss: Tensor) -> None:
        point = _epoch_point(self.task, self.data, self.loop.model, len(self.curve) + 1, step, self.loop.total_steps,
                             epoch_loss.item(), self.device)
        self.curve.append(point)
        if self.progress is not None:
            self.progress({"cycle": self.cycle, "step": step, "total_steps": self.loop.total_steps,
                           "epoch": point["epoch"], "train_loss": point["train_loss"], "val_acc": point["val_acc"]})


def _train_steps(
    task: TaskConfig, data: Splits, loop: StepLoop, rewind_weights: StateDict | None, *,
    cycle: int, device: torch.device, progress: Progress | None,
) -> _Trained:
    """Train the cycle's steps, epoch by epoch, until the last step or the first divergence."""
    run = _RunEpochs(task, data, loop, rewind_weights, cycle=cycle, device=device, progress=progress)
    losses = LossSums(device)
    t_train = time.perf_counter()
    loop.model.train()
    steps = train_epochs(run, losses, loop.total_steps, loop.capture_at)
    train_s = time.perf_counter() - t_train
    if loop.capture_at is not None and run.rewind_weights is None:
        run.rewind_weights = cpu_copy(loop.model.state_dict())  # K beyond the cycle: its last weights
    return _Trained(steps, losses.epoch_mean(), run.diverged, run.rewind_weights, train_s, run.curve)


def _epoch_point(task: TaskConfig, data: Splits, model: nn.Module, epoch: int, step: int, total_steps: int,
                 train_loss: float, device: torch.device) -> CurvePoint:
    """The learning curve's point of the epoch ending at `step` (silo.curves: eval mode, no RNG)."""
    val_acc = None
    if curves.eval_due(task.eval_every, epoch, step, total_steps, num_train=data.num_train, num_val=data.num_val):
        val_acc = curves.without_rng(
            lambda: evaluate_batches(model, data.eval_batches("val", task.eval_batch_size)), device)
        model.train()
    return curves.point(epoch, step, train_loss, val_acc)


# These, with start_state and cpu_copy above, are shared with silo.round, which trains the
# runs of a round together: each returns exactly what train_run uses, so a fused run is the
# same computation.


def check_max_lr(max_lr: float) -> None:
    if not (isinstance(max_lr, (int, float)) and math.isfinite(max_lr) and max_lr > 0):
        raise ValueError(f"max_lr must be a finite number > 0, got {max_lr!r}")


def finish_run(
    task: TaskConfig, data: Splits, model: nn.Module, state: RunState, *,
    seed: int, cycle: int, max_lr: float, steps: int, train_loss: Tensor | float,
    t_start: float, train_s: float, curve: list[CurvePoint] | None = None,
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


def diverged_result(task: TaskConfig, data: Splits, seed: int, cycle: int, max_lr: float, state: RunState,
                    t_start: float, steps: int) -> RunResult:
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
