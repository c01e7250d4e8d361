"""A round trained fused is the same computation as its runs trained one by one (float64)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from silo.accel import Accel
from silo.config import PruningConfig, ShapeConfig, TaskConfig
from silo.data import DataSplits
from silo.fused import FusedStack, fused_losses
from silo.models import MODELS
from silo.models.vgg import VGG
from silo.pruning import Mask
from silo.round import FusionUnsupported, train_round
from silo.train import train_run

TOL = 1e-10


def synthetic(input_shape: tuple[int, ...], *, n_train: int = 32, classes: int = 4, seed: int = 0) -> DataSplits:
    """Tiny seeded Gaussian data in the model-ready form (no prepare, no augment); another
    `seed` gives another data set (as each seed's own training order and val split would)."""
    g = torch.Generator().manual_seed(seed)
    dtype = torch.get_default_dtype()

    def x(k: int) -> torch.Tensor:
        return torch.randn(k, *input_shape, generator=g, dtype=dtype)

    def y(k: int) -> torch.Tensor:
        return torch.randint(0, classes, (k,), generator=g)

    return DataSplits(
        train_x=x(n_train), train_y=y(n_train), val_x=x(16), val_y=y(16), test_x=x(16), test_y=y(16),
        num_classes=classes, input_shape=input_shape, augment=None, prepare=None,
        train_index=torch.arange(n_train), val_index=torch.arange(16),
    )


def tiny_task(model: str, model_args: dict | None = None, *, optimizer: str = "sgd", steps: int = 4,
              batch_size: int = 8, n_train: int = 32, **changes) -> TaskConfig:
    base = dict(
        model=model, model_args=model_args or {}, epochs=steps * batch_size / n_train, batch_size=batch_size,
        optimizer={"name": optimizer}, shape=ShapeConfig(name="warmup_step", warmup=2, milestones=(3,)),
        pruning=PruningConfig(rate=0.3), label_smoothing=0.1, device="cpu",
    )
    base.update(changes)
    return TaskConfig(**base)


def assert_same_run(fused, alone, tol: float = TOL) -> None:
    """Weights and BatchNorm buffers within tol; accuracies, status and steps identical."""
    assert fused.metrics.status == alone.metrics.status
    assert fused.metrics.steps == alone.metrics.steps
    assert fused.metrics.val_acc == alone.metrics.val_acc
    assert fused.metrics.test_acc == alone.metrics.test_acc
    assert fused.metrics.sparsity == alone.metrics.sparsity
    if alone.metrics.status == "ok":
        assert abs(fused.metrics.train_loss - alone.metrics.train_loss) <= tol
    assert list(fused.state.weights) == list(alone.state.weights)
    for k, v in alone.state.weights.items():
        w = fused.state.weights[k]
        assert w.dtype == v.dtype, k
        if v.is_floating_point():
            assert (w - v).abs().max().item() <= tol, k
        else:  # num_batches_tracked
            assert torch.equal(w, v), k
    assert fused.state.mask == alone.state.mask
    assert fused.state.diverged == alone.state.diverged


def fused_vs_sequential(task, data, max_lrs, *, cycle: int = 1):
    """Both modes from the same pruned parent (a short dense run), member by member."""
    parent = train_run(task, seed=0, cycle=0, max_lr=max_lrs[0], data=data).state if cycle else None
    fused = train_round(task, seed=0, cycle=cycle, max_lrs=max_lrs, parent=parent, data=data, mode="fused")
    sequential = train_round(task, seed=0, cycle=cycle, max_lrs=max_lrs, parent=parent, data=data,
                             mode="sequential")
    assert [r.metrics.max_lr for r in fused] == list(max_lrs)
    return fused, sequential


LRS = {"sgd": [0.02, 0.1, 0.3], "adam": [1e-3, 3e-3, 1e-2], "rmsprop": [3e-4, 1e-3, 3e-3]}


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
@pytest.mark.parametrize("model, args", [("mnist1d_cnn", {"width": 8}), ("mnist1d_mlp", {"width": 16})])
def test_mnist1d_models_fused_equal_sequential_per_optimizer(float64, model, args, optimizer):
    task = tiny_task(model, args, optimizer=optimizer, steps=8)
    fused, sequential = fused_vs_sequential(task, synthetic((1, 40)), LRS[optimizer])
    assert fused[0].metrics.sparsity == pytest.approx(0.3, abs=0.01)  # trained on a pruned parent
    for f, s in zip(fused, sequential):
        assert_same_run(f, s)
    # The members really differ: equality above is not the equality of G copies.
    assert not torch.equal(fused[0].state.weights["classifier.weight" if "cnn" in model else "net.5.weight"],
                           fused[2].state.weights["classifier.weight" if "cnn" in model else "net.5.weight"])


def _tiny_vgg(*, num_classes: int, in_channels: int) -> nn.Module:
    # VGG-19-BN's own class with three conv stages instead of sixteen: 8x8 -> 1x1.
    return VGG((4, "M", 8, "M", 8, "M"), num_classes, in_channels)


# CIFAR-shaped networks on 8x8 inputs, two members, a few steps: small enough for a test.
# Deeper nets amplify rounding faster (chaotic at high lr), so their lrs stay moderate.
CIFAR_MODELS = [
    ("resnet20", {}, "sgd"),
    ("resnet20", {}, "adam"),
    ("densenet40", {"growth": 2}, "rmsprop"),
    ("vgg_tiny", {}, "sgd"),
    ("mobilenetv2", {"width_mult": 0.25}, "sgd"),
    ("vit_cifar", {"image_size": 8, "patch": 4, "dim": 8, "depth": 1, "heads": 2}, "adam"),
]


# vmap has no batching rule for CPU flash attention yet (ViT): a slower fallback, same values.
@pytest.mark.filterwarnings("ignore:There is a performance drop")
@pytest.mark.parametrize("model, args, optimizer", CIFAR_MODELS)
def test_cifar_models_fused_equal_sequential(float64, monkeypatch, model, args, optimizer):
    monkeypatch.setitem(MODELS, "vgg_tiny", _tiny_vgg)
    task = tiny_task(model, args, optimizer=optimizer, steps=3, n_train=16)
    lrs = {"sgd": [0.01, 0.05], "adam": [1e-3, 3e-3], "rmsprop": [1e-4, 3e-4]}[optimizer]
    fused, sequential = fused_vs_sequential(task, synthetic((3, 8, 8), n_train=16), lrs)
    for f, s in zip(fused, sequential):
        assert_same_run(f, s)
    bn = [k for k in fused[0].state.weights if k.endswith("num_batches_tracked")]
    assert bn or model == "vit_cifar"  # the one network here without BatchNorm
    # BatchNorm buffers were stacked and updated per member once per step: 3 steps of the
    # dense parent, whose buffers the child starts from, and 3 of the child.
    assert all(int(r.state.weights[k]) == 6 for k in bn for r in fused), [int(fused[0].state.weights[k]) for k in bn]


def test_a_members_loss_reaches_only_its_own_gradient(float64):
    # Adam: the step that differentiates with autograd.grad (SGD's whole step uses torch.func.grad).
    task = tiny_task("mnist1d_cnn", {"width": 8}, optimizer="adam")
    torch.manual_seed(0)
    model = MODELS["mnist1d_cnn"](num_classes=4, in_channels=1, width=8)
    members = FusedStack.copies(model, 3, task, Mask.ones(model),
                              Accel.for_run("fp32", None, model, torch.device("cpu"), fused=True))
    data = synthetic((1, 40))
    xb, yb = data.train_x[:8], data.train_y[:8]
    losses = fused_losses(model, members.params, members.buffers, xb, yb, task.label_smoothing, None, None)
    names = list(members.params)
    grads = torch.autograd.grad(losses[1], [members.params[n] for n in names])
    lone = nn.functional.cross_entropy(model.train()(xb), yb, label_smoothing=task.label_smoothing)
    lone_grads = torch.autograd.grad(lone, list(model.parameters()))
    for n, g, lg in zip(names, grads, lone_grads):
        assert torch.all(g[0] == 0) and torch.all(g[2] == 0), n
        assert (g[1] - lg).abs().max().item() <= TOL, n
        assert g[1].abs().max() > 0, n


def test_a_member_is_unaffected_by_the_others_values(float64):
    task = tiny_task("mnist1d_cnn", {"width": 8}, steps=8)
    data = synthetic((1, 40))
    a = train_round(task, seed=0, cycle=0, max_lrs=[0.05, 0.01], data=data)
    b = train_round(task, seed=0, cycle=0, max_lrs=[0.05, 0.3, 0.2], data=data)
    for k, v in a[0].state.weights.items():
        assert torch.equal(v, b[0].state.weights[k]), k


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_masked_weights_stay_exactly_zero_in_every_member(float64, optimizer):
    task = tiny_task("mnist1d_cnn", {"width": 8}, optimizer=optimizer, steps=8)
    data = synthetic((1, 40))
    parent = train_run(task, seed=0, cycle=0, max_lr=LRS[optimizer][1], data=data).state
    fused = train_round(task, seed=0, cycle=1, max_lrs=LRS[optimizer], parent=parent, data=data)
    mask = fused[0].state.mask
    assert mask.sparsity() > 0.25
    for result in fused:
        for name, keep in mask.items():
            w = result.state.weights[name]
            assert torch.all(w[~keep] == 0), name
            assert torch.all(w[keep] != 0), name  # the kept ones trained (weight decay, momentum)


def test_a_diverging_member_is_diverged_and_the_others_match_their_lone_runs(float64):
    task = tiny_task("mnist1d_cnn", {"width": 8}, steps=45, n_train=64, shape=ShapeConfig(name="constant"))
    data = synthetic((1, 40), n_train=64)
    lrs = [0.05, 1e4, 0.1]
    fused, sequential = fused_vs_sequential(task, data, lrs)
    assert [r.metrics.status for r in fused] == ["ok", "diverged", "ok"]
    bad = fused[1].metrics
    assert bad.val_acc == bad.test_acc == data.chance and math.isnan(bad.train_loss)
    assert bad.steps < fused[0].metrics.steps == 45  # dropped from the stack when caught
    assert fused[1].state.diverged and sequential[1].metrics.status == "diverged"
    # The diverging trajectory itself is chaotic (when it turns NaN depends on rounding); the
    # point is that the others are exactly their lone runs.
    for i in (0, 2):
        assert_same_run(fused[i], sequential[i])
    # A child of the diverged member is diverged without training, in both modes.
    for mode in ("fused", "sequential"):
        (child,) = train_round(task, seed=0, cycle=2, max_lrs=[0.05], parent=fused[1].state, data=data, mode=mode)
        assert child.metrics.status == "diverged" and child.metrics.steps == 0


def test_early_rewind_weights_are_each_members_own(float64):
    task = tiny_task("mnist1d_cnn", {"width": 8}, steps=8,
                     pruning=PruningConfig(rate=0.3, rewind="early:3"))
    fused, sequential = fused_vs_sequential(task, synthetic((1, 40)), [0.02, 0.2], cycle=0)
    for f, s in zip(fused, sequential):
        for k, v in s.state.rewind_weights.items():
            assert (f.state.rewind_weights[k] - v).abs().max().item() <= TOL, k
    assert not torch.equal(fused[0].state.rewind_weights["classifier.weight"],
                           fused[1].state.rewind_weights["classifier.weight"])


def _dropout_mlp(*, num_classes: int, in_channels: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 40, 8), nn.Dropout(0.5), nn.Linear(8, num_classes))


def test_a_model_that_cannot_be_fused_is_refused_and_trains_sequentially(monkeypatch):
    monkeypatch.setitem(MODELS, "dropout_mlp", _dropout_mlp)
    task = tiny_task("dropout_mlp", steps=2)
    data = synthetic((1, 40))
    with pytest.raises(FusionUnsupported, match="'2'.*Dropout.*sequential"):
        train_round(task, seed=0, cycle=0, max_lrs=[0.01, 0.1], data=data, mode="fused")
    results = train_round(task, seed=0, cycle=0, max_lrs=[0.01, 0.1], data=data, mode="sequential")
    assert [r.metrics.status for r in results] == ["ok", "ok"]


def test_bad_arguments_are_refused():
    task = tiny_task("mnist1d_mlp", {"width": 8})
    data = synthetic((1, 40))
    with pytest.raises(ValueError, match="mode"):
        train_round(task, seed=0, cycle=0, max_lrs=[0.1], data=data, mode="vmap")
    with pytest.raises(ValueError, match="empty"):
        train_round(task, seed=0, cycle=0, max_lrs=[], data=data)
    with pytest.raises(ValueError, match="max_lr"):
        train_round(task, seed=0, cycle=0, max_lrs=[0.1, float("nan")], data=data)


@pytest.mark.parametrize("mode", ["fused", "sequential"])
def test_progress_reports_each_members_epoch_loss(float64, mode):
    task = tiny_task("mnist1d_mlp", {"width": 8}, steps=8)  # 2 epochs of 4 steps
    reports: list[dict] = []
    results = train_round(task, seed=0, cycle=0, max_lrs=[0.01, 0.1], data=synthetic((1, 40)), mode=mode,
                          progress=reports.append)
    assert len(reports) == (2 if mode == "fused" else 4)  # per epoch of the round, or of each run
    assert all(r["total_steps"] == 8 for r in reports)
    last = {i: r["train_loss"][i] for r in reports for i in (0, 1) if r["train_loss"][i] is not None}
    for i, result in enumerate(results):
        assert abs(last[i] - result.metrics.train_loss) <= TOL
