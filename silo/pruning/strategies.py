"""Pruning strategies: small pure functions in a registry (OpenLTH's design).

Every strategy has the signature

    prune(model, mask, fraction, context=None) -> Mask

and returns a NEW mask; it changes neither the model nor the input mask. `fraction` is the
share of the currently SURVIVING prunable weights to remove this cycle (the per-cycle prune
rate r), so after q cycles the sparsity is 1 - (1 - r)**q up to rounding. Already-pruned
weights stay pruned. To add a strategy: compute a score per prunable weight, call
`prune_by_score`, and add one line to `STRATEGIES`.

    global_magnitude     |w|, ranked across layers            (the SILO paper's IMP)
    layerwise_magnitude  |w|, the same fraction of every layer
    global_gradient      |w * dL/dw| on context.batches, ranked across layers
    lookahead            |w| x norms of the neighbouring layers' connected weights (LAP),
                         the same fraction of every layer
    filter_l1            structured: whole filters by L1 norm, the rate counted in filters
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from silo.pruning.mask import Mask, params_for, prunable_parameters

if TYPE_CHECKING:  # only for the annotation; strategies must not need pydantic at runtime
    from silo.config import PruningConfig


@dataclass(frozen=True)
class PruneContext:
    """What data-driven strategies score on; magnitude strategies ignore it."""

    batches: list[tuple[Tensor, Tensor]]  # (inputs, targets), PruningConfig.score_batches of them
    loss_fn: Callable[[Tensor, Tensor], Tensor]


Strategy = Callable[[nn.Module, Mask, float, PruneContext | None], Mask]


def _check_fraction(fraction: float) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise TypeError(f"fraction must be a number, got {type(fraction).__name__}")
    if not (math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    return float(fraction)


def _remove_lowest(scores: list[Tensor], keeps: list[Tensor], fraction: float) -> list[Tensor]:
    """Among the kept entries of all `scores` taken together, drop the round(fraction * n)
    lowest. Returns new keep tensors on the devices of `keeps`."""
    device = scores[0].device
    dtype = functools.reduce(torch.promote_types, (s.dtype for s in scores))
    surviving = [s[k.to(s.device)].to(device=device, dtype=dtype) for s, k in zip(scores, keeps)]
    flat = torch.cat(surviving)
    n_remove = round(fraction * flat.numel())
    # A stable sort breaks ties by position (model order, then flat index), so exactly
    # n_remove weights go and the same ones on every run; a threshold test could not do
    # either when scores tie (e.g. equal weights after a constant init).
    order = torch.argsort(flat, stable=True)
    keep_flat = torch.ones(flat.numel(), dtype=torch.bool, device=device)
    keep_flat[order[:n_remove]] = False
    out = []
    for k, piece in zip(keeps, torch.split(keep_flat, [s.numel() for s in surviving])):  # Tensor.split: untyped
        new = k.clone()
        new[k] = piece.to(k.device)  # only surviving positions change; pruned stay False
        out.append(new)
    return out


def prune_by_score(
    mask: Mask, scores: Mapping[str, Tensor], fraction: float, *, per_layer: bool = False
) -> Mask:
    """The building block of score-based strategies: remove the lowest-scoring surviving
    weights, ranked across all layers together or within each layer. `scores` has one
    tensor per mask entry, of the parameter's shape; scores of pruned weights are ignored."""
    fraction = _check_fraction(fraction)
    names = mask.names()
    if set(scores) != set(names):
        raise KeyError(f"scores and mask name different parameters: {sorted(set(scores) ^ set(names))}")
    for n in names:
        if scores[n].shape != mask[n].shape:
            raise ValueError(f"{n}: score shape {tuple(scores[n].shape)} != mask shape {tuple(mask[n].shape)}")
    if not names:
        return mask.clone()
    if per_layer:
        new = {n: _remove_lowest([scores[n]], [mask[n]], fraction)[0] for n in names}
    else:
        new = dict(zip(names, _remove_lowest([scores[n] for n in names], [mask[n] for n in names], fraction)))
    return Mask(new)


def magnitude_scores(model: nn.Module, mask: Mask) -> dict[str, Tensor]:
    """|w| per prunable weight, on the weights' own devices."""
    params = params_for(model, mask.names())
    return {n: p.detach().abs() for n, p in zip(mask.names(), params)}


def global_magnitude(
    model: nn.Module, mask: Mask, fraction: float, context: PruneContext | None = None
) -> Mask:
    """Remove the smallest-|w| surviving weights, ranked across all prunable layers."""
    return prune_by_score(mask, magnitude_scores(model, mask), fraction, per_layer=False)


def layerwise_magnitude(
    model: nn.Module, mask: Mask, fraction: float, context: PruneContext | None = None
) -> Mask:
    """Remove the same fraction of surviving weights from every layer, smallest |w| first."""
    return prune_by_score(mask, magnitude_scores(model, mask), fraction, per_layer=True)


# ----------------------------------------------------------------------------- gradient


def gradient_scores(model: nn.Module, mask: Mask, context: PruneContext | None) -> dict[str, Tensor]:
    """|w * dL/dw| per prunable weight, dL/dw the mean of the gradients of
    `context.loss_fn` over `context.batches` (so: the gradient of the loss on all of them).

    The gradients are taken with the model in train mode, as training sees it (batch norm on
    batch statistics; the models here have no dropout), by `torch.autograd.grad`: no `.grad`
    field and no optimizer state is touched. Everything the forward passes change is put
    back: each module's train/eval mode, every buffer (BN running statistics), and the
    parameters' requires_grad flags.
    """
    if context is None or not context.batches:
        raise ValueError(
            "global_gradient scores weights on data: it needs a PruneContext with at least one "
            "(inputs, targets) batch (silo.train builds one from task.pruning.score_batches "
            "training batches); got " + ("None" if context is None else "no batches")
        )
    names = mask.names()
    params = params_for(model, names)
    modes = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    requires = [p.requires_grad for p in params]
    totals = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    try:
        model.train()
        for p in params:
            p.requires_grad_(True)
        with torch.enable_grad():
            for xb, yb in context.batches:
                loss = context.loss_fn(model(xb), yb)
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                for total, g in zip(totals, grads):
                    if g is not None:  # a weight the loss does not reach scores 0
                        total.add_(g.detach().to(torch.float32))
    finally:
        for m, training in modes:
            m.training = training
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for p, r in zip(params, requires):
            p.requires_grad_(r)
    n = len(context.batches)
    return {name: (p.detach().to(torch.float32) * (t / n)).abs()
            for name, p, t in zip(names, params, totals)}


def global_gradient(
    model: nn.Module, mask: Mask, fraction: float, context: PruneContext | None = None
) -> Mask:
    """Remove the surviving weights with the smallest |w * dL/dw|, ranked across all
    prunable layers (ShrinkBench's "global gradient"); dL/dw on `context.batches`."""
    fraction = _check_fraction(fraction)
    return prune_by_score(mask, gradient_scores(model, mask, context), fraction, per_layer=False)


# ----------------------------------------------------------------------------- lookahead


def _layer_dims(module: nn.Module, weight: Tensor) -> tuple[int, int, int]:
    """(input channels or features, output channels or features, groups) of a prunable layer."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features, 1
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return module.in_channels, module.out_channels, module.groups
    # Not a module kind prunable_parameters selects; read the shape as (out, in, ...).
    return weight.shape[1], weight.shape[0], 1


def _into_norms(weight: Tensor) -> Tensor:
    """||W[j, ...]||: the L2 norm of the weights going INTO each output channel j."""
    norms: Tensor = weight.flatten(1).norm(dim=1)  # Tensor.norm is unannotated in torch
    return norms


def _out_of_norms(weight: Tensor, in_dim: int, groups: int) -> Tensor:
    """The L2 norm of the weights going OUT OF each of the layer's `in_dim` input channels
    (||W[:, k, ...]||), grouped convolutions included (input channel c only feeds the
    outputs of its own group)."""
    out = weight.shape[0]
    per_group_in = weight.shape[1]
    sq = weight.flatten(2).pow(2).sum(2) if weight.dim() > 2 else weight.pow(2)  # (out, in/g)
    sq = sq.reshape(groups, out // groups, per_group_in).sum(1)  # (g, in/g)
    return sq.reshape(in_dim).sqrt()


def _flattened_into(module: nn.Module, prev: nn.Module) -> bool:
    """A conv map flattened (channel-major) into a Linear layer: C channels feed C * spatial
    inputs, the features of channel c being c * spatial ... (c + 1) * spatial - 1."""
    return isinstance(module, nn.Linear) and isinstance(prev, (nn.Conv1d, nn.Conv2d, nn.Conv3d))


def lookahead_scores(model: nn.Module, mask: Mask) -> dict[str, Tensor]:
    """Lookahead scores (Park et al. 2020, eq. 2) of the weights named in `mask`:

        L(W_i)[j, k] = |W_i[j, k]| * ||W_{i-1}[k, :]|| * ||W_{i+1}[:, j]||

    with j an output and k an input channel of layer i (for a conv, the kernel entries of
    W_i[j, k] share the score's two norms). The layers i-1 and i+1 are the previous and next
    prunable layers in model order (all Conv/Linear weights, excluded ones included), with
    pruned weights counted as 0 (the masked weights). A neighbour is used only where the
    shapes connect: its output channels are layer i's input channels (or, before a Linear
    layer, a conv map flattened channel-major). Otherwise, and for the first and last layer,
    its factor is 1.

    In a plain chain (MLP, VGG) this is the paper's score. In networks whose layers are not a
    chain it is an approximation: residual additions (ResNet, MobileNetV2) see only the main
    path, DenseNet's concatenations and attention's qkv -> proj usually do not connect by
    shape (factor 1), and batch norm between layers is ignored (the paper's LBAP variant
    would fold it in).
    """
    chain = list(prunable_parameters(model).items())
    index = {name: i for i, (name, _) in enumerate(chain)}
    missing = [n for n in mask.names() if n not in index]
    if missing:
        raise KeyError(f"mask names parameters that are not prunable layers of the model: {missing}")
    modules = [model.get_submodule(name.rpartition(".")[0]) for name, _ in chain]
    weights, dims = [], []
    for (name, p), module in zip(chain, modules):
        w = p.detach()
        if name in mask:
            w = w * mask[name].to(device=w.device, dtype=w.dtype)
        weights.append(w)
        dims.append(_layer_dims(module, w))

    scores = {}
    for name in mask.names():
        i = index[name]
        w = weights[i]
        in_dim, out_dim, groups = dims[i]
        before = after = None  # None: no connected neighbour, factor 1
        if i > 0:
            prev_out = dims[i - 1][1]
            into = _into_norms(weights[i - 1])  # (prev_out,)
            if prev_out == in_dim:
                before = into
            elif _flattened_into(modules[i], modules[i - 1]) and in_dim % prev_out == 0:
                before = into.repeat_interleave(in_dim // prev_out)
        if i + 1 < len(chain):
            next_in, _, next_groups = dims[i + 1]
            out_of = _out_of_norms(weights[i + 1], next_in, next_groups)  # (next_in,)
            if next_in == out_dim:
                after = out_of
            elif _flattened_into(modules[i + 1], modules[i]) and next_in % out_dim == 0:
                after = out_of.pow(2).reshape(out_dim, -1).sum(1).sqrt()
        factor = torch.ones((out_dim, w.shape[1]), dtype=w.dtype, device=w.device)
        if before is not None:
            # W_i[j, k] reads input channel group(j) * in_per_group + k (groups == 1: k).
            group = torch.arange(out_dim, device=w.device) // (out_dim // groups)
            k = group[:, None] * w.shape[1] + torch.arange(w.shape[1], device=w.device)[None, :]
            factor = factor * before.to(w.device)[k]
        if after is not None:
            factor = factor * after.to(w.device)[:, None]
        scores[name] = w.abs() * factor.reshape(*factor.shape, *([1] * (w.dim() - 2)))
    return scores


def lookahead(
    model: nn.Module, mask: Mask, fraction: float, context: PruneContext | None = None
) -> Mask:
    """Lookahead pruning (LAP, Park et al. 2020): remove the same fraction of the surviving
    weights of every layer, lowest Lookahead score first (see `lookahead_scores`). Layer-wise,
    as in the paper, which uses LAP with the per-layer ratios of magnitude pruning."""
    fraction = _check_fraction(fraction)
    return prune_by_score(mask, lookahead_scores(model, mask), fraction, per_layer=True)


# ----------------------------------------------------------------------------- structured


def filter_l1(
    model: nn.Module, mask: Mask, fraction: float, context: PruneContext | None = None
) -> Mask:
    """Structured pruning by filter L1 norm (Li et al. 2017, "Pruning Filters for Efficient
    ConvNets"): in every layer, mask whole output filters (a conv's output channel, a
    Linear layer's output row).

    The rate is counted in filters: each layer loses round(fraction * s) of its s surviving
    filters (a filter survives while any of its weights is kept), those with the smallest
    L1 norm of their kept weights, ties broken by index. A layer always keeps at least one
    filter. The network's last prunable layer (the classifier) is never filter-pruned:
    removing an output row would remove a class. Weight sparsity (what the mask reports)
    then differs from the filter fraction. Only weights are masked: the BN / bias of a
    removed filter stay (they become a per-channel constant), as in mask-based studies.
    """
    fraction = _check_fraction(fraction)
    names = mask.names()
    params = params_for(model, names)
    last = next(reversed(prunable_parameters(model)), None)
    new: dict[str, Tensor] = {}
    for name, p in zip(names, params):
        m = mask[name]
        if name == last:
            new[name] = m.clone()
            continue
        keep = m.to(p.device)
        alive = keep.flatten(1).any(1)  # (out,)
        survivors = torch.nonzero(alive).flatten()
        n_remove = min(round(fraction * survivors.numel()), max(survivors.numel() - 1, 0))
        l1 = (p.detach().abs() * keep).flatten(1).sum(1, dtype=torch.float64)
        order = torch.argsort(l1[survivors], stable=True)
        out = m.clone()
        out[survivors[order[:n_remove]].to(m.device)] = False
        new[name] = out
    return Mask(new)


STRATEGIES: dict[str, Strategy] = {
    "global_magnitude": global_magnitude,
    "layerwise_magnitude": layerwise_magnitude,
    "global_gradient": global_gradient,
    "lookahead": lookahead,
    "filter_l1": filter_l1,
}


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        if name == "swd":  # silo.pruning.swd.SWD; not imported here (swd imports this module)
            raise ValueError("strategy 'swd' removes nothing at the start of a cycle: it cuts at the "
                             "end (silo.pruning.swd.cut), which silo.train does") from None
        raise ValueError(
            f"unknown pruning strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}"
        ) from None


def prune_once(
    model: nn.Module, mask: Mask, config: PruningConfig, context: PruneContext | None = None
) -> Mask:
    """One cycle's pruning as the task config asks: config.strategy at config.rate."""
    return get_strategy(config.strategy)(model, mask, config.rate, context)
