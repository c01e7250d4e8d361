"""SGD, Adam and RMSprop over stacked parameters: G models in one tensor each, one lr per model.

A fused round (silo.round) holds the G members of a round as tensors of shape (G, *shape).
These update rules are torch.optim's single-tensor algorithms (torch 2.x, the defaults the
task can set: no amsgrad, no centering, no dampening) written over those stacks, with the
learning rate a (G,) tensor. The rate multiplies each member's *update* (for Adam and
RMSprop the normalised step, not the gradient), so member g follows exactly the trajectory
torch.optim gives one model at lr[g]; silo.step.make_optimizer is the reference.

State is a dict of stacked tensors per parameter, so dropping members (`keep`) is indexing.
`StackedGradScaler` is torch.amp.GradScaler over the members (fp16): one loss scale each.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from silo.config import OptimizerConfig

# One parameter's optimizer state: stacked tensors by name, and "step" (Adam, RMSprop) as a
# list of per-member ints. Any: the update rules read entries of both kinds by name.
State = dict[str, Any]


def _per_member(lr: Tensor, like: Tensor) -> Tensor:
    """(G,) -> (G, 1, ..., 1): broadcasts member g's value over its slice of `like`."""
    return lr.view(-1, *([1] * (like.dim() - 1)))


class StackedOptimizer:
    """One optimizer over stacked parameters. `step(params, grads, lr)` updates in place.

    A None gradient leaves its parameter and its state untouched, as torch.optim skips a
    parameter without a .grad.
    """

    def __init__(self, cfg: OptimizerConfig, num_params: int) -> None:
        self.cfg = cfg
        self.state: list[State] = [{} for _ in range(num_params)]

    def step(self, params: list[Tensor], grads: list[Tensor | None], lr: Tensor,
             skip: Tensor | None = None) -> None:
        """`skip` (G,) bool: members whose parameters and state stay as they are, as a lone
        run's GradScaler skips optimizer.step when its gradients overflowed."""
        rule = {"sgd": self._sgd, "adam": self._adam, "rmsprop": self._rmsprop}[self.cfg.name]
        skipped = None if skip is None or not bool(skip.any()) else skip.nonzero().flatten()
        skipped_members = set() if skipped is None else set(skipped.tolist())
        for p, g, st in zip(params, grads, self.state):
            if g is None:
                continue
            saved = None if skipped is None else _slices(p, st, skipped)
            rule(p, g, st, _per_member(lr.to(p.dtype), p))
            if saved is not None and skipped is not None:
                _restore(p, st, skipped, saved)
                if "step" in st:
                    st["step"] = [t - 1 if i in skipped_members else t for i, t in enumerate(st["step"])]

    def init_state(self, params: list[Tensor]) -> None:
        """Create SGD's momentum buffers now, as zeros: the first step then gives
        0 * momentum + g = g, exactly torch.optim's clone of g, and every step runs the same
        code (a compiled step is one graph, not one for the first step and one after)."""
        if self.cfg.name == "sgd" and self.cfg.momentum != 0:
            for p, st in zip(params, self.state):
                st.setdefault("momentum_buffer", torch.zeros_like(p))

    def tensors(self) -> list[Tensor]:
        """Every state tensor (what a failed compiled step may have changed)."""
        return [v for st in self.state for v in st.values() if isinstance(v, Tensor)]

    def copy_member(self, source: int, targets: list[int]) -> None:
        """Members `targets` take member `source`'s state (a compiled round's retired slots)."""
        for st in self.state:
            for v in st.values():
                if isinstance(v, Tensor):
                    v[targets] = v[source].clone()
                elif isinstance(v, list):  # Adam's steps per member
                    for t in targets:
                        v[t] = v[source]

    def keep(self, index: Tensor) -> None:
        """Keep only the members at `index` (a 1-D long tensor into the stacked dim)."""
        for st in self.state:
            for k, v in st.items():
                if isinstance(v, Tensor):
                    st[k] = v[index]
                elif isinstance(v, list):  # Adam's steps per member
                    st[k] = [v[i] for i in index.tolist()]

    # -- the update rules: each mirrors torch.optim's _single_tensor_<name> ---------------
    def _sgd(self, p: Tensor, g: Tensor, st: State, lr: Tensor) -> None:
        c = self.cfg
        if c.weight_decay != 0:
            g = g.add(p, alpha=c.weight_decay)
        if c.momentum != 0:
            buf = st.get("momentum_buffer")
            if buf is None:
                buf = st["momentum_buffer"] = g.detach().clone()
            else:
                buf.mul_(c.momentum).add_(g)
            g = g.add(buf, alpha=c.momentum) if c.nesterov else buf
        p.addcmul_(g, lr, value=-1)

    def _adam(self, p: Tensor, g: Tensor, st: State, lr: Tensor) -> None:
        c = self.cfg
        beta1, beta2 = c.betas
        if not st:
            # Steps per member, on the host: a member whose step its fp16 scaler skipped counts one fewer.
            st.update(step=[0] * p.shape[0], exp_avg=p.new_zeros(p.shape), exp_avg_sq=p.new_zeros(p.shape))
        st["step"] = [t + 1 for t in st["step"]]
        if c.weight_decay != 0:
            g = g.add(p, alpha=c.weight_decay)
        exp_avg, exp_avg_sq = st["exp_avg"], st["exp_avg_sq"]
        exp_avg.lerp_(g, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        # torch.optim's corrections, in Python floats; per member only once their steps differ.
        steps = st["step"]
        if len(set(steps)) == 1:
            bias_correction1 = 1 - beta1 ** steps[0]
            bias_correction2_sqrt = (1 - beta2 ** steps[0]) ** 0.5
        else:
            bias_correction1 = _per_member(p.new_tensor([1 - beta1**t for t in steps]), p)
            bias_correction2_sqrt = _per_member(p.new_tensor([(1 - beta2**t) ** 0.5 for t in steps]), p)
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(c.eps)
        p.addcmul_(exp_avg / denom, lr / bias_correction1, value=-1)

    def _rmsprop(self, p: Tensor, g: Tensor, st: State, lr: Tensor) -> None:
        c = self.cfg
        if not st:
            st["square_avg"] = p.new_zeros(p.shape)
            if c.momentum > 0:
                st["momentum_buffer"] = p.new_zeros(p.shape)
        if c.weight_decay != 0:
            g = g.add(p, alpha=c.weight_decay)
        square_avg = st["square_avg"]
        square_avg.mul_(c.alpha).addcmul_(g, g, value=1 - c.alpha)
        avg = square_avg.sqrt().add_(c.eps)
        if c.momentum > 0:
            buf = st["momentum_buffer"]
            buf.mul_(c.momentum).addcdiv_(g, avg)
            p.addcmul_(buf, lr, value=-1)
        else:
            p.addcmul_(g / avg, lr, value=-1)


def _slices(p: Tensor, st: State, index: Tensor) -> list[Tensor]:
    """Copies of the members at `index` of a parameter and its state tensors."""
    return [p.detach()[index].clone()] + [v[index].clone() for v in st.values() if isinstance(v, Tensor)]


def _restore(p: Tensor, st: State, index: Tensor, saved: list[Tensor]) -> None:
    tensors = [p.data] + [v for v in st.values() if isinstance(v, Tensor)]
    # A state tensor created by this step (the first one) had no value before: zero, as new.
    for t, old in zip(tensors, saved + [None] * (len(tensors) - len(saved))):
        t.index_copy_(0, index, old if old is not None else t.new_zeros((len(index), *t.shape[1:])))


class StackedGradScaler:
    """torch.amp.GradScaler for G stacked members: one loss scale and growth count each, as
    G lone runs each have their own scaler, with the defaults of `like` (the lone run's)."""

    def __init__(self, count: int, like: torch.amp.GradScaler, device: torch.device) -> None:
        self.scale = torch.full((count,), like.get_scale(), dtype=torch.float32, device=device)
        self.growth_tracker = torch.zeros(count, dtype=torch.int32, device=device)
        self.growth_factor, self.backoff_factor = like.get_growth_factor(), like.get_backoff_factor()
        self.growth_interval = like.get_growth_interval()

    def unscale(self, grads: list[Tensor | None]) -> Tensor:
        """Divide each member's gradients by its scale, in place; returns which members'
        gradients are not finite, (G,) bool (their step is skipped)."""
        inv_scale = self.scale.double().reciprocal().float()  # as GradScaler.unscale_
        found_inf = torch.zeros_like(self.scale, dtype=torch.bool)
        for g in grads:
            if g is None:
                continue
            found_inf |= ~torch.isfinite(g).reshape(g.shape[0], -1).all(1)
            g.mul_(_per_member(inv_scale.to(g.dtype), g))
        return found_inf

    def update(self, found_inf: Tensor) -> None:
        """GradScaler.update per member: back off after an overflow, grow after
        growth_interval clean steps."""
        tracker = torch.where(found_inf, torch.zeros_like(self.growth_tracker), self.growth_tracker + 1)
        grow = tracker == self.growth_interval
        self.scale = torch.where(found_inf, self.scale * self.backoff_factor,
                                 torch.where(grow, self.scale * self.growth_factor, self.scale))
        self.growth_tracker = torch.where(grow, torch.zeros_like(tracker), tracker)

    def keep(self, index: Tensor) -> None:
        self.scale, self.growth_tracker = self.scale[index], self.growth_tracker[index]

    def copy_member(self, source: int, targets: list[int]) -> None:
        self.scale[targets] = self.scale[source].clone()
        self.growth_tracker[targets] = self.growth_tracker[source].clone()
