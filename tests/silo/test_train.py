"""The training of one run and the sequential chain driver, on real MNIST-1D data."""

from __future__ import annotations

import math

import pytest
import torch

from silo.chain import run_chain
from silo.config import DataConfig, PruningConfig, ShapeConfig, TaskConfig
from silo.data import DataCache, load_data, steps_per_epoch
from silo.pruning import prunable_parameters
from silo.schedules import ConstantPeak, ListPeak
from silo.train import train_run

SEED = 3


def small_task(**changes) -> TaskConfig:
    base = dict(
        data=DataConfig(name="mnist1d", num_samples=1500),
        model="mnist1d_cnn",
        epochs=2,
        batch_size=64,
        shape=ShapeConfig(name="warmup_step", warmup="0.5ep", milestones=("1.5ep",)),
        pruning=PruningConfig(rate=0.3),
        device="cpu",
    )
    base.update(changes)
    return TaskConfig(**base)


@pytest.fixture(scope="module")
def cache():
    return DataCache()


def test_same_seed_same_metrics_bit_for_bit(cache):
    task = small_task()
    a = train_run(task, seed=SEED, cycle=0, max_lr=0.05, cache=cache)
    b = train_run(task, seed=SEED, cycle=0, max_lr=0.05, cache=cache)
    assert a.metrics.val_acc == b.metrics.val_acc
    assert a.metrics.train_loss == b.metrics.train_loss
    for k, v in a.state.weights.items():
        assert torch.equal(v, b.state.weights[k]), k
    a1 = train_run(task, seed=SEED, cycle=1, max_lr=0.05, parent=a.state, cache=cache)
    b1 = train_run(task, seed=SEED, cycle=1, max_lr=0.05, parent=b.state, cache=cache)
    assert a1.metrics.as_dict() | {"wall_s": 0, "images_per_s": 0} == b1.metrics.as_dict() | {
        "wall_s": 0, "images_per_s": 0}


def test_other_seed_other_weights(cache):
    task = small_task(epochs=0.2)
    a = train_run(task, seed=0, cycle=0, max_lr=0.05, cache=cache)
    b = train_run(task, seed=1, cycle=0, max_lr=0.05, cache=cache)
    assert any(not torch.equal(v, b.state.weights[k]) for k, v in a.state.weights.items())


def test_huge_max_lr_ends_diverged_at_chance(cache):
    task = small_task(epochs=1)
    result = train_run(task, seed=SEED, cycle=0, max_lr=1e6, cache=cache)
    assert result.metrics.status == "diverged"
    assert result.metrics.val_acc == pytest.approx(0.1)
    assert result.metrics.test_acc == pytest.approx(0.1)
    assert math.isnan(result.metrics.train_loss)
    # Its child is diverged too, without training and without raising.
    child = train_run(task, seed=SEED, cycle=1, max_lr=0.05, parent=result.state, cache=cache)
    assert child.metrics.status == "diverged" and child.metrics.steps == 0


def test_finite_loss_but_non_finite_weights_is_diverged(cache):
    # Measured: at max_lr 1e3 with a constant shape this run's loss stays finite (~2e16) to
    # the last step while BatchNorm's running variance reaches inf. It used to end `ok`.
    task = small_task(data=DataConfig(name="mnist1d", num_samples=600), epochs=1,
                      shape=ShapeConfig(name="constant"))
    result = train_run(task, seed=SEED, cycle=0, max_lr=1e3, cache=cache)
    spe = steps_per_epoch(load_data(task.data, seed=SEED, device="cpu", cache=cache).num_train, 64)
    assert result.metrics.steps == spe  # trained to the end: the periodic loss check never fired
    assert any(not torch.isfinite(v).all() for v in result.state.weights.values())
    assert result.metrics.status == "diverged" and result.state.diverged
    assert result.metrics.val_acc == pytest.approx(0.1) and math.isnan(result.metrics.train_loss)
    child = train_run(task, seed=SEED, cycle=1, max_lr=0.05, parent=result.state, cache=cache)
    assert child.metrics.status == "diverged" and child.metrics.steps == 0


def test_val_acc_is_measured_on_the_validation_split(cache):
    # The Oracle selects on val_acc: measured on the test split, it would select on test.
    task = small_task(epochs=1)
    result = train_run(task, seed=SEED, cycle=0, max_lr=0.05, cache=cache)
    data = load_data(task.data, seed=SEED, device="cpu", cache=cache)
    from silo.models import build_model

    model = build_model(task.model, num_classes=data.num_classes, in_channels=data.in_channels)
    model.load_state_dict(result.state.weights)
    model.eval()

    def accuracy(x, y):
        with torch.no_grad():
            x = data.prepare(x) if data.prepare is not None else x
            return (model(x).argmax(1) == y).sum().item() / len(y)

    val, test = accuracy(data.val_x, data.val_y), accuracy(data.test_x, data.test_y)
    assert val != test  # so that swapping the splits cannot go unnoticed
    assert result.metrics.val_acc == val and result.metrics.test_acc == test


def test_pruned_weights_stay_zero_through_training(cache):
    task = small_task(optimizer={"name": "sgd", "momentum": 0.9, "weight_decay": 5e-4})
    dense = train_run(task, seed=SEED, cycle=0, max_lr=0.05, cache=cache)
    pruned = train_run(task, seed=SEED, cycle=1, max_lr=0.05, parent=dense.state, cache=cache)
    mask = pruned.state.mask
    assert pruned.metrics.sparsity == pytest.approx(0.3, abs=0.01)
    for name, keep in mask.items():
        w = pruned.state.weights[name]
        assert torch.all(w[~keep] == 0), name
        assert torch.count_nonzero(w[keep]) > 0.99 * keep.sum()


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_other_optimizers_train(cache, optimizer):
    task = small_task(optimizer={"name": optimizer, "momentum": 0.0, "weight_decay": 0.0})
    result = train_run(task, seed=SEED, cycle=0, max_lr=2e-3, cache=cache)
    assert result.metrics.status == "ok"
    assert result.metrics.val_acc > 0.3


def test_init_rewinding_restores_surviving_weights_exactly(cache):
    task = small_task(pruning=PruningConfig(rate=0.5, rewind="init"), epochs=0.5)
    dense = train_run(task, seed=SEED, cycle=0, max_lr=0.05, cache=cache)
    # Zero training steps after the rewind: the cycle-1 weights are exactly init * mask.
    frozen = task.model_copy(update={"epochs": 1e-9})
    child = train_run(frozen, seed=SEED, cycle=1, max_lr=1e-12, parent=dense.state, cache=cache)
    data = load_data(task.data, seed=SEED, device="cpu", cache=cache)
    from silo.models import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        init = build_model(task.model, num_classes=data.num_classes, in_channels=data.in_channels)
    init_w = dict(init.named_parameters())
    for name, keep in child.state.mask.items():
        got = child.state.weights[name]
        # One SGD step at lr 1e-12 moves a weight by far less than float32 resolution of init.
        assert torch.allclose(got[keep], init_w[name].detach()[keep], rtol=0, atol=1e-9), name
        assert torch.all(got[~keep] == 0)
        assert not torch.allclose(dense.state.weights[name][keep], got[keep])


def test_early_rewinding_uses_the_dense_runs_step(cache):
    task = small_task(pruning=PruningConfig(rate=0.5, rewind="early:5"), epochs=0.5)
    dense = train_run(task, seed=SEED, cycle=0, max_lr=0.05, cache=cache)
    assert dense.state.rewind_weights is not None
    early = dense.state.rewind_weights
    assert any(not torch.equal(early[k], dense.state.weights[k]) for k in early)
    child = train_run(task.model_copy(update={"epochs": 1e-9}), seed=SEED, cycle=1, max_lr=1e-12,
                      parent=dense.state, cache=cache)
    for name, keep in child.state.mask.items():
        assert torch.allclose(child.state.weights[name][keep], early[name][keep], rtol=0, atol=1e-9)
    assert child.state.rewind_weights is early


def test_three_cycle_chain_on_mnist1d_well_above_chance(cache):
    task = small_task(data=DataConfig(name="mnist1d"), epochs=4,
                      shape=ShapeConfig(name="warmup_step", warmup="1ep", milestones=("3ep",)))
    results = run_chain(task, seed=0, cycles=3, peak=ListPeak((0.05, 0.05, 0.08)), cache=cache)
    assert [r.metrics.cycle for r in results] == [0, 1, 2]
    sparsities = [r.metrics.sparsity for r in results]
    assert sparsities == pytest.approx([0.0, 0.3, 1 - 0.7**2], abs=1e-3)
    assert all(r.metrics.status == "ok" for r in results)
    assert results[-1].metrics.val_acc > 0.5, results[-1].metrics  # chance is 0.1
    assert results[-1].metrics.test_acc > 0.5


def test_chain_matches_single_runs(cache):
    task = small_task(epochs=0.5)
    chain = run_chain(task, seed=1, cycles=2, peak=ConstantPeak(0.05), cache=cache)
    first = train_run(task, seed=1, cycle=0, max_lr=0.05, cache=cache)
    second = train_run(task, seed=1, cycle=1, max_lr=0.05, parent=first.state, cache=cache)
    assert chain[1].metrics.val_acc == second.metrics.val_acc
    assert chain[1].metrics.train_loss == second.metrics.train_loss


def test_bad_max_lr_and_missing_parent_raise(cache):
    task = small_task(epochs=0.1)
    with pytest.raises(ValueError, match="max_lr"):
        train_run(task, seed=0, cycle=0, max_lr=float("nan"), cache=cache)
    with pytest.raises(ValueError, match="parent"):
        train_run(task, seed=0, cycle=1, max_lr=0.1, cache=cache)


def test_prunable_excludes_bias_and_norm(cache):
    from silo.models import build_model

    model = build_model("resnet20", num_classes=10, in_channels=3)
    names = prunable_parameters(model)
    assert names and all(n.endswith("weight") for n in names)
    assert not any("bn" in n for n in names)
