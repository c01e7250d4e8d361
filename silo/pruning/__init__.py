"""Pruning: masks over the prunable weights, the per-step mask enforcer, and strategies.

    mask = Mask.ones(model, exclude=cfg.exclude)            # cycle 0: dense
    mask = prune_once(model, mask, cfg)                     # cycle q >= 1, on parent weights
    mask.apply_(model); enforce = MaskedStep(model, mask)   # once per run
    ... optimizer.step(); enforce()                         # every step
"""

from silo.pruning.mask import Mask, MaskedStep, prunable_parameters
from silo.pruning.strategies import (
    STRATEGIES,
    PruneContext,
    Strategy,
    get_strategy,
    global_magnitude,
    layerwise_magnitude,
    magnitude_scores,
    prune_by_score,
    prune_once,
)

__all__ = [
    "Mask",
    "MaskedStep",
    "prunable_parameters",
    "STRATEGIES",
    "PruneContext",
    "Strategy",
    "get_strategy",
    "global_magnitude",
    "layerwise_magnitude",
    "magnitude_scores",
    "prune_by_score",
    "prune_once",
]
