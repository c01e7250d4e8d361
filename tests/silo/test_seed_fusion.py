"""Seeds fused (execution.fuse_seeds): one stack trains the rounds of several seeds of a
cycle, each member with its own seed's batches, parent weights and mask. Each member is its
lone run, in float64 to 1e-10 (silo.round.train_shares)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from silo.data import DataSplits
from silo.round import Share, train_shares
from silo.train import train_run
from tests.silo.test_round import assert_same_run, synthetic, tiny_task


def seed_data(seed: int, input_shape=(1, 40)) -> DataSplits:
    """Each seed its own data: its own training set and validation split, as load_data's."""
    return synthetic(input_shape, n_train=16, seed=100 + seed)


def _parents(task, datas: dict[int, DataSplits]) -> dict:
    return {s: train_run(task, seed=s, cycle=0, max_lr=0.05, data=d).state for s, d in datas.items()}


@pytest.mark.filterwarnings("ignore:There is a performance drop")
@pytest.mark.parametrize("model, args, shape, optimizer", [
    ("mnist1d_cnn", {"width": 8}, (1, 40), "sgd"),
    ("mnist1d_cnn", {"width": 8}, (1, 40), "adam"),
    ("resnet20", {}, (3, 8, 8), "sgd"),
])
def test_each_member_of_a_seeds_fused_round_is_its_lone_run(float64, model, args, shape, optimizer):
    task = tiny_task(model, args, steps=4, n_train=16, optimizer=optimizer)
    datas = {s: seed_data(s, shape) for s in (3, 4)}
    parents = _parents(task, datas)
    # Unequal shares (a member of seed 4 came from the store): 2 values x seed 3, 1 x seed 4.
    lrs = {3: [0.02, 0.05], 4: [0.03]} if optimizer == "sgd" else {3: [1e-3, 3e-3], 4: [2e-3]}
    shares = [Share(s, lrs[s], parents[s], datas[s]) for s in (3, 4)]
    fused = train_shares(task, cycle=1, shares=shares, mode="fused")
    assert [len(r) for r in fused] == [2, 1]
    masks = set()
    for share, results in zip(shares, fused):
        for lr, result in zip(share.max_lrs, results):
            assert (result.metrics.seed, result.metrics.max_lr) == (share.seed, lr)
            lone = train_run(task, seed=share.seed, cycle=1, max_lr=lr, parent=share.parent, data=share.data)
            assert_same_run(result, lone)
            masks.add(tuple(torch.cat([m.flatten() for _, m in result.state.mask.items()]).tolist()))
    assert len(masks) == 2  # the seeds pruned differently: each member kept its own seed's mask


def test_a_diverging_member_of_a_seeds_fused_round_ends_diverged_and_the_others_go_on(float64):
    task = tiny_task("mnist1d_cnn", {"width": 8}, steps=48, n_train=16, batch_size=4)
    datas = {s: seed_data(s) for s in (0, 1)}
    shares = [Share(0, [0.02, 1e6]), Share(1, [0.05])]
    shares = [Share(s.seed, s.max_lrs, None, datas[s.seed]) for s in shares]
    fused = train_shares(task, cycle=0, shares=shares, mode="fused")
    assert [[r.metrics.status for r in rs] for rs in fused] == [["ok", "diverged"], ["ok"]]
    assert fused[0][1].metrics.steps < 48 and fused[0][0].metrics.steps == 48
    assert_same_run(fused[0][0], train_run(task, seed=0, cycle=0, max_lr=0.02, data=datas[0]))
    assert_same_run(fused[1][0], train_run(task, seed=1, cycle=0, max_lr=0.05, data=datas[1]))


def test_a_seed_whose_parent_diverged_trains_nothing_and_the_other_seed_trains(float64):
    task = tiny_task("mnist1d_cnn", {"width": 8}, steps=4, n_train=16)
    datas = {s: seed_data(s) for s in (0, 1)}
    good = train_run(task, seed=0, cycle=0, max_lr=0.05, data=datas[0]).state
    bad = replace(train_run(task, seed=1, cycle=0, max_lr=0.05, data=datas[1]).state, diverged=True)
    fused = train_shares(task, cycle=1, shares=[Share(0, [0.02], good, datas[0]), Share(1, [0.02], bad, datas[1])],
                         mode="fused")
    assert fused[1][0].metrics.status == "diverged" and fused[1][0].metrics.steps == 0
    assert_same_run(fused[0][0], train_run(task, seed=0, cycle=1, max_lr=0.02, parent=good, data=datas[0]))
