"""Selective Weight Decay (silo.pruning.swd): the penalty against a hand computation, a(t),
the selection against prune_by_score, the cut at the end of a cycle (exact sparsity, the
evaluation after it), the pull towards zero on the smoke task, fused == sequential."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from silo.chain import run_chain
from silo.config import DataConfig, PruningConfig, ShapeConfig, SwdConfig, TaskConfig
from silo.data import DataSplits, load_data
from silo.models import build_model
from silo.pruning import Mask, prune_by_score, swd
from silo.round import train_round
from silo.train import evaluate_batches, train_run

TOL = 1e-10


# ----------------------------------------------------------------------------- a(t)


def test_a_starts_at_a_min_and_rises_geometrically_towards_a_max():
    T = 10
    assert swd.a_at(0, T, 0.1, 1e5) == 0.1  # the first step
    assert swd.a_at(T - 1, T, 0.1, 1e5) == pytest.approx(0.1 * 1e6 ** 0.9, rel=1e-12)  # the last
    assert swd.a_at(5, T, 0.1, 1e5) == pytest.approx(0.1 * 1e3, rel=1e-12)  # halfway: the geometric mean
    ratios = [swd.a_at(t + 1, T, 0.1, 1e5) / swd.a_at(t, T, 0.1, 1e5) for t in range(T - 1)]
    assert ratios == pytest.approx([1e6 ** (1 / T)] * (T - 1), rel=1e-12)
    assert swd.a_at(7, T, 3.0, 3.0) == 3.0  # a_min == a_max: a constant


# ----------------------------------------------------------------------------- the penalty


def _tiny() -> tuple[nn.Module, Mask]:
    """Two bias-free Linear layers with hand-set weights; layer 0's [1, 1] is pruned (zero)."""
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.5, -0.1], [0.3, 0.0]]))
        model[1].weight.copy_(torch.tensor([[-0.05, 0.08]]))
    mask = Mask({"0.weight": torch.tensor([[True, True], [True, False]]),
                 "1.weight": torch.tensor([[True, True]])})
    return model, mask


@pytest.mark.parametrize("criterion, selected, grads", [
    # 5 survivors, rate 0.4: the 2 smallest |w| overall are both in layer 1 ...
    ("global_magnitude", [-0.05, 0.08], {"0.weight": [[0, 0], [0, 0]], "1.weight": [[-0.05, 0.08]]}),
    # ... per layer, round(0.4 * 3) = 1 of layer 0 (-0.1) and round(0.4 * 2) = 1 of layer 1 (-0.05).
    ("layerwise_magnitude", [-0.1, -0.05], {"0.weight": [[0, -0.1], [0, 0]], "1.weight": [[-0.05, 0]]}),
])
def test_penalty_value_and_gradient_match_a_hand_computation(criterion, selected, grads):
    model, mask = _tiny()
    cfg = PruningConfig(strategy="swd", rate=0.4, swd=SwdConfig(a_min=1.0, a_max=100.0, criterion=criterion))
    decay = swd.SelectiveDecay(cfg, weight_decay=0.01, mask=mask, total_steps=4)
    # Steps 0 and 1 first: the step counter advances once per call.
    assert decay.of_model(model).item() == pytest.approx(0.5 * 1.0 * 0.01 * sum(w * w for w in selected))
    decay.of_model(model)
    penalty = decay.of_model(model)  # step t = 2: a = 1 * 100 ** (2 / 4) = 10
    a, mu = 10.0, 0.01
    assert penalty.item() == pytest.approx(0.5 * a * mu * sum(w * w for w in selected), rel=1e-6)
    penalty.backward()
    # d/dw of (a mu / 2) w^2 is a mu w: a(t) times the ordinary decay's gradient mu w.
    for name, g in grads.items():
        expected = a * mu * torch.tensor(g)
        assert torch.allclose(model.get_parameter(name).grad, expected, rtol=1e-6, atol=1e-9), name
    assert decay.t == 3


def test_selection_is_exactly_what_prune_by_score_would_remove():
    g = torch.Generator().manual_seed(0)
    shapes = {"a.weight": (6, 5), "b.weight": (4, 3, 3), "c.weight": (7,)}
    # Quantised weights: many exact ties in |w|, across layers and signs.
    stacked = {n: (torch.randint(-6, 7, (3, *s), generator=g) / 4.0) for n, s in shapes.items()}
    mask = Mask({n: torch.rand(s, generator=g) > 0.3 for n, s in shapes.items()})
    for n in stacked:
        stacked[n] = stacked[n] * mask[n]
    for criterion in ("global_magnitude", "layerwise_magnitude"):
        cfg = PruningConfig(strategy="swd", rate=0.35, swd=SwdConfig(criterion=criterion))
        chosen = swd.SelectiveDecay(cfg, 5e-4, mask, total_steps=10).select(stacked)
        for member in range(3):
            weights = {n: w[member] for n, w in stacked.items()}
            after = prune_by_score(mask, {n: w.abs() for n, w in weights.items()}, 0.35,
                                   per_layer=criterion == "layerwise_magnitude")
            assert after == swd.cut(weights, mask, cfg)
            for n, sel in zip(mask.names(), chosen):
                assert torch.equal(sel[member], mask[n] & ~after[n]), (criterion, member, n)


# ----------------------------------------------------------------------------- the cycle


def synthetic(n_train: int = 64, classes: int = 4) -> DataSplits:
    g = torch.Generator().manual_seed(0)
    dtype = torch.get_default_dtype()

    def x(k):
        return torch.randn(k, 1, 40, generator=g, dtype=dtype)

    def y(k):
        return torch.randint(0, classes, (k,), generator=g)

    return DataSplits(
        train_x=x(n_train), train_y=y(n_train), val_x=x(32), val_y=y(32), test_x=x(32), test_y=y(32),
        num_classes=classes, input_shape=(1, 40), augment=None, prepare=None,
        train_index=torch.arange(n_train), val_index=torch.arange(32),
    )


def tiny_task(strategy: str = "swd", *, steps: int = 8, batch_size: int = 8, n_train: int = 64,
              **pruning) -> TaskConfig:
    return TaskConfig(
        model="mnist1d_cnn", model_args={"width": 8}, epochs=steps * batch_size / n_train,
        batch_size=batch_size, shape=ShapeConfig(name="warmup_step", warmup=2, milestones=(6,)),
        pruning=PruningConfig(strategy=strategy, rate=0.3, **pruning), device="cpu",
    )


@pytest.mark.parametrize("criterion", ["global_magnitude", "layerwise_magnitude"])
def test_every_cycle_ends_at_the_sparsity_of_the_matching_strategy_exactly(criterion):
    data = synthetic()
    swd_task = tiny_task(swd=SwdConfig(criterion=criterion))
    results = run_chain(swd_task, seed=0, cycles=3, peak=lambda q: 0.05, data=data)
    reference = run_chain(tiny_task(criterion), seed=0, cycles=3, peak=lambda q: 0.05, data=data)
    assert [r.metrics.sparsity for r in results] == [r.metrics.sparsity for r in reference]
    assert results[0].metrics.sparsity == 0.0  # cycle 0: dense, nothing cut
    previous = results[0].state.mask
    for r in results[1:]:
        mask = r.state.mask
        assert r.metrics.status == "ok"
        # Exactly round(rate * survivors) of the parent's survivors go, overall or per layer.
        if criterion == "global_magnitude":
            assert mask.num_kept() == previous.num_kept() - round(0.3 * previous.num_kept())
        else:
            for n in mask.names():
                kept = int(previous[n].sum())
                assert int(mask[n].sum()) == kept - round(0.3 * kept), n
        for n, keep in mask.items():
            assert not (keep & ~previous[n]).any(), n  # nothing pruned grows back
            assert torch.all(r.state.weights[n][~keep] == 0), n  # cut weights are zeroed
        assert r.metrics.layer_sparsity == mask.layer_sparsity()
        previous = mask


@pytest.mark.parametrize("rewind", ["keep", "init", "reinit", "early:3"])
@pytest.mark.parametrize("criterion", ["global_magnitude", "layerwise_magnitude"])
def test_fused_equals_sequential_in_float64(float64, rewind, criterion):
    task = tiny_task(rewind=rewind, swd=SwdConfig(a_min=1.0, a_max=1e4, criterion=criterion))
    data = synthetic()
    dense = train_run(task, seed=0, cycle=0, max_lr=0.05, data=data).state
    lrs = [0.02, 0.05, 0.1]
    fused = train_round(task, seed=0, cycle=1, max_lrs=lrs, parent=dense, data=data, mode="fused")
    alone = train_round(task, seed=0, cycle=1, max_lrs=lrs, parent=dense, data=data, mode="sequential")
    masks = []
    for f, s in zip(fused, alone):
        assert f.metrics.status == s.metrics.status == "ok"
        assert f.metrics.sparsity == s.metrics.sparsity == pytest.approx(0.3, abs=0.01)  # layerwise rounds per layer
        assert (f.metrics.val_acc, f.metrics.test_acc) == (s.metrics.val_acc, s.metrics.test_acc)
        assert abs(f.metrics.train_loss - s.metrics.train_loss) <= TOL
        assert f.state.mask == s.state.mask
        for k, v in s.state.weights.items():
            assert (f.state.weights[k] - v).abs().max().item() <= TOL, k
        masks.append(f.state.mask)
    # Each member cut its own weights: different max_lr, different survivors.
    assert masks[0] != masks[2]


def test_a_diverged_swd_run_reports_the_cycles_target_sparsity(float64):
    task = tiny_task(steps=40)
    data = synthetic()
    dense = train_run(task, seed=0, cycle=0, max_lr=0.05, data=data).state
    for mode in ("fused", "sequential"):
        (bad,) = train_round(task, seed=0, cycle=1, max_lrs=[1e4], parent=dense, data=data, mode=mode)
        assert bad.metrics.status == "diverged"
        assert bad.metrics.sparsity == pytest.approx(0.3, abs=1e-3)


# ----------------------------------------------------------------------------- the smoke task


def test_on_the_smoke_task_the_cut_weights_are_near_zero_and_the_run_is_evaluated_after_the_cut(monkeypatch):
    task = TaskConfig(data=DataConfig(name="mnist1d", num_samples=1200), epochs=1,
                      shape=ShapeConfig(warmup="0.2ep", milestones=("0.8ep",)),
                      pruning=PruningConfig(strategy="swd", rate=0.2), device="cpu")
    data = load_data(task.data, seed=0, device=torch.device("cpu"))
    # The push is about lr * a(t) * weight_decay per step, and a smoke cycle is 13 steps: at the
    # smoke grid's top max_lr (0.3) the paper's a(t) pulls the cut weights 16-18x towards zero
    # (seeds 0-2), at 0.2 only 6x, at 0.1 under 3x. The learning rate is part of SWD's strength.
    dense = train_run(task, seed=0, cycle=0, max_lr=0.3, data=data)
    before_cut = {}
    real_cut = swd.cut

    def spy(weights, mask, config):  # records what the cut sees; the cut itself is the real one
        before_cut.update({n: w.detach().clone() for n, w in weights.items()})
        return real_cut(weights, mask, config)

    monkeypatch.setattr(swd, "cut", spy)
    run = train_run(task, seed=0, cycle=1, max_lr=0.3, parent=dense.state, data=data)
    start, end = dense.state, run.state  # rewind keep: the cycle starts from the parent's weights
    assert run.metrics.status == "ok" and run.metrics.sparsity == pytest.approx(0.2, abs=1e-3)
    removed = {n: start.mask[n] & ~end.mask[n] for n in end.mask.names()}
    norm_start = math.sqrt(sum(float(start.weights[n][r].square().sum()) for n, r in removed.items()))
    norm_cut = math.sqrt(sum(float(before_cut[n][r].square().sum()) for n, r in removed.items()))
    assert norm_cut > 0  # the cut zeroes them; before it they are small, not zero
    assert norm_start / norm_cut >= 10
    # The kept weights were not pulled: the penalty is selective.
    kept = {n: end.mask[n] for n in end.mask.names()}
    kept_start = math.sqrt(sum(float(start.weights[n][k].square().sum()) for n, k in kept.items()))
    kept_end = math.sqrt(sum(float(end.weights[n][k].square().sum()) for n, k in kept.items()))
    assert kept_end > 0.5 * kept_start
    # Evaluated after the cut: the stored (cut) weights give the reported accuracies.
    model = build_model(task.model, num_classes=data.num_classes, in_channels=data.in_channels)
    model.load_state_dict(end.weights)
    assert evaluate_batches(model, data.eval_batches("val", 1024)) == run.metrics.val_acc
    assert evaluate_batches(model, data.eval_batches("test", 1024)) == run.metrics.test_acc


def test_through_the_run_store_the_child_of_an_swd_run_starts_from_its_cut_mask(tmp_path):
    from oracle.store.identity import RunKey
    from oracle.store.runs import RunStore
    from oracle.sweep.execute import obtain_round, obtain_run

    task = TaskConfig(data=DataConfig(name="mnist1d", num_samples=1200), epochs=0.5,
                      pruning=PruningConfig(strategy="swd", rate=0.2), device="cpu")
    store = RunStore(tmp_path / "runs")
    dense = RunKey(task, seed=0, cycle=0, max_lr=0.1, parent_run_id=None)
    obtain_run(store, dense)
    members = [dense.next_cycle(v) for v in (0.05, 0.2)]
    cut = obtain_round(store, members, fuse="on")
    for key, (metrics, reused) in zip(members, cut):
        state = store.load_state(key.run_id)
        assert not reused and metrics["sparsity"] == state.mask.sparsity() == pytest.approx(0.2, abs=1e-3)
        for n, keep in state.mask.items():
            assert torch.all(state.weights[n][~keep] == 0), n
    child_key = members[1].next_cycle(0.2)
    child, _ = obtain_run(store, child_key)
    parent_mask, child_mask = store.load_state(members[1].run_id).mask, store.load_state(child_key.run_id).mask
    assert child["sparsity"] == pytest.approx(1 - 0.8 ** 2, abs=1e-3)
    assert child_mask.num_kept() == parent_mask.num_kept() - round(0.2 * parent_mask.num_kept())
    assert all(not (child_mask[n] & ~parent_mask[n]).any() for n in child_mask.names())
