"""The verdict's rule (oracle.judge.selection) on hand-computed tables: pooled noise, delta, V,
the judged interval, open ends, P(inside) and what would decide it, exact ties."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from oracle.judge.selection import (
    DRAWS,
    IntervalDraws,
    competitive,
    judge,
    p_inside,
    pooled_sigma,
    round_table,
    seeds_to_decide,
    verdict_of,
)
from tests.oracle.judge._rows import rows_of

D = 0.01  # the residual pattern's size: +-D in a 2x2 block, zero elsewhere


def additive(m: dict[float, float], b: list[float], e: dict[float, list[float]]) -> dict[float, list[float]]:
    """a(v, s) = m(v) + b(s) + e(v, s)."""
    return {v: [m[v] + b[s] + e.get(v, [0.0] * len(b))[s] for s in range(len(b))] for v in m}


# Residuals whose row and column sums are zero, so the additive fit returns exactly them:
# sum e^2 = 4 D^2 over (H-1)(S-1) = 2 * 2 = 4 degrees of freedom -> sigma = D.
PATTERN = {0.03: [D, -D, 0.0], 0.1: [-D, D, 0.0]}


def test_pooled_sigma_on_a_3x3_table_is_the_residual_sd_of_the_additive_model():
    acc = additive({0.01: 0.80, 0.03: 0.85, 0.1: 0.82}, [0.0, 0.01, 0.02], PATTERN)
    table = round_table(rows_of(acc), [0, 1, 2])
    assert pooled_sigma(table) == pytest.approx(D, rel=1e-9)
    j = judge(table, grid=[0.01, 0.03, 0.1], tolerance=0.0)
    assert j.sd == pytest.approx(D * math.sqrt(2 / 3), rel=1e-9)  # sd_q = sigma * sqrt(2/S)
    assert (j.dof, j.delta) == (4, 0.0)  # (H-1)(S-1); the noise never enters delta


def test_on_a_6x3_table_only_the_better_half_is_pooled():
    m = {0.001: 0.50, 0.003: 0.60, 0.01: 0.88, 0.03: 0.90, 0.1: 0.89, 0.3: 0.40}
    # The three worse values (0.001, 0.003, 0.3) are near divergence: residuals of +-0.1.
    wild = {0.001: [0.1, -0.1, 0.0], 0.003: [-0.1, 0.1, 0.0]}
    acc = additive(m, [0.0, 0.002, -0.001], {**PATTERN, **wild})
    table = round_table(rows_of(acc), [0, 1, 2])
    assert [table.values[i] for i in competitive(table)] == [0.01, 0.03, 0.1]  # H = max(3, ceil(6/2))
    assert pooled_sigma(table) == pytest.approx(D, rel=1e-9)


def test_one_seed_has_no_noise_estimate_and_delta_is_the_tolerance():
    table = round_table(rows_of({0.01: [0.8], 0.03: [0.9], 0.1: [0.85]}), [0])
    assert pooled_sigma(table) is None
    j = judge(table, grid=table.values, tolerance=0.004)
    assert (j.sd, j.delta, j.sigma, j.dof) == (0.0, 0.004, None, 0)
    assert p_inside(j, table, 0.03, grid=table.values) == 1.0
    assert verdict_of(1.0, seeds=1) == "inside" and verdict_of(0.0, seeds=1) == "outside"


# True means of a 5-value round: 0.03 and 0.1 within delta = 1 point of the best (0.1),
# 0.3 1.3 points below it, the ends far below.
TRUE = {0.01: 0.80, 0.03: 0.895, 0.1: 0.90, 0.3: 0.887, 1.0: 0.50}


def exact(means: dict[float, float], seeds: int, d: float):
    """A table of `seeds` seeds whose grid means are exactly `means` and whose pooled noise is
    about `d`: residuals +-d alternating over the seeds on the two best values (every row and
    column sums to zero, so the additive fit returns them; `seeds` even)."""
    best = sorted(means, key=means.get)[-2:]
    signs = [(-1) ** s for s in range(seeds)]
    e = {best[0]: [d * x for x in signs], best[1]: [-d * x for x in signs]}
    return round_table(rows_of(additive(means, [0.001 * s for s in range(seeds)], e)), list(range(seeds)))


def test_delta_alone_defines_v_whatever_the_number_of_seeds_and_the_noise():
    # Seed noise much larger than the gaps: V is still the values within delta of the best,
    # the same interval for 2 seeds as for 30 (a tolerance that grew with sd would take 0.3 in
    # with few seeds and drop it as seeds are added).
    judged = set()
    for seeds in (2, 4, 10, 30):
        j = judge(exact(TRUE, seeds, 0.02), grid=list(TRUE), tolerance=0.01)
        assert j.sigma > 0.015 and j.members == (0.03, 0.1)
        judged.add((j.judged_low, j.judged_high))
    assert judged == {(math.sqrt(0.01 * 0.03), math.sqrt(0.1 * 0.3))}
    assert judge(exact(TRUE, 4, 0.02), grid=list(TRUE), tolerance=0.0131).members == (0.03, 0.1, 0.3)


def test_the_judged_interval_from_noisy_seeds_converges_to_that_of_the_true_means():
    # Seeds drawn around the true means (sigma 1 point): the judged interval of many seeds is
    # the true means' interval, and it is a rule's estimate of one fixed target.
    rng = np.random.default_rng(29)
    truth = judge(exact(TRUE, 2, 0.0), grid=list(TRUE), tolerance=0.01)
    assert truth.members == (0.03, 0.1)

    def judged(seeds: int):
        acc = {v: list(m + 0.01 * rng.standard_normal(seeds)) for v, m in TRUE.items()}
        j = judge(round_table(rows_of(acc), list(range(seeds))), grid=list(TRUE), tolerance=0.01)
        return j.judged_low, j.judged_high

    few = [judged(3) for _ in range(20)]
    many = [judged(2000) for _ in range(5)]
    assert any(x != (truth.judged_low, truth.judged_high) for x in few)  # 3 seeds often miss it
    assert set(many) == {(truth.judged_low, truth.judged_high)}


GRID5 = [0.01, 0.03, 0.1, 0.3, 1.0]


def one_seed_table(means: list[float]):
    return round_table(rows_of({v: [a] for v, a in zip(GRID5, means)}), [0])


def test_the_judged_interval_reaches_halfway_to_both_outside_neighbours():
    table = one_seed_table([0.70, 0.80, 0.90, 0.897, 0.60])
    j = judge(table, grid=GRID5, tolerance=0.005)
    assert j.winner == 0.1 and j.members == (0.1, 0.3)
    assert (j.low, j.high) == (0.1, 0.3)
    assert j.judged_low == pytest.approx(math.sqrt(0.03 * 0.1), rel=1e-12)
    assert j.judged_high == pytest.approx(math.sqrt(0.3 * 1.0), rel=1e-12)
    assert (j.open_low, j.open_high) == (False, False)


def test_an_end_at_the_grids_edge_stays_there_and_is_open():
    low = judge(one_seed_table([0.90, 0.899, 0.80, 0.7, 0.6]), grid=GRID5, tolerance=0.005)
    assert (low.judged_low, low.open_low, low.open_high) == (0.01, True, False)
    assert low.judged_high == pytest.approx(math.sqrt(0.03 * 0.1), rel=1e-12)
    high = judge(one_seed_table([0.5, 0.6, 0.7, 0.899, 0.90]), grid=GRID5, tolerance=0.005)
    assert (high.judged_high, high.open_high, high.open_low) == (1.0, True, False)
    assert high.judged_low == pytest.approx(math.sqrt(0.1 * 0.3), rel=1e-12)


def test_an_incomplete_grid_value_is_outside_v_but_still_a_neighbour():
    rows = rows_of({0.01: [0.95, 0.95], 0.03: [0.90, 0.90], 0.1: [0.88, 0.89]},
                   status={(0.01, 1): "diverged"})
    table = round_table(rows, [0, 1])
    assert table.values == (0.03, 0.1)  # 0.01 diverged for one seed: not complete
    j = judge(table, grid=[0.01, 0.03, 0.1], tolerance=0.005)
    assert j.winner == 0.03 and not j.open_low  # 0.01 is the grid's end, 0.03 is not
    assert j.judged_low == pytest.approx(math.sqrt(0.01 * 0.03), rel=1e-12)


def test_the_boundary_of_v_is_inclusive():
    # Exactly representable: 0.75 - 0.25 == 0.5, so 0.5 is on the boundary and inside V.
    table = round_table(rows_of({0.01: [0.5], 0.03: [0.75], 0.1: [0.25]}), [0])
    j = judge(table, grid=table.values, tolerance=0.25)
    assert j.members == (0.01, 0.03)


def test_differences_below_1e9_are_ties_and_go_to_the_smaller_max_lr():
    # 0.1 + 0.2 and 0.3 differ by 5.6e-17 in floating point: the same mean.
    acc = {0.01: [0.1 + 0.2, 0.3], 0.03: [0.3, 0.3], 0.1: [0.3, 0.1 + 0.2]}
    rows = rows_of(acc)
    winners = set()
    for order in range(6):
        random.Random(order).shuffle(rows)
        winners.add(judge(round_table(rows, [0, 1]), grid=[0.01, 0.03, 0.1], tolerance=0).winner)
    assert winners == {0.01}
    # Reversed, the larger value is ahead by more than rounding: it wins.
    ahead = rows_of({0.01: [0.3, 0.3], 0.03: [0.3 + 2e-9, 0.3 + 2e-9]})
    assert judge(round_table(ahead, [0, 1]), grid=[0.01, 0.03], tolerance=0).winner == 0.03


def noisy_table():
    acc = additive({0.01: 0.80, 0.03: 0.85, 0.1: 0.845, 0.3: 0.70}, [0.0, 0.01, 0.02], PATTERN)
    return round_table(rows_of(acc), [0, 1, 2])


def test_p_inside_is_deterministic_and_reproducible():
    table = noisy_table()
    j = judge(table, grid=table.values, tolerance=0.0)
    first = p_inside(j, table, 0.06, grid=table.values)
    assert first == p_inside(j, table, 0.06, grid=table.values)
    assert 0.0 < first < 1.0 and first * DRAWS == int(first * DRAWS)  # a share of 2,000 draws
    assert p_inside(j, table, 0.06, grid=table.values, seed=1) != first  # the RNG seed matters


def test_p_inside_extremes():
    zero_noise = round_table(rows_of({0.01: [0.8, 0.8], 0.03: [0.9, 0.9], 0.1: [0.85, 0.85]}), [0, 1])
    j = judge(zero_noise, grid=zero_noise.values, tolerance=0.005)
    assert j.sigma == pytest.approx(0.0, abs=1e-12)
    assert p_inside(j, zero_noise, j.winner, grid=zero_noise.values) == 1.0
    table = noisy_table()
    j = judge(table, grid=table.values, tolerance=0.0)
    assert p_inside(j, table, 10.0, grid=table.values) == 0.0
    assert p_inside(j, table, 1e-4, grid=table.values) == 0.0


def test_verdict_thresholds():
    assert [verdict_of(p, seeds=3) for p in (0.8, 0.79, 0.5, 0.21, 0.2, 0.0)] == [
        "inside", "uncertain", "uncertain", "uncertain", "outside", "outside"]


def test_eight_values_pool_the_best_four():
    m = {v: a for v, a in zip([1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3],
                              [0.3, 0.4, 0.5, 0.86, 0.88, 0.9, 0.89, 0.2])}
    table = round_table(rows_of(additive(m, [0.0, 0.01, 0.02], {})), [0, 1, 2])
    assert [table.values[i] for i in competitive(table)] == [3e-3, 1e-2, 3e-2, 0.1]  # ceil(8/2) = 4


def test_two_complete_values_and_two_seeds_give_a_noise_estimate():
    table = round_table(rows_of({0.01: [0.80, 0.82], 0.1: [0.90, 0.88]}), [0, 1])
    # residuals +-0.01 at each cell: sum e^2 = 4e-4 over (2-1)(2-1) -> sigma = 0.02
    assert pooled_sigma(table) == pytest.approx(0.02, rel=1e-9)


def test_p_inside_is_the_t_probability_of_the_gap_staying_within_delta():
    # Two values 1 point apart, sigma 2 points, S = 2: the difference of the redrawn means is
    # d + s T with s = sigma * sqrt(2/S) and T a t with (H-1)(S-1) = 1 degree of freedom (a
    # Cauchy, as sigma itself is redrawn), so P = 1/2 + atan((delta - d) / s) / pi. SILO just
    # above the geometric midpoint of the two is inside only when 0.1 is in V: when it wins,
    # or trails 0.01 by at most delta. With sigma taken as known it would be the normal's 0.84.
    from statistics import NormalDist

    acc = {0.01: [0.90 + 0.01, 0.90 - 0.01], 0.1: [0.89 - 0.01, 0.89 + 0.01]}  # residuals +-0.01
    table = round_table(rows_of(acc), [0, 1])
    grid = [0.001, 0.01, 0.1, 1.0]
    j = judge(table, grid=grid, tolerance=0.03)
    assert (pooled_sigma(table), j.dof) == (pytest.approx(0.02, rel=1e-9), 1)
    s, d = 0.02, 0.01
    silo = 1.1 * math.sqrt(0.01 * 0.1)
    got = p_inside(j, table, silo, grid=grid)
    assert got == pytest.approx(0.5 + math.atan((0.03 - d) / s) / math.pi, abs=0.035)  # 0.75; 3.5 sds
    known = IntervalDraws.drawn(j, table, grid=grid, scales=np.full(DRAWS, 0.02 / math.sqrt(2)),
                                z=np.random.default_rng(0).standard_normal((DRAWS, 2))).share([silo])[0]
    assert known == pytest.approx(NormalDist().cdf((0.03 - d) / s), abs=0.035)  # 0.84
    assert got < known - 0.04  # two seeds: the noise estimate's own uncertainty makes P less sure


def test_silo_one_point_below_the_best_with_delta_half_a_point_is_outside_as_seeds_grow():
    # SILO at 0.03, whose mean is 1 point below the best's (0.1); delta 0.5 points; sigma 1
    # point. Few seeds cannot tell, many say outside: P falls to 0, never towards "inside".
    means = {0.01: 0.80, 0.03: 0.89, 0.1: 0.90, 0.3: 0.85, 1.0: 0.50}
    ps = []
    for seeds in (2, 4, 10, 30, 100, 300):
        table = exact(means, seeds, 0.01)
        j = judge(table, grid=list(means), tolerance=0.005)
        assert j.members == (0.1,) and not j.contains(0.03)
        ps.append(p_inside(j, table, 0.03, grid=list(means)))
    assert ps == sorted(ps, reverse=True) and ps[0] > 0.2 and ps[-1] < 0.01
    assert verdict_of(ps[0], seeds=2) == "uncertain" and verdict_of(ps[-1], seeds=300) == "outside"


def test_seeds_to_decide_is_where_p_would_reach_a_threshold():
    means = {0.01: 0.80, 0.03: 0.89, 0.1: 0.90, 0.3: 0.85, 1.0: 0.50}
    table = exact(means, 2, 0.01)
    j = judge(table, grid=list(means), tolerance=0.005)
    assert verdict_of(p_inside(j, table, 0.03, grid=list(means)), seeds=2) == "uncertain"
    n = seeds_to_decide(j, table, 0.03, grid=list(means))
    # the gap is 0.5 points beyond delta, the sd of a difference sigma * sqrt(2/n): with sigma
    # known, P <= 0.2 from n = 2 (0.8416 sigma / 0.005)^2 seeds on (11.3: sigma is 1.41 points
    # here); a few more as sigma's own uncertainty (dof (H-1)(n-1)) still widens the draws
    normal = 2 * (0.8416 * j.sigma / 0.005) ** 2
    assert j.sigma == pytest.approx(0.01 * math.sqrt(2), rel=1e-9)
    assert normal <= n <= 1.5 * normal
    # SILO's neighbour exactly delta below the best: P stays near 1/2 whatever the seeds
    level = exact({**means, 0.03: 0.895}, 2, 0.01)
    assert seeds_to_decide(judge(level, grid=list(means), tolerance=0.005), level, 0.03, grid=list(means)) is None
    # one seed: no noise estimate, nothing to project
    one = one_seed_table([0.8, 0.89, 0.9, 0.85, 0.5])
    assert seeds_to_decide(judge(one, grid=GRID5, tolerance=0.005), one, 0.03, grid=GRID5) is None


def test_p_inside_counts_the_midpoint_reach_of_the_judged_interval():
    table = round_table(rows_of({0.01: [0.8, 0.8], 0.03: [0.9, 0.9], 0.1: [0.85, 0.85]}), [0, 1])
    j = judge(table, grid=table.values, tolerance=0.005)
    assert j.winner_mean == pytest.approx(0.9)
    just_below = 0.03 * 0.95  # below min V but above the midpoint with 0.01
    assert j.contains(just_below) and p_inside(j, table, just_below, grid=table.values) == 1.0


def test_one_seed_verdicts_are_the_point_estimate():
    assert verdict_of(0.5, seeds=1) == "inside" and verdict_of(0.49, seeds=1) == "outside"


def test_a_given_pool_replaces_the_rounds_own_half():
    m = {0.001: 0.50, 0.003: 0.60, 0.01: 0.88, 0.03: 0.90, 0.1: 0.89, 0.3: 0.40}
    wild = {0.001: [0.1, -0.1, 0.0], 0.003: [-0.1, 0.1, 0.0]}
    table = round_table(rows_of(additive(m, [0.0, 0.002, -0.001], {**PATTERN, **wild})), [0, 1, 2])
    assert pooled_sigma(table, pool=3) == pooled_sigma(table) == pytest.approx(D, rel=1e-9)
    assert pooled_sigma(table, pool=6) > 5 * D  # the wild values are in: all six pooled
    # (How many values a beam round pools: tests/oracle/judge/test_plan.py.)
