"""Tests of silo.schedules: SILO against its formula, every shape's curve, the torch
scheduler, and the named baselines."""

from __future__ import annotations

import math

import pytest
import torch

from silo.config import ShapeConfig
from silo.schedules import (
    BASELINES,
    ConstantPeak,
    ListPeak,
    Schedule,
    SiloPeak,
    baseline,
    make_scheduler,
    shape_multiplier,
    silo_max_lr,
    silo_schedule,
)

RESNET20 = dict(prune_rate=0.2, offset=0.03, alpha=0.04, beta=5.0, delay=1)


def curve(shape: ShapeConfig, T: int, spe: int = 10) -> list[float]:
    m = shape_multiplier(shape, T, spe)
    return [m(t) for t in range(T)]


# ----------------------------------------------------------------------------- SILO


def formula(q, r, offset, alpha, beta, d):
    p = 1 - (1 - r) ** max(0, q - d)
    return offset + alpha * p**beta / (p**beta + (1 - p) ** beta)


@pytest.mark.parametrize(
    "r, d, offset, alpha, beta",
    [(0.2, 1, 0.03, 0.04, 5.0), (0.2, 0, 0.04, 0.06, 5.0), (0.5, 3, 0.01, 0.1, 2.0),
     (0.1, 2, 0.0, 0.2, 0.7), (0.9, 0, 0.05, 0.0, 1.0)],
)
def test_silo_matches_formula_and_authors_form(r, d, offset, alpha, beta):
    values = []
    for q in range(15):
        got = silo_max_lr(q, prune_rate=r, offset=offset, alpha=alpha, beta=beta, delay=d)
        assert got == pytest.approx(formula(q, r, offset, alpha, beta, d), rel=1e-12, abs=1e-15)
        if q <= d:
            assert got == offset  # exactly: no pruning assumed yet
        else:
            p = 1 - (1 - r) ** (q - d)
            if 0 < p < 1:
                authors = alpha / (1 + (p / (1 - p)) ** (-beta)) + offset
                assert got == pytest.approx(authors, rel=1e-12, abs=1e-15)
        values.append(got)
    assert all(b >= a for a, b in zip(values, values[1:]))  # monotone non-decreasing
    assert values[-1] <= offset + alpha + 1e-15


def test_silo_resnet20_defaults_by_hand():
    silo = SiloPeak(**RESNET20)
    # q <= d = 1: p = 0, max_lr = offset.
    assert silo(0) == 0.03 and silo(1) == 0.03
    # q = 2: p = 0.2, p/(1-p) = 1/4, S = 1/(1 + 4**5) = 1/1025.
    assert silo(2) == pytest.approx(0.03 + 0.04 / 1025, rel=1e-12)
    # q = 3: p = 0.36, p/(1-p) = 9/16, S = 9**5 / (9**5 + 16**5) = 59049 / 1107625.
    assert silo(3) == pytest.approx(0.03 + 0.04 * 59049 / 1107625, rel=1e-12)
    # q = 4: p = 0.488, p/(1-p) = 61/64, S = 61**5 / (61**5 + 64**5).
    assert silo(4) == pytest.approx(0.03 + 0.04 * 61**5 / (61**5 + 64**5), rel=1e-12)
    # (64/61)**5 = 1.2713, S = 1/2.2713 = 0.44027: still below the midpoint 0.05.
    assert silo(4) == pytest.approx(0.047611, abs=1e-6)
    # q = 5: p = 0.5904 > 1/2, so past the midpoint; far out, max_lr -> offset + alpha.
    assert 0.05 < silo(5) < 0.07
    assert silo(60) == pytest.approx(0.07, abs=1e-12)


# The paper's ResNet-20 (offset 0.03, alpha 0.04, beta 5, d 1, r 0.2) per cycle, by hand:
# p = 1 - (4/5)**k with k = q - 1, so p/(1-p) = (5**k - 4**k) / 4**k and
# S = (5**k - 4**k)**5 / ((5**k - 4**k)**5 + 4**(5k)); max_lr = 0.03 + 0.04 * S.
RESNET20_BY_CYCLE = [0.03, 0.03, 0.0300390243902, 0.0321324545762, 0.0476109996459,
                     0.0644613899888, 0.068929352034, 0.0697748612671, 0.0699474321436,
                     0.0699866861489, 0.0699964188124, 0.0699989926018]


def test_silo_resnet20_pinned_per_cycle():
    from fractions import Fraction

    for q, pinned in enumerate(RESNET20_BY_CYCLE):
        got = silo_max_lr(q, **RESNET20)
        assert got == pytest.approx(pinned, rel=1e-11), q
        k = max(0, q - 1)
        a, b = (5**k - 4**k) ** 5, 4 ** (5 * k)
        exact = Fraction(3, 100) + Fraction(4, 100) * Fraction(a, a + b)
        assert got == pytest.approx(float(exact), rel=1e-13), q


@pytest.mark.parametrize("beta", [50.0, 500.0, 2000.0, 1e4])
@pytest.mark.parametrize("r", [0.05, 0.2, 0.5, 0.9])
def test_silo_large_beta_is_a_finite_step(beta, r):
    # beta 2000, r 0.2, q 4 used to raise ZeroDivisionError: both powers underflow to 0.
    values = [silo_max_lr(q, prune_rate=r, offset=0.03, alpha=0.04, beta=beta, delay=1)
              for q in range(400)]
    assert all(math.isfinite(v) and 0.03 <= v <= 0.07 for v in values)
    assert all(b >= a for a, b in zip(values, values[1:]))
    for q, v in enumerate(values):
        p = 1 - (1 - r) ** max(0, q - 1)
        # A steep S-curve is a step at p = 1/2 (away from it: the ends, to 1e-15).
        if beta >= 500 and p < 0.45:
            assert v == pytest.approx(0.03, abs=1e-15)
        elif beta >= 500 and p > 0.55:
            assert v == pytest.approx(0.07, abs=1e-15)
    assert values[-1] == 0.07  # p rounds to 1: the limit, not 0/0


def test_silo_at_p_one_half_is_the_midpoint_for_any_beta():
    for beta in (1.0, 5.0, 2000.0, 1e4):
        assert silo_max_lr(2, prune_rate=0.5, offset=0.01, alpha=0.1, beta=beta, delay=1) == pytest.approx(
            0.06, rel=1e-15)


@pytest.mark.parametrize(
    "arg, bad",
    [("prune_rate", 0.0), ("prune_rate", 1.0), ("delay", -1), ("alpha", -0.1), ("beta", 0.0),
     ("offset", float("nan"))],
)
def test_silo_rejects_bad_arguments_by_name(arg, bad):
    kwargs = {**RESNET20, arg: bad}
    with pytest.raises(ValueError, match=arg):
        silo_max_lr(2, **kwargs)
    with pytest.raises(ValueError, match=arg):
        SiloPeak(**kwargs)


def test_silo_rejects_negative_cycle_and_all_zero_lr():
    with pytest.raises(ValueError, match="cycle"):
        silo_max_lr(-1, **RESNET20)
    with pytest.raises(ValueError, match="offset \\+ alpha"):
        SiloPeak(**{**RESNET20, "offset": 0.0, "alpha": 0.0})


def test_constant_and_list_peaks():
    assert [ConstantPeak(0.1)(q) for q in range(3)] == [0.1, 0.1, 0.1]
    with pytest.raises(ValueError, match="value"):
        ConstantPeak(0.0)
    peak = ListPeak([0.1, 0.05, 0.2])
    assert [peak(q) for q in range(3)] == [0.1, 0.05, 0.2]
    assert hash(peak) == hash(ListPeak((0.1, 0.05, 0.2)))
    with pytest.raises(ValueError, match="cycle 3 is beyond the 3"):
        peak(3)
    with pytest.raises(ValueError, match=r"values\[1\]"):
        ListPeak([0.1, -1.0])


# ----------------------------------------------------------------------------- shapes


def test_warmup_step_reaches_one_and_divides_at_milestones():
    # The SILO paper's shape, in epochs: 10 steps/epoch, warmup 20 steps, /10 at 5ep and 7ep.
    shape = ShapeConfig(name="warmup_step", warmup=20, milestones=("5ep", "7ep"), gamma=0.1)
    m = curve(shape, T=100, spe=10)
    assert m[0] == pytest.approx(1 / 20)
    assert m[9] == pytest.approx(10 / 20)
    assert all(b > a for a, b in zip(m[:20], m[1:20]))  # strictly rising during warmup
    assert m[19] == 1.0  # exactly the peak at the last warmup step
    assert m[20] == 1.0 and m[49] == 1.0  # flat until the first milestone (step 50)
    assert m[50] == pytest.approx(m[49] / 10)
    assert m[69] == pytest.approx(0.1) and m[70] == pytest.approx(0.01)  # 7ep = step 70
    assert m[99] == pytest.approx(0.01)


def test_fractional_epoch_milestones_and_clamping():
    shape = ShapeConfig(name="step", milestones=("2.5ep", 1000), gamma=0.5)
    m = curve(shape, T=40, spe=8)  # 2.5ep = step 20; step 1000 is past the cycle: never fires
    assert m[19] == 1.0 and m[20] == 0.5 and m[39] == 0.5
    long_warmup = ShapeConfig(name="warmup_step", warmup="10ep")  # 100 steps > T = 30
    assert curve(long_warmup, T=30, spe=10)[29] == pytest.approx(30 / 30)  # clamped to T


def test_step_shape_has_no_warmup():
    m = curve(ShapeConfig(name="step", warmup=5, milestones=(3, 6)), T=10)
    assert m == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.01])


@pytest.mark.parametrize("floor", [0.0, 0.05])
def test_cosine_ends_at_floor(floor):
    m = curve(ShapeConfig(name="cosine", floor=floor), T=51)
    assert m[0] == pytest.approx(1.0)
    assert m[25] == pytest.approx(floor + (1 - floor) / 2)  # halfway
    assert m[50] == floor  # exactly
    assert all(b <= a for a, b in zip(m, m[1:]))


def test_warmup_cosine():
    m = curve(ShapeConfig(name="warmup_cosine", warmup=10, floor=0.1), T=50)
    assert m[0] == pytest.approx(0.1) and m[9] == 1.0
    assert m[9 + 20] == pytest.approx(0.1 + 0.9 / 2)  # cosine spans steps 9..49
    assert m[49] == 0.1
    assert all(b <= a for a, b in zip(m[9:], m[10:]))


def test_cyclical_hits_base_and_peak():
    m = curve(ShapeConfig(name="cyclical", base=0.2, waves=2), T=40)  # waves of 20 steps
    assert m[0] == 0.2 and m[20] == 0.2
    assert m[10] == 1.0 and m[30] == 1.0
    assert m[5] == pytest.approx(0.6) and m[15] == pytest.approx(0.6)  # linear sides
    assert min(m) == 0.2 and max(m) == 1.0


def test_one_cycle_peaks_at_pct_start():
    shape = ShapeConfig(name="one_cycle", pct_start=0.25, base=0.04, floor=0.001)
    m = curve(shape, T=100)
    assert m.index(max(m)) == 24 and m[24] == 1.0  # 25 of the 100 steps rise
    assert m[0] == pytest.approx(0.04) and m[99] == 0.001
    assert all(b >= a for a, b in zip(m[:24], m[1:25]))
    assert all(b <= a for a, b in zip(m[24:], m[25:]))


def test_one_cycle_matches_torch_one_cycle_lr():
    T, base, floor = 60, 0.04, 0.0005
    shape = ShapeConfig(name="one_cycle", pct_start=0.3, base=base, floor=floor)
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0)
    ref = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=1.0, total_steps=T, pct_start=0.3, anneal_strategy="cos",
        cycle_momentum=False, div_factor=1 / base, final_div_factor=base / floor,
    )
    expected = []
    for _ in range(T):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    assert curve(shape, T) == pytest.approx(expected, rel=1e-9)


def test_constant_shape_is_flat():
    assert curve(ShapeConfig(name="constant", warmup=5, milestones=(2,)), T=7) == [1.0] * 7


def test_shape_edges():
    with pytest.raises(ValueError, match="total_steps"):
        shape_multiplier(ShapeConfig(), 0, 10)
    for name in ("warmup_step", "warmup_cosine", "cosine", "step", "one_cycle", "constant"):
        assert curve(ShapeConfig(name=name, warmup=3), T=1) == [1.0]  # a 1-step cycle: the peak
    m = shape_multiplier(ShapeConfig(name="cosine"), 5, 1)
    assert m(5) == m(4) == 0.0  # the step after the cycle holds the last value
    with pytest.raises(ValueError, match="step"):
        m(-1)


# ----------------------------------------------------------------------------- torch


@pytest.mark.parametrize(
    "shape",
    [ShapeConfig(name="warmup_step", warmup=7, milestones=("2ep", 25)),
     ShapeConfig(name="warmup_cosine", warmup=5, floor=0.01),
     ShapeConfig(name="cyclical", waves=3), ShapeConfig(name="one_cycle")],
)
def test_make_scheduler_drives_sgd(shape):
    T, spe, max_lr = 30, 8, 0.05
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=max_lr, momentum=0.9)
    sched = make_scheduler(opt, shape, T, spe)
    m = shape_multiplier(shape, T, spe)
    for t in range(T):
        assert opt.param_groups[0]["lr"] == pytest.approx(max_lr * m(t), rel=1e-12)
        loss = model(torch.randn(8, 4)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def test_make_scheduler_reused_optimizer_takes_new_peak():
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    make_scheduler(opt, ShapeConfig(name="constant"), 5, 1)
    for group in opt.param_groups:
        group["lr"] = 0.02  # the next cycle's max_lr
    make_scheduler(opt, ShapeConfig(name="constant"), 5, 1)
    assert opt.param_groups[0]["lr"] == 0.02  # not the previous cycle's 0.1


# ----------------------------------------------------------------------------- baselines

TASK = ShapeConfig(name="warmup_step", warmup=200, milestones=("25ep", "32ep"), gamma=0.1)


def test_silo_schedule_uses_task_shape():
    s = silo_schedule(**RESNET20)
    assert s.shape is None and s.shape_for(TASK) == TASK
    assert [s.max_lr(q) for q in range(4)] == [SiloPeak(**RESNET20)(q) for q in range(4)]


def test_baselines_peaks_and_shapes():
    s = baseline("lr_rewinding", TASK, max_lr=0.1)
    assert s.shape_for(TASK) == TASK and s.max_lr(0) == s.max_lr(7) == 0.1

    s = baseline("lr_warmup", TASK, max_lr=0.1, warmup="2ep")
    assert s.shape == ShapeConfig(name="warmup_step", warmup="2ep", milestones=TASK.milestones)
    assert s.max_lr(5) == 0.1

    s = baseline("cosine_decay", TASK, max_lr=0.2, floor=0.01)
    assert s.shape == ShapeConfig(name="cosine", floor=0.01) and s.max_lr(3) == 0.2
    assert baseline("cosine_decay", TASK, max_lr=0.2).shape.floor == 0.0

    s = baseline("step_decay", TASK, max_lr=0.1, milestones=[10, "3ep"], gamma=0.2)
    assert s.shape == ShapeConfig(name="step", milestones=(10, "3ep"), gamma=0.2)

    s = baseline("cyclical", TASK, max_lr=0.3, base=0.05, waves=4)
    assert s.shape == ShapeConfig(name="cyclical", base=0.05, waves=4) and s.max_lr(2) == 0.3

    s = baseline("s_cyc", TASK, **RESNET20, waves=2)
    assert s.shape == ShapeConfig(name="cyclical", waves=2)
    assert [s.max_lr(q) for q in range(6)] == [silo_max_lr(q, **RESNET20) for q in range(6)]

    assert set(BASELINES) == {"lr_rewinding", "lr_warmup", "cosine_decay", "step_decay",
                              "cyclical", "s_cyc"}
    assert all(isinstance(baseline(n, TASK, **_min_settings(n)), Schedule) for n in BASELINES)


def _min_settings(name):
    return {"lr_warmup": dict(max_lr=0.1, warmup=10), "step_decay": dict(max_lr=0.1, milestones=[5]),
            "s_cyc": RESNET20}.get(name, dict(max_lr=0.1))


def test_baseline_bad_names_and_settings():
    with pytest.raises(ValueError, match="'nope'.*cosine_decay.*lr_rewinding"):
        baseline("nope", TASK, max_lr=0.1)
    with pytest.raises(ValueError, match="unknown setting.*gama"):
        baseline("step_decay", TASK, max_lr=0.1, milestones=[5], gama=0.2)
    with pytest.raises(ValueError, match="missing setting.*max_lr"):
        baseline("cyclical", TASK)
    with pytest.raises(ValueError, match="floor"):
        baseline("cosine_decay", TASK, max_lr=0.1, floor=2.0)  # ShapeConfig's own validation
    with pytest.raises(ValueError, match="value"):
        baseline("lr_rewinding", TASK, max_lr=-0.1)
    assert not math.isnan(baseline("lr_rewinding", TASK, max_lr=0.1).max_lr(0))
