"""SGD, Adam and RMSprop over stacked parameters: G models in one tensor each, one lr per model.

A fused round (silo.round) holds the G members of a round as tensors of shape (G, *shape).
These update rules are torch.optim's single-tensor algorithms (torch 2.x, the defaults the
task can set: no amsgrad, no centering, no dampening) written over those stacks, with the
learning rate a (G,) tensor. The rate multiplies each member's *update* (for Adam and
RMSprop the normalised step, not the gradient), so member g follows exactly the trajectory
torch.optim gives one model at lr[g]; silo.train.make_optimizer is the reference.

State is a dict of stacked tensors per parameter, so dropping members (`keep`) is indexing.
"""

from __future__ import annotations

from torch import Tensor

from silo.config import OptimizerConfig


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
        self.state: list[dict[str, Tensor | int]] = [{} for _ in range(num_params)]

    def step(self, params: list[Tensor], grads: list[Tensor | None], lr: Tensor) -> None:
        rule = {"sgd": self._sgd, "adam": self._adam, "rmsprop": self._rmsprop}[self.cfg.name]
        for p, g, st in zip(params, grads, self.state):
            if g is not None:
                rule(p, g, st, _per_member(lr.to(p.dtype), p))

    def keep(self, index: Tensor) -> None:
        """Keep only the members at `index` (a 1-D long tensor into the stacked dim)."""
        for st in self.state:
            for k, v in st.items():
                if isinstance(v, Tensor):
                    st[k] = v[index]

    # -- the update rules: each mirrors torch.optim's _single_tensor_<name> ---------------
    def _sgd(self, p: Tensor, g: Tensor, st: dict, lr: Tensor) -> None:
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

    def _adam(self, p: Tensor, g: Tensor, st: dict, lr: Tensor) -> None:
        c = self.cfg
        beta1, beta2 = c.betas
        if not st:
            st.update(step=0, exp_avg=p.new_zeros(p.shape), exp_avg_sq=p.new_zeros(p.shape))
        st["step"] += 1
        if c.weight_decay != 0:
            g = g.add(p, alpha=c.weight_decay)
        exp_avg, exp_avg_sq = st["exp_avg"], st["exp_avg_sq"]
        exp_avg.lerp_(g, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bias_correction1 = 1 - beta1 ** st["step"]
        bias_correction2_sqrt = (1 - beta2 ** st["step"]) ** 0.5
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(c.eps)
        p.addcmul_(exp_avg / denom, lr / bias_correction1, value=-1)

    def _rmsprop(self, p: Tensor, g: Tensor, st: dict, lr: Tensor) -> None:
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
