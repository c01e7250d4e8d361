"""A fused round compiled (silo.accel's CompileCache over silo.round's step) is the same
computation as the round eager and as its runs trained one by one (float64).

The aot_eager backend captures the graphs that inductor would compile (dynamo and
AOTAutograd, where a refused fusion fails: fake tensors, functionalisation) without
generating C++, which takes minutes on 2 CPU cores; bench/gpu_check.py compiles with
inductor on the GPU."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from silo.accel import CompileCache, ExecutionConfig
from silo.round import train_round
from silo.train import train_run
from tests.silo.test_round import assert_same_run, synthetic, tiny_task

COMPILE = ExecutionConfig(compile="on")


def _three_ways(task, data, max_lrs, parent, compiled):
    kwargs = dict(seed=0, cycle=1, max_lrs=max_lrs, parent=parent, data=data)
    eager = train_round(task, mode="fused", **kwargs)
    sequential = train_round(task, mode="sequential", **kwargs)
    compiled_round = train_round(task, mode="fused", execution=COMPILE, compiled=compiled, **kwargs)
    return compiled_round, eager, sequential


@pytest.mark.filterwarnings("ignore:There is a performance drop")
@pytest.mark.parametrize("model, args, shape, max_lrs", [
    ("mnist1d_cnn", {"width": 8}, (1, 40), [0.02, 0.1, 0.3]),
    # ResNet-20's own blocks (BatchNorm under vmap, the strided shortcut), one per stage: the
    # graph that compiles is what matters, not its depth, which only costs compile time
    ("silo.models.resnet_cifar:CifarResNet", {"depth": 8}, (3, 8, 8), [0.02, 0.05]),
])
def test_compiled_fused_equals_eager_fused_equals_sequential(float64, model, args, shape, max_lrs):
    torch._dynamo.reset()
    task = tiny_task(model, args, steps=4, n_train=16)
    data = synthetic(shape, n_train=16)
    parent = train_run(task, seed=0, cycle=0, max_lr=0.05, data=data).state
    compiled = CompileCache(backend="aot_eager")
    counters.clear()
    fast, eager, sequential = _three_ways(task, data, max_lrs, parent, compiled)
    assert counters["stats"]["unique_graphs"] >= 1 and len(compiled) == 1  # the whole step, compiled
    for c, e, s in zip(fast, eager, sequential):
        assert_same_run(c, e)
        assert_same_run(c, s)
    # The next round of the process (another seed's parent) reuses the compiled step.
    graphs = counters["stats"]["unique_graphs"]
    other = train_run(task, seed=1, cycle=0, max_lr=0.05, data=data).state
    again = train_round(task, seed=1, cycle=1, max_lrs=max_lrs, parent=other, data=data, mode="fused",
                        execution=COMPILE, compiled=compiled)
    assert counters["stats"]["unique_graphs"] == graphs
    assert_same_run(again[0], train_run(task, seed=1, cycle=1, max_lr=max_lrs[0], parent=other, data=data))


def test_a_diverging_member_of_a_compiled_round_keeps_the_stack_and_the_graph(float64):
    torch._dynamo.reset()
    task = tiny_task("mnist1d_cnn", {"width": 8}, steps=48, n_train=16, batch_size=4)
    data = synthetic((1, 40), n_train=16)
    max_lrs = [0.02, 1e6, 0.05]  # the middle one diverges within the first check window
    compiled = CompileCache(backend="aot_eager")
    counters.clear()
    fast = train_round(task, seed=0, cycle=0, max_lrs=max_lrs, data=data, execution=COMPILE, compiled=compiled)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1
    sequential = train_round(task, seed=0, cycle=0, max_lrs=max_lrs, data=data, mode="sequential")
    assert [r.metrics.status for r in fast] == ["ok", "diverged", "ok"]
    for c, s in zip(fast[::2], sequential[::2]):  # the diverged member's weights are NaN in both
        assert_same_run(c, s)
    # After the divergence the stack kept its size: the same graph, not one per G.
    assert counters["stats"]["unique_graphs"] == graphs
    assert fast[1].metrics.steps == sequential[1].metrics.steps < 48
