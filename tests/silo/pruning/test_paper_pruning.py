"""The SILO paper's other pruning methods: global gradient, Lookahead (LAP) and structured
filter pruning by L1 norm, checked against hand-computed scores and masks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from silo.pruning import STRATEGIES, Mask, PruneContext, get_strategy, global_magnitude
from silo.pruning.strategies import (
    filter_l1,
    global_gradient,
    gradient_scores,
    lookahead,
    lookahead_scores,
)


def test_registered():
    for name in ("global_gradient", "lookahead", "filter_l1"):
        assert name in STRATEGIES and get_strategy(name) is STRATEGIES[name]


# ----------------------------------------------------------------------------- gradient


def hand_layer() -> nn.Sequential:
    layer = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [4.0, 0.25, -1.0]]))
    return nn.Sequential(layer)


def test_gradient_scores_are_w_times_the_hand_computed_mean_gradient():
    model = hand_layer()
    # loss = sum(out * y): dL/dW[j, k] = sum_b y[b, j] * x[b, k], averaged over the 2 batches.
    x1, y1 = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[1.0, 0.0]])
    x2, y2 = torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]]), torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    # By hand, y^T x per batch: [[1, 2, 3], [0, 0, 0]] and [[2, 0, 0], [2, 2, -2]]; mean:
    grad = torch.tensor([[1.5, 1.0, 1.5], [1.0, 1.0, -1.0]])
    w = model[0].weight.detach().clone()
    expected = torch.tensor([[1.5, 2.0, 0.75], [4.0, 0.25, 1.0]])  # |w * grad|
    assert torch.equal((w * grad).abs(), expected)
    context = PruneContext([(x1, y1), (x2, y2)], lambda out, y: (out * y).sum())
    mask = Mask.ones(model)
    scores = gradient_scores(model, mask, context)
    assert torch.allclose(scores["0.weight"], expected)
    # Remove 3 of 6: the smallest |w * g| (0.25, 0.75, 1.0), which is not what the smallest |w|
    # (0.25, 0.5, then the first 1.0 in flat order) removes.
    new = global_gradient(model, mask, 0.5, context)
    assert new["0.weight"].tolist() == [[True, True, False], [True, False, False]]
    magnitude = global_magnitude(model, mask, 0.5)
    assert magnitude["0.weight"].tolist() == [[False, True, False], [True, False, True]]


def test_gradient_pruning_leaves_model_grads_mode_and_buffers_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5))
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    context = PruneContext([(torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,)))], F.cross_entropy)
    new = global_gradient(model, Mask.ones(model), 0.2, context)
    assert new.sparsity() == pytest.approx(0.2, abs=1e-3)
    assert not model.training and not model[1].training
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # BN stats too
    assert all(p.grad is None for p in model.parameters())


def test_gradient_pruning_needs_a_context():
    with pytest.raises(ValueError, match="PruneContext"):
        global_gradient(hand_layer(), Mask.ones(hand_layer()), 0.2)
    with pytest.raises(ValueError, match="no batches"):
        global_gradient(hand_layer(), Mask.ones(hand_layer()), 0.2, PruneContext([], F.cross_entropy))


# ----------------------------------------------------------------------------- lookahead


def mlp() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))


def test_lookahead_matches_hand_computed_scores_on_a_3_layer_mlp():
    model = mlp()
    mask = Mask.ones(model)
    mask["2.weight"][0, 1] = False  # a pruned weight counts as 0 in the neighbours' norms
    mask.apply_(model)
    w1, w2, w3 = (model[i].weight.detach() for i in (0, 2, 4))
    expected = {
        "0.weight": torch.zeros(3, 4), "2.weight": torch.zeros(3, 3), "4.weight": torch.zeros(2, 3),
    }
    for j in range(3):
        for k in range(4):  # first layer: no previous layer (factor 1); next is W2
            expected["0.weight"][j, k] = abs(w1[j, k]) * w2[:, j].norm()
        for k in range(3):  # middle: ||W1[k, :]|| (into neuron k) * ||W3[:, j]|| (out of j)
            expected["2.weight"][j, k] = abs(w2[j, k]) * w1[k, :].norm() * w3[:, j].norm()
    for j in range(2):
        for k in range(3):  # last: previous is W2, no next layer
            expected["4.weight"][j, k] = abs(w3[j, k]) * w2[k, :].norm()
    scores = lookahead_scores(model, mask)
    for name in expected:
        assert torch.allclose(scores[name], expected[name]), name
    assert scores["2.weight"][0, 1] == 0

    # Layer-wise: the lowest-scoring 1/3 of every layer's survivors go.
    new = lookahead(model, mask, 1 / 3)
    for name, score in expected.items():
        alive = mask[name]
        n_remove = round(int(alive.sum()) / 3)
        cut = score[alive].sort().values[n_remove - 1]
        assert int((alive & ~new[name]).sum()) == n_remove
        assert (score[alive & ~new[name]] <= cut).all() and (score[new[name]] >= cut).all()


def reference_lookahead(weights: list[torch.Tensor], groups: list[int], flatten_at: int | None) -> list[torch.Tensor]:
    """Per-element loops over a chain: conv layers (out, in/g, kh, kw) with groups, and a
    Linear layer after a channel-major flatten at index `flatten_at`."""
    out = []
    for i, w in enumerate(weights):
        s = torch.zeros_like(w)
        g = groups[i]
        for j in range(w.shape[0]):
            for kl in range(w.shape[1]):
                k = (j // (w.shape[0] // g)) * w.shape[1] + kl  # global input channel
                before = 1.0
                if i > 0:
                    prev = weights[i - 1]
                    c = k // (w.shape[1] // prev.shape[0]) if i == flatten_at else k
                    before = prev[c].norm()
                after = 1.0
                if i + 1 < len(weights):
                    nxt, ng = weights[i + 1], groups[i + 1]
                    if i + 1 == flatten_at:
                        span = nxt.shape[1] // w.shape[0]
                        after = nxt[:, j * span : (j + 1) * span].norm()
                    else:
                        per = nxt.shape[1]
                        grp, local = j // per, j % per
                        rows = nxt.shape[0] // ng
                        after = nxt[grp * rows : (grp + 1) * rows, local].norm()
                s[j, kl] = w[j, kl].abs() * before * after
        out.append(s)
    return out


def test_lookahead_handles_depthwise_convs_and_a_flatten_into_linear():
    torch.manual_seed(5)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.ReLU(),  # depthwise
        nn.Conv2d(4, 6, 1, groups=2), nn.ReLU(),  # grouped 1x1
        nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(6 * 4, 5),
    )
    model(torch.randn(1, 2, 4, 4))  # it runs
    mask = Mask.ones(model)
    scores = lookahead_scores(model, mask)
    names = ["0.weight", "2.weight", "4.weight", "8.weight"]
    weights = [dict(model.named_parameters())[n].detach() for n in names]
    expected = reference_lookahead(weights, [1, 4, 2, 1], flatten_at=3)
    for name, e in zip(names, expected):
        assert torch.allclose(scores[name], e, rtol=1e-5), name


def test_lookahead_uses_factor_one_where_layers_do_not_connect():
    # 4 -> 3 then a layer expecting 5 inputs (as after a concatenation): no neighbour factor.
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(5, 2))
    scores = lookahead_scores(model, Mask.ones(model))
    assert torch.allclose(scores["0.weight"], model[0].weight.detach().abs())
    assert torch.allclose(scores["1.weight"], model[1].weight.detach().abs())


# ----------------------------------------------------------------------------- filter_l1


def conv_stack() -> nn.Sequential:
    torch.manual_seed(7)
    return nn.Sequential(
        nn.Conv2d(3, 10, 3), nn.BatchNorm2d(10), nn.ReLU(),
        nn.Conv2d(10, 10, 3, groups=10), nn.ReLU(),  # depthwise: a filter is one channel
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 4),  # the last layer: the classifier
    )


def test_filter_l1_masks_whole_filters_by_l1_norm_and_spares_the_classifier():
    model = conv_stack()
    dense = Mask.ones(model)
    new = filter_l1(model, dense, 0.3)
    params = dict(model.named_parameters())
    for name in ("0.weight", "3.weight", "7.weight"):
        rows = new[name].flatten(1)
        kept = rows.all(1)
        assert (rows.all(1) | ~rows.any(1)).all(), name  # every filter all kept or all masked
        n = rows.shape[0]
        assert int((~kept).sum()) == round(0.3 * n), name  # 3 of 10, 2 of 8
        l1 = params[name].detach().abs().flatten(1).sum(1)
        assert l1[~kept].max() <= l1[kept].min(), name  # the smallest L1 norms went
    assert new["9.weight"].all()  # the classifier keeps every class
    new.apply_(model)
    removed = ~new["0.weight"].flatten(1).all(1)
    assert not params["0.weight"][removed].any()  # whole filters are zero
    out = model[0](torch.randn(1, 3, 5, 5))
    assert torch.allclose(out[0, removed], params["0.bias"][removed, None, None].expand(-1, 3, 3))


def test_filter_l1_counts_the_rate_in_surviving_filters_and_keeps_one():
    model = conv_stack()
    first = filter_l1(model, Mask.ones(model), 0.3)
    second = filter_l1(model, first, 0.3)
    alive = second["0.weight"].flatten(1).all(1)
    assert int(alive.sum()) == 7 - round(0.3 * 7)  # 10 -> 7 -> 5
    assert (second["0.weight"] <= first["0.weight"]).all()  # pruned filters stay pruned
    last = filter_l1(model, Mask.ones(model), 1.0)
    assert int(last["0.weight"].flatten(1).all(1).sum()) == 1  # never an empty layer
