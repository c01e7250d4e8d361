"""Learning-rate schedules: a peak rule (max_lr per cycle) times a shape (the curve within one cycle).

    lr(q, t) = max_lr(q) * m(t)        q = cycle, t = optimizer step within the cycle

Peak rules are small frozen callables `cycle -> max_lr`. Shapes are `ShapeConfig`s turned into
a multiplier `m(t)` by `shape_multiplier`, and into a torch scheduler by `make_scheduler`.
The literature baselines are named (peak, shape) pairs in `BASELINES`. See docs/design.md.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from silo.config import Duration, ShapeConfig, duration_steps

# ----------------------------------------------------------------------------- peak rules


def _check_cycle(cycle: int) -> None:
    if isinstance(cycle, bool) or not isinstance(cycle, int) or cycle < 0:
        raise ValueError(f"cycle must be an int >= 0, got {cycle!r}")


def _check_lr(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_silo(prune_rate: float, offset: float, alpha: float, beta: float, delay: int) -> None:
    if not 0 < prune_rate < 1:
        raise ValueError(f"prune_rate must be in (0, 1), got {prune_rate!r}")
    if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
        raise ValueError(f"delay must be an int >= 0 (cycles), got {delay!r}")
    if not (math.isfinite(offset) and offset >= 0):
        raise ValueError(f"offset must be finite and >= 0, got {offset!r}")
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be finite and >= 0, got {alpha!r}")
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be finite and > 0, got {beta!r}")
    if offset + alpha <= 0:  # max_lr would be 0 at every cycle
        raise ValueError("offset + alpha must be > 0")


def silo_max_lr(
    cycle: int, *, prune_rate: float, offset: float, alpha: float, beta: float, delay: int
) -> float:
    """SILO's max_lr at `cycle` (docs/design.md, "SILO, exactly")."""
    _check_cycle(cycle)
    _check_silo(prune_rate, offset, alpha, beta, delay)
    if cycle <= delay:  # p = 0: the S-curve has not started
        return float(offset)
    p = 1.0 - (1.0 - prune_rate) ** (cycle - delay)  # pruned fraction SILO assumes
    return offset + alpha * _s_curve(p, beta)


def _s_curve(p: float, beta: float) -> float:
    """p**b / (p**b + (1-p)**b), computed as logistic(b * logit(p)) so that it cannot
    overflow or divide by zero: with b = 2000 both powers underflow to 0 and the plain
    form is 0/0. p = 0 and p = 1 (1 - (1-r)**k rounds to 1 for large k) are the limits."""
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    z = beta * (math.log(p) - math.log1p(-p))
    # The two branches of the logistic keep exp's argument <= 0: no overflow for any z.
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@dataclass(frozen=True)
class ConstantPeak:
    """The same max_lr at every cycle (LR rewinding and most baselines)."""

    value: float

    def __post_init__(self) -> None:
        _check_lr("value", self.value)

    def __call__(self, cycle: int) -> float:
        _check_cycle(cycle)
        return float(self.value)


@dataclass(frozen=True)
class SiloPeak:
    """max_lr rising along SILO's S-curve of the pruned fraction."""

    prune_rate: float
    offset: float
    alpha: float
    beta: float
    delay: int

    def __post_init__(self) -> None:
        # Fail when the schedule is built, not at cycle q of a long chain.
        _check_silo(self.prune_rate, self.offset, self.alpha, self.beta, self.delay)

    def __call__(self, cycle: int) -> float:
        return silo_max_lr(
            cycle, prune_rate=self.prune_rate, offset=self.offset,
            alpha=self.alpha, beta=self.beta, delay=self.delay,
        )


@dataclass(frozen=True)
class ListPeak:
    """An explicit max_lr per cycle: how the Oracle's choices are replayed."""

    values: tuple[float, ...]

    def __post_init__(self) -> None:
        # A tuple keeps the dataclass hashable and immune to the caller mutating its list.
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))
        if not self.values:
            raise ValueError("values must list at least one max_lr")
        for i, v in enumerate(self.values):
            _check_lr(f"values[{i}]", v)

    def __call__(self, cycle: int) -> float:
        _check_cycle(cycle)
        if cycle >= len(self.values):
            raise ValueError(
                f"cycle {cycle} is beyond the {len(self.values)} max_lr values given "
                f"(cycles 0..{len(self.values) - 1})"
            )
        return self.values[cycle]


# ----------------------------------------------------------------------------- shapes


def _cosine(t: int, start: int, end: int, floor: float) -> float:
    """Half cosine from 1 at step `start` to `floor` at step `end` (exactly: cos(pi) == -1)."""
    if end <= start:
        return 1.0
    progress = (t - start) / (end - start)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _check_steps(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


@dataclass(frozen=True)
class _CycleSteps:
    """The steps of one cycle that a shape's curve needs, its Durations resolved to steps."""

    total: int  # T, the cycle's optimizer steps
    warmup: int  # clamped to T
    milestones: tuple[int, ...]  # sorted; ones past the end are simply never reached

    @classmethod
    def of(cls, shape: ShapeConfig, total_steps: int, steps_per_epoch: int) -> _CycleSteps:
        warmup = min(duration_steps(shape.warmup, steps_per_epoch), total_steps)
        milestones = tuple(sorted(duration_steps(m, steps_per_epoch) for m in shape.milestones))
        return cls(total_steps, warmup, milestones)

    @property
    def last(self) -> int:
        return self.total - 1


def _ramp(t: int, warmup: int) -> float:
    # (t+1)/warmup, not t/warmup: the first step already trains (lr > 0) and step
    # warmup-1, the last warmup step, is exactly 1.0.
    return min(1.0, (t + 1) / warmup) if warmup > 0 else 1.0


def _decay(t: int, milestones: tuple[int, ...], gamma: float) -> float:
    """x gamma at each milestone reached (t >= milestone)."""
    return gamma ** sum(t >= m for m in milestones)


# The curves: m(t) of one shape for 0 <= t <= steps.last (shape_multiplier clamps t).


def _warmup_step_curve(t: int, shape: ShapeConfig, steps: _CycleSteps) -> float:
    return _ramp(t, steps.warmup) * _decay(t, steps.milestones, shape.gamma)


def _step_curve(t: int, shape: ShapeConfig, steps: _CycleSteps) -> float:
    return _decay(t, steps.milestones, shape.gamma)


def _warmup_cosine_curve(t: int, shape: ShapeConfig, steps: _CycleSteps) -> float:
    # The cosine starts at the last warmup step (where the ramp is 1.0) and reaches the
    # floor at the last step. A 1-step cycle trains at 1.0.
    start = max(steps.warmup - 1, 0)
    return _ramp(t, steps.warmup) if t < start else _cosine(t, start, steps.last, shape.floor)


def _cosine_curve(t: int, shape: ShapeConfig, steps: _CycleSteps) -> float:
    # As warmup_cosine without the warmup: the cosine starts at step 0.
    return _cosine(t, 0, steps.last, shape.floor)


def _cyclical_curve(t: int, shape: ShapeConfig, steps: _CycleSteps) -> float:
    # Smith (2015) "triangular": `waves` triangles of length T/waves, each rising linearly
    # from base at its start to 1.0 at its middle and back down.
    wave = steps.total / shape.waves
    triangle = 1.0 - abs(2.0 * ((t / wave) % 1.0) - 1.0)
    return shape.base + (1.0 - shape.base) * triangle


def _one_cycle_curve(t: int, shape: ShapeConfig, steps: _CycleSteps) -> float:
    # Smith & Topin (2019) one-cycle, as torch's OneCycleLR (anneal_strategy='cos', two
    # phases): cosine from base up to 1.0 over the first pct_start of the steps (peak at
    # step pct_start*T - 1, rounded), then cosine down to floor at the last step. torch's
    # defaults are base=1/25, floor=base/1e4; ours come from the ShapeConfig, and a floor
    # below base gives Smith's final "annihilation" under the starting lr.
    peak = max(round(shape.pct_start * steps.total) - 1, 0)
    if t < peak:
        rise = 0.5 * (1.0 - math.cos(math.pi * t / peak))
        return shape.base + (1.0 - shape.base) * rise
    return _cosine(t, peak, steps.last, shape.floor)


def _constant_curve(t: int, shape: ShapeConfig, steps: _CycleSteps) -> float:
    return 1.0


# ShapeConfig.name -> its curve; a read-only table, like BASELINES below.
_CURVES: dict[str, Callable[[int, ShapeConfig, _CycleSteps], float]] = {
    "warmup_step": _warmup_step_curve,
    "step": _step_curve,
    "warmup_cosine": _warmup_cosine_curve,
    "cosine": _cosine_curve,
    "cyclical": _cyclical_curve,
    "one_cycle": _one_cycle_curve,
    "constant": _constant_curve,
}


def shape_multiplier(
    shape: ShapeConfig, total_steps: int, steps_per_epoch: int
) -> Callable[[int], float]:
    """The multiplier m(t) of `shape` for steps t in [0, total_steps): lr = max_lr * m(t).

    Warmup and milestones are Durations (steps or '<x>ep'); ones past the end of the cycle are
    clamped rather than rejected, so a short smoke cycle can reuse a full-length task's shape.
    Fields a shape does not use (e.g. `warmup` for `cosine`) are ignored.
    """
    _check_steps("total_steps", total_steps)
    _check_steps("steps_per_epoch", steps_per_epoch)
    steps = _CycleSteps.of(shape, total_steps, steps_per_epoch)
    curve = _CURVES.get(shape.name)
    if curve is None:  # unreachable while ShapeConfig.name is a Literal; guards a name added there only
        raise ValueError(f"unknown shape {shape.name!r}")

    # A closure, not a callable object: LambdaLR's state_dict copies a callable object's
    # __dict__ but skips plain functions (see make_scheduler).
    def multiplier(t: int) -> float:
        if t < 0:
            raise ValueError(f"step must be >= 0, got {t}")
        # Steps past the cycle hold the last value: a loop that calls scheduler.step() after
        # its last optimizer step asks for step T, whose lr is never used.
        return float(curve(min(t, steps.last), shape, steps))

    return multiplier


def make_scheduler(
    optimizer: torch.optim.Optimizer, shape: ShapeConfig, total_steps: int, steps_per_epoch: int
) -> LambdaLR:
    """A LambdaLR giving lr = max_lr * m(t), where max_lr is each param group's current lr.

    Set the groups' lr to the cycle's max_lr first; call scheduler.step() after each
    optimizer.step(). The multiplier is a closure, so scheduler.state_dict() holds only plain
    numbers (torch saves callable objects' state, which weights_only loading would refuse).
    """
    multiplier = shape_multiplier(shape, total_steps, steps_per_epoch)
    for group in optimizer.param_groups:
        # LambdaLR keeps an existing 'initial_lr' (setdefault), which would silently reuse the
        # previous cycle's max_lr when an optimizer is reused; the current lr is the peak.
        group["initial_lr"] = group["lr"]
    return LambdaLR(optimizer, multiplier)


# ----------------------------------------------------------------------------- schedules


@dataclass(frozen=True)
class Schedule:
    """A peak rule times a shape. shape None means "the task's own shape"."""

    peak: Callable[[int], float]
    shape: ShapeConfig | None = None

    def max_lr(self, cycle: int) -> float:
        return float(self.peak(cycle))

    def shape_for(self, task_shape: ShapeConfig) -> ShapeConfig:
        return self.shape if self.shape is not None else task_shape


def silo_schedule(prune_rate: float, offset: float, alpha: float, beta: float, delay: int) -> Schedule:
    """SILO: S-shaped peak with the task's own shape."""
    return Schedule(SiloPeak(prune_rate, offset, alpha, beta, delay), None)


def _default(field: str) -> Any:  # baseline defaults are ShapeConfig's, not copies that could drift
    return ShapeConfig.model_fields[field].default


def _lr_rewinding(task_shape: ShapeConfig, *, max_lr: float) -> Schedule:
    # Renda et al. 2020: the original schedule, restarted every cycle (weights kept).
    return Schedule(ConstantPeak(max_lr), task_shape)


def _lr_warmup(task_shape: ShapeConfig, *, max_lr: float, warmup: Duration) -> Schedule:
    # Frankle et al.: linear warmup to a fixed peak, then the task's own milestones.
    shape = ShapeConfig(name="warmup_step", warmup=warmup,
                        milestones=task_shape.milestones, gamma=task_shape.gamma)
    return Schedule(ConstantPeak(max_lr), shape)


def _cosine_decay(task_shape: ShapeConfig, *, max_lr: float, floor: float = _default("floor")) -> Schedule:
    return Schedule(ConstantPeak(max_lr), ShapeConfig(name="cosine", floor=floor))


def _step_decay(
    task_shape: ShapeConfig, *, max_lr: float, milestones: Sequence[Duration],
    gamma: float = _default("gamma"),
) -> Schedule:
    return Schedule(ConstantPeak(max_lr), ShapeConfig(name="step", milestones=milestones, gamma=gamma))


def _cyclical(
    task_shape: ShapeConfig, *, max_lr: float, base: float = _default("base"), waves: int = _default("waves"),
) -> Schedule:
    return Schedule(ConstantPeak(max_lr), ShapeConfig(name="cyclical", base=base, waves=waves))


def _s_cyc(
    task_shape: ShapeConfig, *, prune_rate: float, offset: float, alpha: float, beta: float,
    delay: int, base: float = _default("base"), waves: int = _default("waves"),
) -> Schedule:
    # S-Cyc: the triangular cyclical shape with SILO's S-shaped peak.
    return Schedule(SiloPeak(prune_rate, offset, alpha, beta, delay),
                    ShapeConfig(name="cyclical", base=base, waves=waves))


BASELINES: dict[str, Callable[..., Schedule]] = {
    "lr_rewinding": _lr_rewinding,
    "lr_warmup": _lr_warmup,
    "cosine_decay": _cosine_decay,
    "step_decay": _step_decay,
    "cyclical": _cyclical,
    "s_cyc": _s_cyc,
}


def baseline(name: str, task_shape: ShapeConfig, **settings: Any) -> Schedule:
    """The literature baseline `name`, built from its settings (see BASELINES)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(sorted(BASELINES))}")
    make = BASELINES[name]
    # A baseline's settings are its keyword-only parameters: one place defines them.
    params = {
        k: p for k, p in inspect.signature(make).parameters.items() if p.kind is p.KEYWORD_ONLY
    }
    unknown = sorted(set(settings) - set(params))
    if unknown:
        raise ValueError(
            f"baseline {name!r}: unknown setting(s) {', '.join(unknown)}; allowed: {', '.join(params)}"
        )
    missing = [k for k, p in params.items() if p.default is p.empty and k not in settings]
    if missing:
        raise ValueError(f"baseline {name!r}: missing setting(s) {', '.join(missing)}")
    return make(task_shape, **settings)
