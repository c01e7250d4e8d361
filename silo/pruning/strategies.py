"""Pruning strategies: small pure functions in a registry (OpenLTH's design).

Every strategy has the signature

    prune(model, mask, fraction, context=None) -> Mask

and returns a NEW mask; it changes neither the model nor the input mask. `fraction` is the
share of the currently SURVIVING prunable weights to remove this cycle (the per-cycle prune
rate r), so after q cycles the sparsity is 1 - (1 - r)**q up to rounding. Already-pruned
weights stay pruned. To add a strategy (gradient, lookahead, filter pruning): compute a
score per prunable weight, call `prune_by_score`, and add one line to `STRATEGIES`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch
from torch import Tensor, nn

from silo.pruning.mask import Mask, _params_for

if TYPE_CHECKING:  # only for the annotation; strategies must not need pydantic at runtime
    from silo.config import PruningConfig


@dataclass(frozen=True)
class PruneContext:
    """What data-driven strategies score on; magnitude strategies ignore it."""

    batches: list[tuple[Tensor, Tensor]]  # (inputs, targets), PruningConfig.score_batches of them
    loss_fn: Callable[[Tensor, Tensor], Tensor]


Strategy = Callable[[nn.Module, Mask, float, Optional[PruneContext]], Mask]


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
    for k, piece in zip(keeps, keep_flat.split([s.numel() for s in surviving])):
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
    params = _params_for(model, mask.names())
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


STRATEGIES: dict[str, Strategy] = {
    "global_magnitude": global_magnitude,
    "layerwise_magnitude": layerwise_magnitude,
}


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(
            f"unknown pruning strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}"
        ) from None


def prune_once(
    model: nn.Module, mask: Mask, config: PruningConfig, context: PruneContext | None = None
) -> Mask:
    """One cycle's pruning as the task config asks: config.strategy at config.rate."""
    return get_strategy(config.strategy)(model, mask, config.rate, context)
