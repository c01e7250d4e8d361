"""Selective Weight Decay (SWD; Tessier, Gripon, Leonardon, Arzel, Hannagan, Bertrand,
"Rethinking Weight Decay For Efficient Neural Network Pruning", J. Imaging 2022, arXiv
2011.10520): pruning that happens during a cycle's training instead of at its start.

At every step of cycle q >= 1, the surviving weights that the cycle's cut would remove if it
happened now (the lowest-|w| share `pruning.rate` of the survivors, ranked across layers or
within each, exactly as `global_magnitude` / `layerwise_magnitude` rank them; recomputed
from the current weights every step) get an extra L2 penalty

    a(t) * mu * ||w_selected||^2,   a(t) = a_min * (a_max / a_min) ** (t / T),  t = 0..T-1

on top of the ordinary weight decay mu * ||w||^2, so that they are already near zero when
the cycle ends; then they are cut (mask set, weights zeroed) and the run is evaluated
after the cut, with no fine-tuning. As in the paper, mu is the optimizer's weight decay and
a is the ratio of the selective decay to the ordinary one. torch's `weight_decay` adds
mu * w to the gradient, i.e. it is the penalty (mu / 2) ||w||^2, so the selective penalty
added to the loss here is (a(t) * mu / 2) ||w_selected||^2, whose gradient a(t) * mu * w is
a(t) times the ordinary decay's (the authors' code computes it the same way).

The strength acts through the optimizer: SGD shrinks a selected weight by about
lr(t) * a(t) * mu per step, so the penalty is stable while lr(t) * a(t) * mu stays below
2 (1 + momentum). With the defaults (mu 5e-4, a_max 1e5) that holds at the end of a cycle
for lr < 0.076, which is why the paper's schedule (and the quickstart's) has decayed the
learning rate by then; a high max_lr with a shape that ends high diverges, and that is a
result, not a fault.

The penalty is a function of the weights it is given, one model or the G stacked members
of a fused round (silo.round), each member with its own selection.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from silo.pruning.mask import Mask
from silo.pruning.strategies import prune_by_score

if TYPE_CHECKING:  # only for the annotation, as in strategies.py
    from silo.config import PruningConfig

SWD = "swd"


def is_swd(config: PruningConfig) -> bool:
    """Whether the cycle prunes at its end, by Selective Weight Decay."""
    return config.strategy == SWD


def a_at(t: int, total_steps: int, a_min: float, a_max: float) -> float:
    """a(t) = a_min * (a_max / a_min) ** (t / T): a_min at the first step t = 0, rising
    geometrically towards a_max, which it would reach at t = T (one step after the last)."""
    return float(a_min * (a_max / a_min) ** (t / total_steps))  # float: a positive base, never complex


class SelectiveDecay:
    """The extra penalty of one cycle's training. Call it once per optimizer step, before
    backward: it returns the penalty at the current step (a scalar to add to the loss) and
    moves on to the next step.

    The weights it is given are the prunable parameters named in `mask` (the cycle's
    starting mask, the parent's), as a mapping from parameter name to tensor: a model's
    own parameters (`of_model`) or the members' stacked ones, shape (G, *shape)
    (`of_members`).
    """

    def __init__(self, config: PruningConfig, weight_decay: float, mask: Mask, total_steps: int) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.names = mask.names()
        self.keeps = [mask[n] for n in self.names]
        self.rate = config.rate
        self.per_layer = config.swd.criterion == "layerwise_magnitude"
        self.a_min, self.a_max = config.swd.a_min, config.swd.a_max
        self.weight_decay = float(weight_decay)
        self.total_steps = total_steps
        # As prune_by_score counts them: round(rate * survivors), overall or per layer.
        kept = [int(k.sum()) for k in self.keeps]
        self.n_remove = [round(self.rate * n) for n in kept] if self.per_layer else [round(self.rate * sum(kept))]
        self._devices: dict[torch.device, list[Tensor]] = {}
        self.t = 0

    def coefficient(self, t: int) -> float:
        """c(t) with penalty = c(t) * sum(w_selected ** 2): a(t) * mu / 2 (module docstring)."""
        return 0.5 * a_at(t, self.total_steps, self.a_min, self.a_max) * self.weight_decay

    def _keeps_on(self, device: torch.device) -> list[Tensor]:
        if device not in self._devices:
            self._devices[device] = [k.to(device) for k in self.keeps]
        return self._devices[device]

    @torch.no_grad()
    def select(self, weights: Mapping[str, Tensor]) -> list[Tensor]:
        """Per member, the surviving weights the cut would remove now: one bool tensor of
        shape (G, *shape) per name, in mask order. Ranked by |w| with a stable sort, ties by
        model order then flat index, so the set is exactly prune_by_score's."""
        stacked = [weights[n].detach() for n in self.names]
        if not stacked:
            return []
        keeps = self._keeps_on(stacked[0].device)
        g = stacked[0].shape[0]
        # Pruned weights rank last (+inf): they are never selected, and the order among the
        # survivors is the order prune_by_score sees them in.
        scores = [w.abs().masked_fill(~k, math.inf).reshape(g, -1) for w, k in zip(stacked, keeps)]
        groups = [[s] for s in scores] if self.per_layer else [scores]
        out: list[Tensor] = []
        for group, n_remove in zip(groups, self.n_remove):
            flat = torch.cat(group, dim=1) if len(group) > 1 else group[0]
            chosen = torch.zeros_like(flat, dtype=torch.bool)
            if n_remove:
                order = torch.argsort(flat, dim=1, stable=True)[:, :n_remove]
                chosen.scatter_(1, order, True)
            out += list(torch.split(chosen, [s.shape[1] for s in group], dim=1))  # Tensor.split: untyped
        return [c.reshape(w.shape) for c, w in zip(out, stacked)]

    def penalties(self, weights: Mapping[str, Tensor], t: int) -> Tensor:
        """The penalty of each member at step t, shape (G,), differentiable in `weights`."""
        selected = self.select(weights)
        c = self.coefficient(t)
        total = None
        for n, sel in zip(self.names, selected):
            w = weights[n]
            part = (w * sel.to(w.dtype)).square().reshape(w.shape[0], -1).sum(1)
            total = part if total is None else total + part
        if total is None:
            return torch.zeros(())
        return c * total

    def of_members(self, params: Mapping[str, Tensor]) -> Tensor:
        """The summed penalty of the stacked members at the current step; advances the step.
        Members share no weight, so each member's gradient is its own penalty's."""
        return self.each_of_members(params).sum()

    def each_of_members(self, params: Mapping[str, Tensor]) -> Tensor:
        """Each stacked member's penalty at the current step, (G,); advances the step (a fused
        fp16 round scales each member's objective by its own loss scale)."""
        penalty = self.penalties(params, self.t)
        self.t += 1
        return penalty

    def of_model(self, model: nn.Module) -> Tensor:
        """The penalty of one model at the current step; advances the step."""
        params = dict(model.named_parameters())
        return self.of_members({n: params[n].unsqueeze(0) for n in self.names})


def selective_decay(config: PruningConfig, weight_decay: float, mask: Mask, *, cycle: int,
                    total_steps: int) -> SelectiveDecay | None:
    """The penalty of a run's training: SWD's cycles q >= 1 only (cycle 0 is dense)."""
    if not is_swd(config) or cycle == 0:
        return None
    return SelectiveDecay(config, weight_decay, mask, total_steps)


def cut(weights: Mapping[str, Tensor], mask: Mask, config: PruningConfig) -> Mask:
    """SWD's end-of-cycle pruning of trained `weights` (a state dict or parameters): the new
    mask, `mask` minus the lowest-|w| share `config.rate` of its survivors by the criterion.
    Changes neither argument; zero the weights with the returned mask."""
    scores = {n: weights[n].detach().abs() for n in mask.names()}
    return prune_by_score(mask, scores, config.rate, per_layer=config.swd.criterion == "layerwise_magnitude")


def cut_state(weights: dict[str, Tensor], mask: Mask, config: PruningConfig) -> tuple[dict[str, Tensor], Mask]:
    """`cut` for a state dict: (the state with the removed weights zeroed, the new mask)."""
    new = cut(weights, mask, config)
    out = dict(weights)
    for n, keep in new.items():
        out[n] = weights[n].masked_fill(~keep.to(weights[n].device), 0)
    return out, new


def end_of_cycle(model: nn.Module, mask: Mask, config: PruningConfig, *, cycle: int) -> Mask:
    """The mask a trained run ends its cycle with: an SWD cycle q >= 1 cuts `model`'s weights
    (zeroing the removed ones in place); every other run keeps `mask`."""
    if not is_swd(config) or cycle == 0:
        return mask
    new = cut(model.state_dict(), mask, config)
    new.apply_(model)
    return new


def end_of_cycle_state(
    weights: dict[str, Tensor], mask: Mask, config: PruningConfig, *, cycle: int
) -> tuple[dict[str, Tensor], Mask]:
    """`end_of_cycle` for a state dict (a fused member's): (its weights, its mask)."""
    if not is_swd(config) or cycle == 0:
        return weights, mask
    return cut_state(weights, mask, config)
