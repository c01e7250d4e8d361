"""Learning curves (silo.curves): one point per epoch, the val split evaluated in eval mode,
consuming no RNG, so a run's weights, metrics and id are the same however thin its curve; a
fused round's curves are its lone runs' curves."""

from __future__ import annotations

import math

import pytest
import torch

from oracle.store.identity import RunKey
from silo import curves
from silo.config import DataConfig, PruningConfig, ShapeConfig, TaskConfig
from silo.data import DataCache, load_data
from silo.round import train_round
from silo.train import train_run
from tests.silo.test_round import synthetic, tiny_task


def small_task(**changes) -> TaskConfig:
    base = dict(data=DataConfig(name="mnist1d", num_samples=1000), model="mnist1d_cnn", epochs=3, batch_size=64,
                shape=ShapeConfig(name="warmup_step", warmup="0.5ep", milestones=("2.5ep",)),
                pruning=PruningConfig(rate=0.3), device="cpu", eval_every=1)
    base.update(changes)
    return TaskConfig(**base)


@pytest.fixture(scope="module")
def cache():
    return DataCache()


def _same_run(a, b) -> None:
    """Everything but the timings and the curve, exactly; and the weights bit for bit."""
    drop = {"wall_s": 0, "images_per_s": 0, "curve": 0}
    assert a.metrics.as_dict() | drop == b.metrics.as_dict() | drop
    assert list(a.state.weights) == list(b.state.weights)
    for k, v in a.state.weights.items():
        assert torch.equal(v, b.state.weights[k]), k


def test_every_epoch_has_a_point_and_the_last_is_the_runs_own(cache):
    r = train_run(small_task(), seed=1, cycle=0, max_lr=0.05, cache=cache)
    c = r.metrics.curve
    assert [p["epoch"] for p in c] == [1, 2, 3]
    spe = r.metrics.steps // 3
    assert spe > 1 and [p["step"] for p in c] == [spe, 2 * spe, 3 * spe] == [spe, 2 * spe, r.metrics.steps]
    assert c[-1]["val_acc"] == r.metrics.val_acc and c[-1]["train_loss"] == pytest.approx(r.metrics.train_loss)
    assert all(0.0 < p["val_acc"] <= 1.0 for p in c)
    assert c[0]["train_loss"] > c[-1]["train_loss"]  # it learns


def test_auto_evaluates_as_often_as_three_percent_of_training_allows(cache):
    # One evaluation per k epochs costs num_val / (3 num_train k) of the training passes.
    assert curves.resolve_eval_every("auto", 3200, 800) == 3  # the quickstart: 2.8 % at k = 3, 8.3 % at 1
    assert curves.resolve_eval_every("auto", 45000, 5000) == 2  # CIFAR-10's 10 % val
    assert curves.resolve_eval_every("auto", 100000, 100) == 1  # a small val split: every epoch
    assert curves.resolve_eval_every(0, 3200, 800) == 0 and curves.resolve_eval_every(5, 10, 10) == 5
    assert TaskConfig(data=DataConfig(name="mnist1d"), model="mnist1d_cnn").eval_every == "auto"  # the default
    task = small_task(eval_every="auto", epochs=5)
    run = train_run(task, seed=1, cycle=0, max_lr=0.05, cache=cache)
    data = load_data(task.data, seed=1, cache=cache)
    every = curves.resolve_eval_every("auto", data.num_train, data.num_val)
    assert every == math.ceil(data.num_val / (3 * data.num_train * curves.AUTO_BUDGET)) > 1
    measured = [p["epoch"] for p in run.metrics.curve if p["val_acc"] is not None]
    assert measured == [e for e in range(1, 5) if e % every == 0] + [5]


def test_an_epochs_point_is_the_val_accuracy_of_the_weights_at_that_epoch(cache):
    # A constant learning rate makes the first 3 epochs of a 4-epoch run the whole of a 3-epoch
    # run (same batches in the same order): its point must be that run's own final val accuracy.
    flat = dict(shape=ShapeConfig(name="constant"))
    three = train_run(small_task(epochs=3, **flat), seed=2, cycle=0, max_lr=0.1, cache=cache)
    four = train_run(small_task(epochs=4, **flat), seed=2, cycle=0, max_lr=0.1, cache=cache)
    assert four.metrics.curve[2]["val_acc"] == three.metrics.val_acc
    assert three.metrics.val_acc != three.metrics.test_acc  # so the split is told apart
    assert four.metrics.curve[2]["train_loss"] == pytest.approx(three.metrics.train_loss, abs=1e-12)


def test_the_curve_never_changes_the_run_nor_its_id(cache):
    dense = {k: train_run(small_task(eval_every=k), seed=0, cycle=0, max_lr=0.08, cache=cache) for k in (1, 2, 0)}
    for k in (2, 0):
        _same_run(dense[1], dense[k])
    assert [p["val_acc"] is None for p in dense[2].metrics.curve] == [True, False, False]  # epoch 2, and the last
    assert [p["val_acc"] is None for p in dense[0].metrics.curve] == [True, True, False]
    # the next cycle prunes and trains from each: still the same
    children = [train_run(small_task(eval_every=k), seed=0, cycle=1, max_lr=0.08, parent=dense[k].state, cache=cache)
                for k in (1, 0)]
    _same_run(*children)
    keys = [RunKey(small_task(eval_every=k), seed=0, cycle=1, max_lr=0.08, parent_run_id="p") for k in (1, 0, 7)]
    assert len({k.run_id for k in keys}) == 1 and "eval_every" not in keys[2].payload()["task"]


def test_evaluation_restores_every_random_generator():
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    drawn = curves.without_rng(lambda: torch.rand(100), torch.device("cpu"))
    assert drawn.shape == (100,) and torch.equal(torch.rand(4), expected)


@pytest.mark.parametrize("eval_every", [2])
def test_a_fused_rounds_curves_are_its_lone_runs_curves(float64, eval_every):
    task = tiny_task("mnist1d_cnn", {"width": 8}, steps=12, eval_every=eval_every)  # 3 epochs of 4 steps
    data = synthetic((1, 40))
    parent = train_run(task, seed=0, cycle=0, max_lr=0.05, data=data).state
    lrs = [0.02, 0.1, 0.3]
    fused = train_round(task, seed=0, cycle=1, max_lrs=lrs, parent=parent, data=data, mode="fused")
    alone = train_round(task, seed=0, cycle=1, max_lrs=lrs, parent=parent, data=data, mode="sequential")
    for f, s in zip(fused, alone):
        assert [p["epoch"] for p in f.metrics.curve] == [1, 2, 3]
        assert [p["val_acc"] for p in f.metrics.curve] == [p["val_acc"] for p in s.metrics.curve]
        assert [p["train_loss"] for p in f.metrics.curve] == pytest.approx(
            [p["train_loss"] for p in s.metrics.curve], abs=1e-10)
        assert (f.metrics.curve[0]["val_acc"] is None) == (eval_every == 2)
        assert f.metrics.val_acc == s.metrics.val_acc
    assert len({tuple(p["val_acc"] for p in r.metrics.curve) for r in fused}) > 1  # members differ
    # the round without its curve trains the same members
    bare = train_round(task.model_copy(update={"eval_every": 0}), seed=0, cycle=1, max_lrs=lrs, parent=parent,
                       data=data, mode="fused")
    for f, b in zip(fused, bare):
        _same_run(f, b)
