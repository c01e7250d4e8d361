"""silo.epoch_loop: the one epoch loop a lone run (silo.train) and a fused round (silo.round)
share. Its control flow on a scripted set of runs: when divergence is judged, when the rewind
weights are captured, which epochs end, how many steps are taken."""

from __future__ import annotations

import math

import torch

from silo.epoch_loop import DIVERGENCE_CHECK_EVERY, LossSums, train_epochs


class Scripted:
    """Runs whose loss is 1.0 per step, or NaN from step `nan_from` on; it logs what the loop
    asks of it."""

    def __init__(self, batches_per_epoch: int, nan_from: int | None = None):
        self.batches_per_epoch, self.nan_from = batches_per_epoch, nan_from
        self.stopped = False
        self.log: list[tuple] = []

    def training(self) -> bool:
        return not self.stopped

    def epoch_batches(self) -> range:
        return range(self.batches_per_epoch)

    def capture(self) -> None:
        self.log.append(("capture",))

    def step(self, batch: int, step: int) -> torch.Tensor:
        self.log.append(("step", step, batch))
        nan = self.nan_from is not None and step >= self.nan_from
        return torch.tensor(math.nan if nan else 1.0, dtype=torch.float64)

    def judge(self, finite: torch.Tensor, step: int) -> None:
        self.log.append(("judge", step, bool(finite)))
        self.stopped = not bool(finite)

    def end_epoch(self, step: int, epoch_loss: torch.Tensor) -> None:
        self.log.append(("epoch", step, float(epoch_loss)))


def events(log: list[tuple], kind: str) -> list[tuple]:
    return [e[1:] for e in log if e[0] == kind]


def test_a_cycle_ends_mid_epoch_judged_every_few_steps_and_at_its_last():
    assert DIVERGENCE_CHECK_EVERY == 20
    runs = Scripted(batches_per_epoch=10)
    steps = train_epochs(runs, LossSums(torch.device("cpu"), dtype=torch.float64), total_steps=25, capture_at=7)
    assert steps == 25
    assert [e[0] for e in events(runs.log, "step")] == list(range(25))
    assert events(runs.log, "step")[10] == (10, 0)  # each epoch starts its batches over
    assert events(runs.log, "judge") == [(20, True), (25, True)]
    # The last epoch is a partial one; each epoch's mean loss is over its own steps only.
    assert events(runs.log, "epoch") == [(10, 1.0), (20, 1.0), (25, 1.0)]
    # The rewind weights are kept once, before step 7 trains.
    at = runs.log.index(("capture",))
    assert runs.log[at + 1] == ("step", 7, 7)
    assert events(runs.log, "capture") == [()]


def test_a_divergence_stops_the_loop_at_the_check_that_sees_it():
    runs = Scripted(batches_per_epoch=10, nan_from=22)
    steps = train_epochs(runs, LossSums(torch.device("cpu"), dtype=torch.float64), total_steps=100, capture_at=None)
    # Step 22's NaN lies in the window judged after step 40: the loop stops there, mid-run.
    assert steps == 40
    assert events(runs.log, "judge") == [(20, True), (40, False)]
    # Epoch 3 (steps 21-30) ends before any check sees its NaN: its mean is reported as NaN;
    # epoch 4, which the check interrupts, is not reported at all.
    ends = events(runs.log, "epoch")
    assert [s for s, _ in ends] == [10, 20, 30]
    assert ends[1][1] == 1.0 and math.isnan(ends[2][1])
    assert events(runs.log, "capture") == []


def test_the_window_restarts_after_each_finite_check_and_members_can_be_dropped():
    losses = LossSums(torch.device("cpu"), shape=(3,), dtype=torch.float64)
    losses.new_epoch()
    for value in (1.0, 2.0):
        losses.add(torch.tensor([value, math.inf, 3 * value], dtype=torch.float64))
    assert losses.finite().tolist() == [True, False, True]
    losses.keep(torch.tensor([0, 2]))  # the diverged member leaves, as a fused round retires it
    losses.restart_window()
    losses.add(torch.tensor([5.0, 7.0], dtype=torch.float64))
    assert losses.window.tolist() == [5.0, 7.0]
    assert losses.epoch_mean().tolist() == [8.0 / 3, 16.0 / 3]
