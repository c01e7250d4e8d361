"""A run's learning curve: its training loss and validation accuracy after every epoch.

One point per epoch (the last one may be a partial epoch): {"epoch": 1.., "step": optimizer
steps so far, "train_loss": the epoch's mean loss, "val_acc": top-1 on the val split, or None
on an epoch `task.eval_every` skips}. The last point's val_acc is the run's own final val_acc
(evaluated once, by silo.train.finish_run), so the curve costs eval_every-thinned evaluations
of the val split before the last epoch and nothing after it; `eval_every: auto` (the default)
thins them to about 3 % of the training's compute.

The evaluation must not change the run (docs/design.md, learning curves): it runs in eval
mode under no_grad (BatchNorm's running stats untouched), in `without_rng`, which restores the
CPU and CUDA generators afterwards (a streaming loader draws its workers' base seed from the
global generator, and Dropout draws from it too), and puts the model back in train mode. So a
run's weights, metrics and id are the same with or without its curve.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypedDict, TypeVar

import torch

T = TypeVar("T")


# What `task.eval_every: auto` lets the curve cost: its val forward passes against the
# training steps' forward and backward ones (a backward pass costs about two forwards).
AUTO_BUDGET = 0.03


def resolve_eval_every(eval_every: int | str, num_train: int, num_val: int) -> int:
    """`task.eval_every` as a number of epochs. `auto`: the most frequent cadence whose val
    passes stay within AUTO_BUDGET of the training passes, one evaluation per k epochs
    costing num_val / (3 num_train k) (the quickstart, 800 val to 3,200 train: every 3rd)."""
    if eval_every != "auto":
        return int(eval_every)
    return max(1, math.ceil(num_val / (3 * max(1, num_train) * AUTO_BUDGET)))


def eval_due(eval_every: int | str, epoch: int, step: int, total_steps: int, *, num_train: int,
             num_val: int) -> bool:
    """Whether the epoch ending at `step` gets a val evaluation of its own (the last epoch
    never does: finish_run's is its point). `eval_every`: task.eval_every, as set."""
    every = resolve_eval_every(eval_every, num_train, num_val)
    return every > 0 and epoch % every == 0 and step < total_steps


class CurvePoint(TypedDict):
    """One epoch's point (a plain dict when stored)."""

    epoch: int
    step: int
    train_loss: float | None  # None: not finite
    val_acc: float | None  # None: an epoch without its own evaluation


def point(epoch: int, step: int, train_loss: float, val_acc: float | None = None) -> CurvePoint:
    loss = float(train_loss)
    return {"epoch": int(epoch), "step": int(step), "train_loss": loss if math.isfinite(loss) else None,
            "val_acc": None if val_acc is None else float(val_acc)}


def without_rng(fn: Callable[[], T], device: torch.device) -> T:
    """fn() with every random generator it might touch restored afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        return fn()


def finished(curve: list[CurvePoint], steps: int, val_acc: float) -> list[CurvePoint]:
    """The curve with its last point given the run's final val accuracy, if the last point is
    where the run ended (a diverged run's curve stops at its last finite epoch)."""
    if curve and curve[-1]["step"] == steps:
        curve = [*curve[:-1], {**curve[-1], "val_acc": float(val_acc)}]
    return curve
