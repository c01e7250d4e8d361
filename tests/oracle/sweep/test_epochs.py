"""oracle.sweep.epochs: a trial's runs train in a thread of their own, and each step of the trial
hands Tune the next epoch's report or the run's result, in order; a failure in training
fails the step that waits for it, as it did unthreaded."""

from __future__ import annotations

import math
import threading

import pytest

from oracle.sweep.epochs import EpochFeed, epoch_report, is_epoch_report


def test_epochs_come_in_order_then_the_result_from_another_thread():
    seen_in = []

    def work(progress):
        seen_in.append(threading.current_thread().name)
        for epoch in (1, 2, 3):
            progress({"epoch": epoch})
        return "result"

    feed = EpochFeed(work)
    got = [feed.next() for _ in range(4)]
    assert got == [("epoch", {"epoch": 1}), ("epoch", {"epoch": 2}), ("epoch", {"epoch": 3}), ("done", "result")]
    assert seen_in == ["silo-train"] and threading.current_thread().name != "silo-train"


def test_a_failure_in_training_is_raised_where_the_trial_waits():
    def work(progress):
        progress({"epoch": 1})
        raise FloatingPointError("the loss is nan at step 7")

    feed = EpochFeed(work)
    assert feed.next() == ("epoch", {"epoch": 1})
    with pytest.raises(FloatingPointError, match="step 7"):
        feed.next()


def test_an_epoch_report_of_a_run_and_of_a_round():
    info = {"cycle": 2, "epoch": 1, "step": 10, "total_steps": 30}
    lone = epoch_report({**info, "train_loss": 0.7, "val_acc": 0.81}, arm="silo", seed=1, node_id="n", max_lr=0.05)
    assert is_epoch_report(lone) and "run_id" not in lone and lone["done"] is False
    assert (lone["max_lr"], lone["val_acc"], lone["train_loss"], lone["cycle"]) == (0.05, 0.81, 0.7, 2)
    # A round: one entry per member training now (None: diverged, or waiting its turn).
    rnd = epoch_report({**info, "max_lrs": [0.01, 0.1, 1.0], "train_loss": [0.9, 0.5, None],
                        "val_acc": [0.6, None, None]}, arm="oracle", seed=0, node_id="n")
    assert rnd["members"] == {"0.01": {"train_loss": 0.9, "val_acc": 0.6}, "0.1": {"train_loss": 0.5, "val_acc": None}}
    assert rnd["val_acc"] == 0.6  # Tune's metric, in every result: the best member's
    skipped = epoch_report({**info, "train_loss": 0.7, "val_acc": None}, arm="silo", seed=1, node_id="n", max_lr=0.05)
    assert math.isnan(skipped["val_acc"])  # an epoch task.eval_every skips
    assert not is_epoch_report({"run_id": "r", "val_acc": 0.8}) and not is_epoch_report(None)
