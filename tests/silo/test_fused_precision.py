"""bf16 and fp16 in fused rounds (silo.fused_precision, silo.stacked_optim.StackedGradScaler).

bf16 changes rounding, and a ResNet's bf16 rounding amplifies over steps as between two
GPUs, so a fused bf16 member is judged against its lone bf16 run relative to what bf16
itself changes (its distance to the fp32 run), over few steps; the explicit casts must
never touch fp32 rounds, which stay exactly their lone runs in float64 (test_round)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from oracle.sweep.execute import round_mode_why
from silo.accel import Accel
from silo.fused import FusedStack
from silo.fused_precision import MatrixOpDtypes
from silo.pruning import Mask
from silo.round import FusionUnsupported, check_fusable_on, train_round
from silo.stacked_optim import StackedGradScaler, StackedOptimizer
from silo.train import train_run
from tests.silo.test_round import synthetic, tiny_task


def _members(model: nn.Module, precision: str, count: int = 2) -> FusedStack:
    task = tiny_task("mnist1d_cnn", {"width": 4}, precision=precision)
    return FusedStack.copies(model, count, task, Mask({}), Accel.for_run(precision, None, model, torch.device("cpu"),
                                                                       fused=True))


@pytest.mark.parametrize("model, args, shape", [("mnist1d_cnn", {"width": 4}, (1, 40)), ("resnet20", {}, (3, 8, 8))])
def test_a_fused_bf16_step_runs_its_convolutions_and_matrix_products_in_bf16(model, args, shape):
    from silo.models import MODELS

    net = MODELS[model](num_classes=4, in_channels=shape[0], **args)
    data = synthetic(shape)
    xb, yb = data.train_x[:8], data.train_y[:8]
    members = _members(net, "bf16")
    with MatrixOpDtypes() as ops:
        losses = members.train_step([(xb, yb)], torch.tensor([0.01, 0.02]))
    convs = [d for name, d in ops.seen if name == "convolution"]
    assert len(convs) >= 3 and ops.seen  # forward and backward convolutions were recorded
    # Forward and backward alike: autocast's casts, made by hand, reach every one of them.
    assert ops.not_in(torch.bfloat16) == [], ops.not_in(torch.bfloat16)[:3]
    assert losses.dtype == torch.float32 and bool(torch.isfinite(losses).all())  # the loss in float32
    # The master weights and BatchNorm's running statistics stay float32.
    assert all(p.dtype == torch.float32 for p in members.params.values())
    assert all(b.dtype == torch.float32 for b in members.buffers.values() if b.is_floating_point())
    running = [b for n, b in members.buffers.items() if n.endswith("running_mean")]
    assert running and all(bool((r != 0).any()) for r in running)  # the stats updated under vmap
    # fp32 members run no cast at all.
    with MatrixOpDtypes() as ops32:
        _members(copy.deepcopy(net), "fp32").train_step([(xb, yb)], torch.tensor([0.01, 0.02]))
    assert ops32.seen and ops32.not_in(torch.float32) == []


def _weight_distance(a, b) -> float:
    """Relative L2 distance between two runs' conv/linear weights."""
    keys = [k for k, v in b.state.weights.items() if v.dim() > 1]
    num = sum(((a.state.weights[k] - b.state.weights[k]) ** 2).sum() for k in keys)
    return float((num / sum((b.state.weights[k] ** 2).sum() for k in keys)).sqrt())


def test_fused_bf16_members_are_their_lone_bf16_runs_and_keep_masks_exact():
    data = synthetic((1, 40))
    lrs = [0.01, 0.03]
    runs = {}
    for precision in ("fp32", "bf16"):
        task = tiny_task("mnist1d_cnn", {"width": 4}, steps=3, precision=precision)
        parent = train_run(task.model_copy(update={"precision": "fp32"}), seed=0, cycle=0, max_lr=0.02,
                           data=data).state
        for mode in ("fused", "sequential"):
            runs[precision, mode] = train_round(task, seed=0, cycle=1, max_lrs=lrs, parent=parent, data=data,
                                                mode=mode)
    for g in range(len(lrs)):
        fused, lone, lone32 = runs["bf16", "fused"][g], runs["bf16", "sequential"][g], runs["fp32", "sequential"][g]
        assert fused.metrics.status == lone.metrics.status == "ok"
        # What bf16 changes (lone bf16 vs lone fp32) is the scale: a fused bf16 member is
        # much closer to its lone bf16 run than that (measured 30-45x after 3 steps; a fused
        # step left in float32, the old path, is as far as the fp32 run, ratio ~1).
        bf16_effect = _weight_distance(lone, lone32)
        assert bf16_effect > 1e-4  # bf16 really changed the lone run
        assert _weight_distance(fused, lone) <= 0.2 * bf16_effect, (g, _weight_distance(fused, lone), bf16_effect)
        # The loss reads bf16 logits: within bf16's rounding of it (2**-8 relative).
        assert abs(fused.metrics.train_loss - lone.metrics.train_loss) <= 2**-8 * lone.metrics.train_loss
        # Pruned weights exactly zero, master weights float32.
        weights = fused.state.weights
        assert fused.state.mask == lone.state.mask
        assert all(bool((weights[n][~keep] == 0).all()) for n, keep in fused.state.mask.items())
        assert all(w.dtype == torch.float32 for w in weights.values() if w.is_floating_point())


class _OwnMatmul(nn.Module):
    """A model that multiplies by its own float32 parameter: autocast casts that matmul in a
    lone run; the fused step's layer casts cannot see it."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Parameter(torch.randn(40, 8) * 0.1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.matmul(x.flatten(1), self.proj))


def test_a_matrix_product_the_casts_miss_makes_the_round_sequential_saying_why():
    data = synthetic((1, 40))
    task = tiny_task("mnist1d_mlp", {"width": 8}, steps=2, precision="bf16")
    members = _members(_OwnMatmul(), "bf16")
    with pytest.raises(FusionUnsupported, match=r"cannot fuse _OwnMatmul in bf16: 1 of 2 convolutions and matrix "
                                                r"products would run fused outside bfloat16 \(first: bmm on float32"):
        members.check_precision([(data.train_x[:8], data.train_y[:8])])
    # The driver's probe of a model by import path says so before anything trains.
    with pytest.raises(FusionUnsupported, match="cannot fuse _OwnMatmul in bf16"):
        check_fusable_on(_OwnMatmul(), task, data.train_x[:8], data.train_y[:8])
    check_fusable_on(_OwnMatmul(), task.model_copy(update={"precision": "fp32"}), data.train_x[:8],
                     data.train_y[:8])  # in fp32 nothing is cast: it fuses
    # The registered models fuse: the check passes on the first batch of a real round.
    rounds = train_round(task, seed=0, cycle=0, max_lrs=[0.05, 0.1], data=data, mode="fused")
    assert [r.metrics.status for r in rounds] == ["ok", "ok"]


def test_round_mode_why_says_bf16_fuses_where_fp32_does():
    task = tiny_task("mnist1d_cnn", {"width": 4}, steps=2, precision="bf16")
    assert round_mode_why("auto", task, "cuda") == ("fused", "auto: on CUDA; bf16 cast explicitly in the fused step")
    assert round_mode_why("auto", task, "cpu") == (
        "fused", "auto: measured faster fused on a CPU; bf16 cast explicitly in the fused step")
    fp32 = task.model_copy(update={"precision": "fp32"})
    assert round_mode_why("auto", fp32, "cuda") == ("fused", "auto: on CUDA")
    resnet = tiny_task("resnet20", {}, precision="bf16")
    assert round_mode_why("auto", resnet, "cpu")[0] == "sequential"  # as fp32 on a CPU
    assert round_mode_why("off", task, "cuda") == ("sequential", "execution.fuse: off")


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
def test_stacked_grad_scaler_is_a_grad_scaler_per_member(float64, optimizer):
    """fp16 needs CUDA, but the scaler's arithmetic is device-free: G lone torch GradScalers
    (on the CPU) with their optimizers against one StackedGradScaler, on the same gradients
    with overflows planted in some members' steps only."""
    from silo.step import make_optimizer

    task = tiny_task("mnist1d_mlp", {"width": 8}, optimizer=optimizer)
    cfg = task.optimizer.model_copy(update={"weight_decay": 1e-3, "momentum": 0.9 if optimizer != "adam" else 0.0})
    task = task.model_copy(update={"optimizer": cfg})
    g = torch.Generator().manual_seed(0)
    count, shape, steps = 3, (4, 5), 6
    start = torch.randn(count, *shape, generator=g)
    lrs = torch.tensor([0.01, 0.02, 0.05])
    overflow = {(1, 0), (1, 2), (3, 1), (4, 1)}  # (step, member) whose gradient is inf
    grads = [torch.randn(count, *shape, generator=g) for _ in range(steps)]
    lone = []
    for m in range(count):
        p = nn.Parameter(start[m].clone())
        opt = make_optimizer(task, [p], float(lrs[m]))
        scaler = torch.amp.GradScaler("cpu", growth_interval=2)
        for t in range(steps):
            opt.zero_grad()
            scaler.scale((p * grads[t][m]).sum()).backward()  # d loss / dp = grads[t][m], scaled
            if (t, m) in overflow:
                p.grad[0, 0] = float("inf")
            scaler.step(opt)
            scaler.update()
        lone.append((p.detach(), scaler.get_scale()))
    stacked = start.clone()
    opt = StackedOptimizer(task.optimizer, 1)
    scaler = StackedGradScaler(count, torch.amp.GradScaler("cpu", growth_interval=2), torch.device("cpu"))
    for t in range(steps):
        grad = grads[t] * scaler.scale.to(grads[t].dtype).view(-1, 1, 1)
        for (s, m) in overflow:
            if s == t:
                grad[m, 0, 0] = float("inf")
        skip = scaler.unscale([grad])
        scaler.update(skip)
        opt.step([stacked], [grad], lrs.to(stacked.dtype), skip)
    for m, (p, scale) in enumerate(lone):
        assert (stacked[m] - p).abs().max().item() <= 1e-12, m
        assert scaler.scale[m].item() == scale, m
    assert len(set(scaler.scale.tolist())) > 1  # members' scales really went their own ways
