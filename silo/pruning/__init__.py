"""Pruning: masks over the prunable weights, the per-step mask enforcer, and strategies.

    mask = Mask.ones(model, exclude=cfg.exclude)            # cycle 0: dense
    mask = prune_once(model, mask, cfg)                     # cycle q >= 1, on parent weights
    mask.apply_(model); enforce = MaskedStep(model, mask)   # once per run
    ... optimizer.step(); enforce()                         # every step

Strategy `swd` (silo.pruning.swd) prunes at the END of a cycle instead: it keeps the
parent's mask, adds its penalty to every step's loss, and cuts the trained weights.
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
from silo.pruning.swd import SWD

# Every value `pruning.strategy` may take: the start-of-cycle strategies, and SWD.
STRATEGY_NAMES: tuple[str, ...] = (*STRATEGIES, SWD)

__all__ = [
    "Mask",
    "MaskedStep",
    "prunable_parameters",
    "STRATEGIES",
    "STRATEGY_NAMES",
    "SWD",
    "PruneContext",
    "Strategy",
    "get_strategy",
    "global_magnitude",
    "layerwise_magnitude",
    "magnitude_scores",
    "prune_by_score",
    "prune_once",
]
