"""The epoch loop that one run (silo.train) and a fused round (silo.round) share.

Both train a cycle's steps epoch by epoch: at each step the batch, the rewind capture at step
K, the optimizer step and its loss; every few steps the divergence check; after each epoch
the learning-curve point and the progress report. What differs (one model or a stack of
members, one batch or one per seed, stop or retire a member on divergence) is the
`EpochSteps` the caller hands `train_epochs`. One loop, so that a fused member takes exactly
the steps and checks its lone run takes (docs/design.md, "Fused rounds").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar

import torch
from torch import Tensor

# How often the loss is checked for divergence. Checking every step would force a device
# sync per step on a GPU; a NaN stays NaN, so a periodic check loses nothing but a few steps.
DIVERGENCE_CHECK_EVERY = 20

Batch = TypeVar("Batch")


class LossSums:
    """The loss summed over the current divergence-check window and over the current epoch,
    kept on the device: reading one forces a sync, so they are read only when needed.

    One run's sums are scalars; a fused round keeps one per member (`shape=(G,)`, dropping
    members with `keep`), judged by the same checks."""

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
        """Whether divergence is judged after `step`: every DIVERGENCE_CHECK_EVERY steps and
        at the last step."""
        return step % DIVERGENCE_CHECK_EVERY == 0 or step == total_steps

    def finite(self) -> Tensor:
        """Which window sums are finite (a bool tensor of the sums' shape)."""
        return torch.isfinite(self.window)

    def restart_window(self) -> None:
        self.window.zero_()

    def keep(self, index: Tensor) -> None:
        """Keep only the sums at `index` (positions along the first dimension)."""
        self.window, self.epoch = self.window[index], self.epoch[index]

    def epoch_mean(self) -> Tensor:
        return self.epoch / max(1, self.epoch_steps)


class EpochSteps(Protocol[Batch]):
    """What `train_epochs` asks of the runs it trains."""

    def training(self) -> bool:
        """Whether any run still trains (False once every one has diverged)."""
        ...

    def epoch_batches(self) -> Iterable[Batch]:
        """One epoch of batches, in the runs' seeded order."""
        ...

    def capture(self) -> None:
        """Keep the weights of the rewind step (`early:K` rewinding), before that step."""
        ...

    def step(self, batch: Batch, step: int) -> Tensor:
        """Optimizer step number `step` (from 0) on `batch`; the loss of each run, detached."""
        ...

    def judge(self, finite: Tensor, step: int) -> None:
        """After `step` steps: end the runs whose window loss is not `finite`."""
        ...

    def end_epoch(self, step: int, epoch_loss: Tensor) -> None:
        """The epoch ended after `step` steps with this mean loss per run still training."""
        ...


def train_epochs(steps: EpochSteps[Batch], losses: LossSums, total_steps: int, capture_at: int | None) -> int:
    """Train `total_steps` optimizer steps epoch by epoch, until the last step or until no run
    trains any more; returns the steps taken. `capture_at`: the step whose weights `capture`
    keeps (None: none)."""
    step = 0
    while step < total_steps and steps.training():
        losses.new_epoch()
        for batch in steps.epoch_batches():
            if capture_at is not None and step == capture_at:
                steps.capture()
            losses.add(steps.step(batch, step))
            step += 1
            if losses.check_due(step, total_steps):
                steps.judge(losses.finite(), step)
                if not steps.training():
                    break
                losses.restart_window()
            if step >= total_steps:
                break
        if steps.training():
            steps.end_epoch(step, losses.epoch_mean())
    return step
