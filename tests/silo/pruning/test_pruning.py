"""silo.pruning: prunable selection, masks, the step enforcer, and magnitude strategies."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from silo.pruning import (
    STRATEGIES,
    Mask,
    MaskedStep,
    PruneContext,
    get_strategy,
    global_magnitude,
    layerwise_magnitude,
    prunable_parameters,
    prune_once,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def conv_net(seed: int = 0) -> nn.Sequential:
    """Conv1d + BN + Linear: three prunable weights of different sizes, plus biases and BN."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv1d(1, 8, 3, padding=1),      # 0.weight: 24
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Conv1d(8, 16, 3, padding=1),     # 3.weight: 384
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(4),
        nn.Flatten(),
        nn.Linear(64, 10),                  # 8.weight: 640
    )


def batch(n: int = 32, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 20, generator=g), torch.randint(0, 10, (n,), generator=g)


def expected_survivors(n: int, rate: float, cycles: int) -> int:
    """The exact count the documented rule gives: each cycle removes round(rate * survivors)."""
    for _ in range(cycles):
        n -= round(rate * n)
    return n


# -- prunable selection ---------------------------------------------------------------

def test_prunable_are_conv_and_linear_weights_in_model_order():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv3d(4, 2, 1), nn.LayerNorm(2),
        nn.Flatten(), nn.Linear(2, 2), nn.GroupNorm(1, 2),
    )
    assert list(prunable_parameters(model)) == ["0.weight", "2.weight", "5.weight"]
    named = dict(model.named_parameters())
    for name, p in prunable_parameters(model).items():
        assert p is named[name]


def test_prunable_excludes_biases_and_batchnorm():
    names = list(prunable_parameters(conv_net()))
    assert names == ["0.weight", "3.weight", "8.weight"]
    assert not any(n.endswith("bias") for n in names)
    assert not any(n.startswith(("1.", "4.")) for n in names)  # the BatchNorm modules


def test_exclude_prefixes_match_whole_module_names():
    model = nn.ModuleDict({
        "layer1": nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)),
        "layer10": nn.Linear(2, 2),
        "fc": nn.Linear(2, 2),
    })
    assert list(prunable_parameters(model, exclude=("layer1",))) == ["layer10.weight", "fc.weight"]
    assert list(prunable_parameters(model, exclude=("layer1.0", "fc"))) == [
        "layer1.1.weight", "layer10.weight"]
    assert list(Mask.ones(model, exclude=("fc",))) == [
        "layer1.0.weight", "layer1.1.weight", "layer10.weight"]
    with pytest.raises(TypeError):
        prunable_parameters(model, exclude="fc")


def test_tied_weight_appears_once_under_its_canonical_name():
    a, b = nn.Linear(3, 3), nn.Linear(3, 3)
    b.weight = a.weight
    model = nn.Sequential(a, b)
    assert list(prunable_parameters(model)) == ["0.weight"]


# -- Mask -----------------------------------------------------------------------------

def test_counts_sparsity_and_layer_sparsity():
    a = torch.ones(10, dtype=torch.bool)
    a[:3] = False                        # 3 of 10 pruned
    b = torch.ones(2, 5, dtype=torch.bool)
    b[1] = False                         # 5 of 10 pruned
    c = torch.zeros(4, dtype=torch.bool)  # 4 of 4 pruned
    mask = Mask({"a": a, "b": b, "c": c})
    assert mask.num_total() == 24
    assert mask.num_kept() == 12
    assert mask.sparsity() == pytest.approx(0.5)
    assert mask.layer_sparsity() == pytest.approx({"a": 0.3, "b": 0.5, "c": 1.0})
    dense = Mask.ones(conv_net())
    assert dense.sparsity() == 0.0 and dense.num_total() == 24 + 384 + 640


def test_mask_rejects_non_bool_tensors():
    with pytest.raises(TypeError, match="bool"):
        Mask({"w": torch.ones(3)})


def test_apply_zeroes_exactly_the_pruned_weights():
    model = conv_net()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    mask = global_magnitude(model, Mask.ones(model), 0.5)
    mask.apply_(model)
    for n, p in model.named_parameters():
        if n in mask:
            assert torch.equal(p[~mask[n]], torch.zeros_like(p[~mask[n]]))
            assert torch.equal(p[mask[n]], before[n][mask[n]])
        else:
            assert torch.equal(p, before[n])  # biases and BN untouched


def test_save_load_round_trip_with_weights_only(tmp_path):
    model = conv_net()
    mask = global_magnitude(model, Mask.ones(model), 0.3)
    path = tmp_path / "mask.pt"
    mask.save(path)
    assert Mask.load(path) == mask
    raw = torch.load(path, weights_only=True)  # a plain dict of tensors, nothing pickled
    assert type(raw) is dict and all(t.dtype == torch.bool for t in raw.values())
    assert Mask.from_state_dict(raw) == mask
    assert [p.name for p in tmp_path.iterdir()] == ["mask.pt"]  # no temp file left behind
    mask.save(path)  # overwriting goes through os.replace too
    assert Mask.load(path) == mask
    assert Mask.load(path) != Mask.ones(model)


def test_failed_save_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    model = conv_net()
    path = tmp_path / "mask.pt"
    Mask.ones(model).save(path)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        global_magnitude(model, Mask.ones(model), 0.5).save(path)
    monkeypatch.undo()
    assert Mask.load(path) == Mask.ones(model)
    assert [p.name for p in tmp_path.iterdir()] == ["mask.pt"]


# -- strategies -----------------------------------------------------------------------

def pruned_for(strategy, device: str, cycles: int, rate: float) -> Mask:
    """The mask after `cycles` cycles of `strategy` at `rate` on a fresh conv_net."""
    model = conv_net().to(device)
    mask = Mask.ones(model)
    for _ in range(cycles):
        mask = strategy(model, mask, rate)
        mask.apply_(model)  # prune on pruned weights, as the cycles of a run do
    return mask


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cycles", [1, 2, 3, 4, 5])
def test_global_magnitude_sparsity_follows_the_rate(device, cycles):
    rate = 0.2
    mask = pruned_for(global_magnitude, device, cycles, rate)
    total = mask.num_total()
    pruned = total - mask.num_kept()
    assert abs(pruned - total * (1 - (1 - rate) ** cycles)) <= len(mask)
    assert mask.num_kept() == expected_survivors(total, rate, cycles)
    assert all(t.device.type == device for _, t in mask.items())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cycles", [1, 2, 3, 4, 5])
def test_layerwise_magnitude_sparsity_follows_the_rate_in_every_layer(device, cycles):
    rate = 0.2
    mask = pruned_for(layerwise_magnitude, device, cycles, rate)
    for name, t in mask.items():
        pruned = t.numel() - int(t.sum())
        assert abs(pruned - t.numel() * (1 - (1 - rate) ** cycles)) <= 1, name
        assert int(t.sum()) == expected_survivors(t.numel(), rate, cycles), name


def test_global_differs_from_layerwise_when_layer_scales_differ():
    model = conv_net()
    with torch.no_grad():
        model[8].weight.abs_().add_(10.0)  # every classifier weight beats every conv weight
    g = global_magnitude(model, Mask.ones(model), 0.3)  # 314 to remove, 408 conv weights
    lw = layerwise_magnitude(model, Mask.ones(model), 0.3)
    assert g.layer_sparsity()["8.weight"] == 0.0  # global takes the small conv weights first
    assert g.num_total() - g.num_kept() == round(0.3 * g.num_total())
    assert lw.layer_sparsity()["8.weight"] == pytest.approx(0.3)


@pytest.mark.parametrize("device", DEVICES)
def test_global_magnitude_removes_exactly_the_smallest_surviving(device):
    model = conv_net(seed=3).to(device)
    start = global_magnitude(model, Mask.ones(model), 0.4)  # do not zero: scoring must skip them
    new = global_magnitude(model, start, 0.25)
    params = dict(model.named_parameters())
    # Reference in the test: sort the surviving |w| of all layers together.
    surviving = torch.cat([params[n].detach().abs()[start[n]].cpu() for n in start])
    k = round(0.25 * surviving.numel())
    threshold = surviving.sort().values[k - 1]
    removed_now = torch.cat([params[n].detach().abs()[start[n] & ~new[n]].cpu() for n in start])
    kept = torch.cat([params[n].detach().abs()[new[n]].cpu() for n in start])
    assert removed_now.numel() == k
    assert torch.equal(removed_now.sort().values, surviving.sort().values[:k])
    assert kept.min() > threshold


def test_previously_pruned_weights_stay_pruned_and_are_not_recounted():
    model = conv_net()
    # Prune the LARGEST weights by hand, without zeroing them: a strategy that re-scored
    # them would revive them; one that counted zeros as survivors would remove too few.
    w = {n: p.detach().abs() for n, p in prunable_parameters(model).items()}
    start = Mask({n: t < t.flatten().quantile(0.7) for n, t in w.items()})
    new = global_magnitude(model, start, 0.5)
    for n in start:
        assert not (new[n] & ~start[n]).any(), n  # nothing revived
    assert new.num_kept() == start.num_kept() - round(0.5 * start.num_kept())
    # Same with the pruned weights zeroed: zeros are already gone, not the smallest survivors.
    start.apply_(model)
    new = global_magnitude(model, start, 0.5)
    assert new.num_kept() == start.num_kept() - round(0.5 * start.num_kept())
    assert all(not (new[n] & ~start[n]).any() for n in start)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_input_mask_and_model_are_not_modified(strategy):
    model = conv_net()
    mask = global_magnitude(model, Mask.ones(model), 0.2)
    snapshot = mask.clone()
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    context = PruneContext([batch(8)], nn.functional.cross_entropy)  # for global_gradient
    new = get_strategy(strategy)(model, mask, 0.3, context)
    assert mask == snapshot
    assert new != mask and new is not mask
    assert all(new[n] is not mask[n] for n in mask)
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())


def test_ties_remove_exactly_the_target_count_deterministically():
    model = conv_net()
    with torch.no_grad():
        for p in prunable_parameters(model).values():
            p.fill_(0.5)  # every score equal
    a = global_magnitude(model, Mask.ones(model), 0.2)
    b = global_magnitude(model, Mask.ones(model), 0.2)
    assert a.num_total() - a.num_kept() == round(0.2 * a.num_total())
    assert a == b
    lw = layerwise_magnitude(model, Mask.ones(model), 0.2)
    for _name, t in lw.items():
        assert t.numel() - int(t.sum()) == round(0.2 * t.numel())


def test_fraction_edges_and_bad_fractions():
    model = conv_net()
    dense = Mask.ones(model)
    assert global_magnitude(model, dense, 0.0) == dense
    assert global_magnitude(model, dense, 1.0).num_kept() == 0
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError):
            global_magnitude(model, dense, bad)


def test_unknown_strategy_error_lists_known_names():
    with pytest.raises(ValueError) as err:
        get_strategy("random_magic")
    message = str(err.value)
    assert "random_magic" in message
    for name in ("global_magnitude", "layerwise_magnitude"):
        assert name in message
    assert get_strategy("global_magnitude") is global_magnitude


def test_prune_once_reads_the_pruning_config():
    from silo.config import PruningConfig

    model = conv_net()
    cfg = PruningConfig(strategy="layerwise_magnitude", rate=0.5, exclude=("8",))
    mask = prune_once(model, Mask.ones(model, exclude=cfg.exclude), cfg)
    assert list(mask) == ["0.weight", "3.weight"]
    assert mask.layer_sparsity() == pytest.approx({"0.weight": 0.5, "3.weight": 0.5})
    with pytest.raises(ValueError, match="global_magnitude"):
        prune_once(model, mask, PruningConfig(strategy="nope"))


# -- MaskedStep -----------------------------------------------------------------------

def _train(model: nn.Module, mask: Mask, enforce: bool, steps: int = 50) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    step = MaskedStep(model, mask)
    x, y = batch()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if enforce:
            step()


def test_masked_step_keeps_pruned_weights_exactly_zero_through_momentum_and_decay():
    model = conv_net()
    mask = global_magnitude(model, Mask.ones(model), 0.6)
    mask.apply_(model)
    kept_before = {n: p.detach()[mask[n]].clone() for n, p in prunable_parameters(model).items()}
    _train(model, mask, enforce=True)
    for n, p in prunable_parameters(model).items():
        assert torch.count_nonzero(p.detach()[~mask[n]]) == 0, n
        assert not torch.equal(p.detach()[mask[n]], kept_before[n]), n  # training did happen


def test_without_masked_step_pruned_weights_drift_off_zero():
    model = conv_net()
    mask = global_magnitude(model, Mask.ones(model), 0.6)
    mask.apply_(model)
    _train(model, mask, enforce=False)
    for n, p in prunable_parameters(model).items():
        assert torch.count_nonzero(p.detach()[~mask[n]]) > 0, n


def test_masked_step_skips_dense_tensors_and_matches_param_dtype():
    model = conv_net().double()
    mask = layerwise_magnitude(model, Mask.ones(model, exclude=("8",)), 0.5)
    mask = Mask({**mask.state_dict(), "3.weight": torch.ones_like(mask["3.weight"])})
    step = MaskedStep(model, mask)
    assert [p is model[0].weight for p in step.params] == [True]  # 3.weight is dense: no work
    assert all(m.dtype == torch.float64 for m in step.masks)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    step()
    assert torch.equal(model[0].weight.detach() != 0, mask["0.weight"])
    MaskedStep(model, Mask.ones(model))()  # dense: a no-op that must not fail
