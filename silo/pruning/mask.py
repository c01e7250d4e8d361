"""Which weights are prunable, which of them survive, and keeping the pruned ones at zero.

A `Mask` is the whole pruning state of a network: one boolean tensor per prunable
parameter (True = kept). Strategies read a mask and return a new one; the training loop
only ever sees `MaskedStep`, so it knows nothing of pruning levels (OpenLTH's rule).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import ItemsView, Iterator, Mapping

import torch
from torch import Tensor, nn

from silo.atomic import atomic_writer

# Conv and Linear weights are what the iterative-pruning literature prunes (SILO, LTH,
# ShrinkBench). Biases and normalisation parameters are a tiny share of the weights but
# pruning them hurts a lot, so they are never prunable unless a strategy says so itself.
PRUNABLE_MODULES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


_GLOB = frozenset("*?[")


def name_matches(param_name: str, pattern: str) -> bool:
    """Whether a pruning.include / exclude pattern names this parameter.

    A pattern without glob characters is a module-name prefix matching whole dotted
    components, so "layer1" names "layer1.0.conv.weight" but not "layer10.conv.weight"; a
    full parameter name works too. A glob ("layer*.conv1", "*.downsample.*") is matched
    against the parameter's name and its module's name (fnmatch, "*" crosses dots)."""
    if not pattern:
        return False
    if _GLOB & set(pattern):
        module = param_name.rpartition(".")[0]
        return fnmatch.fnmatchcase(param_name, pattern) or fnmatch.fnmatchcase(module, pattern)
    return param_name == pattern or param_name.startswith(pattern + ".")


def _patterns(what: str, value: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    if isinstance(value, str):  # a bare string would silently match by its characters
        raise TypeError(f"{what} must be a tuple of module-name prefixes or globs, not a string")
    return tuple(value)


def prunable_parameters(
    model: nn.Module, exclude: tuple[str, ...] | list[str] = (), include: tuple[str, ...] | list[str] = ()
) -> dict[str, nn.Parameter]:
    """The `weight` of every Conv1d/2d/3d and Linear module, keyed as in
    `model.named_parameters()`, in model order; with `include`, only those an include
    pattern names; minus those an `exclude` pattern names (see name_matches)."""
    exclude, include = _patterns("exclude", exclude), _patterns("include", include)
    # named_parameters() gives the canonical name of a tied parameter (its first
    # occurrence); look names up there so mask keys always match state_dict keys.
    canonical = {id(p): n for n, p in model.named_parameters()}
    out: dict[str, nn.Parameter] = {}
    for module in model.modules():
        if not isinstance(module, PRUNABLE_MODULES):
            continue
        weight = getattr(module, "weight", None)
        if not isinstance(weight, nn.Parameter) or id(weight) not in canonical:
            continue
        name = canonical[id(weight)]
        if name in out or any(name_matches(name, p) for p in exclude):
            continue
        if not include or any(name_matches(name, p) for p in include):
            out[name] = weight
    # Sort into named_parameters() order so the order is the model's, not the traversal's.
    order = {n: i for i, n in enumerate(canonical.values())}
    return dict(sorted(out.items(), key=lambda kv: order[kv[0]]))


def params_for(model: nn.Module, names: list[str]) -> list[nn.Parameter]:
    """The parameters of `model` that the mask names, in the mask's order; KeyError if one is missing."""
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise KeyError(f"mask names parameters the model does not have: {missing}")
    return [params[n] for n in names]


class Mask:
    """Per-parameter boolean tensors keyed by parameter name; True = kept."""

    def __init__(self, tensors: Mapping[str, Tensor]):
        for name, t in tensors.items():
            if not isinstance(t, Tensor) or t.dtype != torch.bool:
                got = t.dtype if isinstance(t, Tensor) else type(t).__name__
                raise TypeError(f"mask for {name!r} must be a bool tensor, got {got}")
        self._tensors: dict[str, Tensor] = dict(tensors)

    @classmethod
    def ones(
        cls, model: nn.Module, exclude: tuple[str, ...] | list[str] = (), include: tuple[str, ...] | list[str] = ()
    ) -> Mask:
        """The dense mask of `model`: every prunable weight kept."""
        return cls({n: torch.ones_like(p, dtype=torch.bool)
                    for n, p in prunable_parameters(model, exclude, include).items()})

    # -- mapping access ---------------------------------------------------------------
    def __getitem__(self, name: str) -> Tensor:
        return self._tensors[name]

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def names(self) -> list[str]:
        return list(self._tensors)

    def items(self) -> ItemsView[str, Tensor]:
        return self._tensors.items()

    # -- counts -----------------------------------------------------------------------
    def num_total(self) -> int:
        return sum(t.numel() for t in self._tensors.values())

    def num_kept(self) -> int:
        return sum(int(t.sum()) for t in self._tensors.values())

    def sparsity(self) -> float:
        """Fraction of prunable weights removed (0.0 for a mask with no weights)."""
        total = self.num_total()
        return 0.0 if total == 0 else 1.0 - self.num_kept() / total

    def layer_sparsity(self) -> dict[str, float]:
        return {n: (1.0 - int(t.sum()) / t.numel()) if t.numel() else 0.0
                for n, t in self._tensors.items()}

    # -- acting on a model ------------------------------------------------------------
    def apply_(self, model: nn.Module) -> None:
        """Zero the pruned weights of `model` in place."""
        params = params_for(model, self.names())
        with torch.no_grad():
            for p, m in zip(params, self._tensors.values()):
                if p.shape != m.shape:
                    raise ValueError(f"mask shape {tuple(m.shape)} != parameter shape {tuple(p.shape)}")
                # masked_fill_ rather than a multiply: 0 * inf would leave a NaN behind.
                p.masked_fill_(~m.to(p.device), 0)

    # -- device and storage -----------------------------------------------------------
    def to(self, device: torch.device | str) -> Mask:
        return Mask({n: t.to(device) for n, t in self._tensors.items()})

    def clone(self) -> Mask:
        return Mask({n: t.clone() for n, t in self._tensors.items()})

    def state_dict(self) -> dict[str, Tensor]:
        """A plain dict of bool tensors: loadable with torch.load(weights_only=True)."""
        return dict(self._tensors)

    @classmethod
    def from_state_dict(cls, d: Mapping[str, Tensor]) -> Mask:
        return cls(d)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically: a reader sees the old file or the whole new one, never a part."""
        with atomic_writer(path, "wb") as f:
            torch.save({n: t.cpu() for n, t in self._tensors.items()}, f)

    @classmethod
    def load(cls, path: str | os.PathLike[str], map_location: torch.device | str = "cpu") -> Mask:
        return cls.from_state_dict(torch.load(path, map_location=map_location, weights_only=True))

    # -- comparison -------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mask):
            return NotImplemented
        if list(self._tensors) != list(other._tensors):
            return False
        return all(a.shape == b.shape and torch.equal(a.cpu(), b.cpu())
                   for a, b in zip(self._tensors.values(), other._tensors.values()))

    __hash__ = None  # type: ignore[assignment]  # mutable tensors inside: equal masks must not be dict keys

    def __repr__(self) -> str:
        return (f"Mask({len(self)} tensors, {self.num_kept()}/{self.num_total()} kept, "
                f"sparsity={self.sparsity():.4f})")


class MaskedStep:
    """Keeps pruned weights exactly zero: call it after every optimizer.step().

    Momentum and weight decay move pruned weights off zero each step (their gradients are
    not zero); one fused multiply by the mask undoes that. Everything that does not change
    during a run is prepared here once, so a call is a single `_foreach_mul_` kernel launch
    group, with no per-forward hooks. Build it after the model is on its device and dtype.
    The weights are not touched here: zero them once with `mask.apply_(model)` (or a first
    call) before training.
    """

    def __init__(self, model: nn.Module, mask: Mask):
        params = params_for(model, mask.names())
        self.params: list[Tensor] = []
        self.masks: list[Tensor] = []
        for p, (name, m) in zip(params, mask.items()):
            if p.shape != m.shape:
                raise ValueError(f"{name}: mask shape {tuple(m.shape)} != parameter shape {tuple(p.shape)}")
            if bool(m.all()):  # a fully kept tensor needs no work; a dense cycle costs nothing
                continue
            self.params.append(p)
            self.masks.append(m.to(device=p.device, dtype=p.dtype))

    def __call__(self) -> None:
        if self.params:
            with torch.no_grad():
                torch._foreach_mul_(self.params, self.masks)

