"""The verdict's rule (oracle.judge.selection) on hand-computed tables: pooled noise, tol, V, the
judged interval, open ends, P(inside), exact ties and refinement."""

from __future__ import annotations

import math
import random

import pytest

from oracle.judge.selection import (
    DRAWS,
    competitive,
    judge,
    p_inside,
    plan_round,
    pooled_sigma,
    refined_value,
    round_table,
    verdict_of,
)

D = 0.01  # the residual pattern's size: +-D in a 2x2 block, zero elsewhere


def rows_of(acc: dict[float, list[float]], status: dict | None = None) -> list[dict]:
    status = status or {}
    return [{"max_lr": v, "seed": s, "val_acc": a, "status": status.get((v, s), "ok")}
            for v, per_seed in acc.items() for s, a in enumerate(per_seed)]


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
    j = judge(table, grid=[0.01, 0.03, 0.1], tolerance=0.0, noise_k=2.0)
    assert j.sd == pytest.approx(D * math.sqrt(2 / 3), rel=1e-9)  # sd_q = sigma * sqrt(2/S)
    assert j.tol == pytest.approx(2 * D * math.sqrt(2 / 3), rel=1e-9)


def test_on_a_6x3_table_only_the_better_half_is_pooled():
    m = {0.001: 0.50, 0.003: 0.60, 0.01: 0.88, 0.03: 0.90, 0.1: 0.89, 0.3: 0.40}
    # The three worse values (0.001, 0.003, 0.3) are near divergence: residuals of +-0.1.
    wild = {0.001: [0.1, -0.1, 0.0], 0.003: [-0.1, 0.1, 0.0]}
    acc = additive(m, [0.0, 0.002, -0.001], {**PATTERN, **wild})
    table = round_table(rows_of(acc), [0, 1, 2])
    assert [table.values[i] for i in competitive(table)] == [0.01, 0.03, 0.1]  # H = max(3, ceil(6/2))
    assert pooled_sigma(table) == pytest.approx(D, rel=1e-9)


def test_one_seed_has_no_noise_estimate_and_tol_is_the_tolerance():
    table = round_table(rows_of({0.01: [0.8], 0.03: [0.9], 0.1: [0.85]}), [0])
    assert pooled_sigma(table) is None
    j = judge(table, grid=table.values, tolerance=0.004, noise_k=2.0)
    assert (j.sd, j.tol, j.sigma) == (0.0, 0.004, None)
    assert p_inside(j, table, 0.03, grid=table.values) == 1.0
    assert verdict_of(1.0, seeds=1) == "inside" and verdict_of(0.0, seeds=1) == "outside"


def test_tol_is_the_larger_of_the_tolerance_and_noise_k_times_sd():
    acc = additive({0.01: 0.80, 0.03: 0.85, 0.1: 0.82}, [0.0, 0.01, 0.02], PATTERN)
    table = round_table(rows_of(acc), [0, 1, 2])
    assert judge(table, grid=table.values, tolerance=0.05, noise_k=2.0).tol == 0.05
    assert judge(table, grid=table.values, tolerance=0.0, noise_k=0.0).tol == 0.0


GRID5 = [0.01, 0.03, 0.1, 0.3, 1.0]


def one_seed_table(means: list[float]):
    return round_table(rows_of({v: [a] for v, a in zip(GRID5, means)}), [0])


def test_the_judged_interval_reaches_halfway_to_both_outside_neighbours():
    table = one_seed_table([0.70, 0.80, 0.90, 0.897, 0.60])
    j = judge(table, grid=GRID5, tolerance=0.005, noise_k=2.0)
    assert j.winner == 0.1 and j.members == (0.1, 0.3)
    assert (j.low, j.high) == (0.1, 0.3)
    assert j.judged_low == pytest.approx(math.sqrt(0.03 * 0.1), rel=1e-12)
    assert j.judged_high == pytest.approx(math.sqrt(0.3 * 1.0), rel=1e-12)
    assert (j.open_low, j.open_high) == (False, False)


def test_an_end_at_the_grids_edge_stays_there_and_is_open():
    low = judge(one_seed_table([0.90, 0.899, 0.80, 0.7, 0.6]), grid=GRID5, tolerance=0.005, noise_k=0)
    assert (low.judged_low, low.open_low, low.open_high) == (0.01, True, False)
    assert low.judged_high == pytest.approx(math.sqrt(0.03 * 0.1), rel=1e-12)
    high = judge(one_seed_table([0.5, 0.6, 0.7, 0.899, 0.90]), grid=GRID5, tolerance=0.005, noise_k=0)
    assert (high.judged_high, high.open_high, high.open_low) == (1.0, True, False)
    assert high.judged_low == pytest.approx(math.sqrt(0.1 * 0.3), rel=1e-12)


def test_an_incomplete_grid_value_is_outside_v_but_still_a_neighbour():
    rows = rows_of({0.01: [0.95, 0.95], 0.03: [0.90, 0.90], 0.1: [0.88, 0.89]},
                   status={(0.01, 1): "diverged"})
    table = round_table(rows, [0, 1])
    assert table.values == (0.03, 0.1)  # 0.01 diverged for one seed: not complete
    j = judge(table, grid=[0.01, 0.03, 0.1], tolerance=0.005, noise_k=0)
    assert j.winner == 0.03 and not j.open_low  # 0.01 is the grid's end, 0.03 is not
    assert j.judged_low == pytest.approx(math.sqrt(0.01 * 0.03), rel=1e-12)


def test_the_boundary_of_v_is_inclusive():
    # Exactly representable: 0.75 - 0.25 == 0.5, so 0.5 is on the boundary and inside V.
    table = round_table(rows_of({0.01: [0.5], 0.03: [0.75], 0.1: [0.25]}), [0])
    j = judge(table, grid=table.values, tolerance=0.25, noise_k=0)
    assert j.members == (0.01, 0.03)


def test_differences_below_1e9_are_ties_and_go_to_the_smaller_max_lr():
    # 0.1 + 0.2 and 0.3 differ by 5.6e-17 in floating point: the same mean.
    acc = {0.01: [0.1 + 0.2, 0.3], 0.03: [0.3, 0.3], 0.1: [0.3, 0.1 + 0.2]}
    rows = rows_of(acc)
    winners = set()
    for order in range(6):
        random.Random(order).shuffle(rows)
        winners.add(judge(round_table(rows, [0, 1]), grid=[0.01, 0.03, 0.1], tolerance=0, noise_k=0).winner)
    assert winners == {0.01}
    # Reversed, the larger value is ahead by more than rounding: it wins.
    ahead = rows_of({0.01: [0.3, 0.3], 0.03: [0.3 + 2e-9, 0.3 + 2e-9]})
    assert judge(round_table(ahead, [0, 1]), grid=[0.01, 0.03], tolerance=0, noise_k=0).winner == 0.03


def noisy_table():
    acc = additive({0.01: 0.80, 0.03: 0.85, 0.1: 0.845, 0.3: 0.70}, [0.0, 0.01, 0.02], PATTERN)
    return round_table(rows_of(acc), [0, 1, 2])


def test_p_inside_is_deterministic_and_reproducible():
    table = noisy_table()
    j = judge(table, grid=table.values, tolerance=0.0, noise_k=1.0)
    first = p_inside(j, table, 0.06, grid=table.values)
    assert first == p_inside(j, table, 0.06, grid=table.values)
    assert 0.0 < first < 1.0 and first * DRAWS == int(first * DRAWS)  # a share of 2,000 draws
    assert p_inside(j, table, 0.06, grid=table.values, seed=1) != first  # the RNG seed matters


def test_p_inside_extremes():
    zero_noise = round_table(rows_of({0.01: [0.8, 0.8], 0.03: [0.9, 0.9], 0.1: [0.85, 0.85]}), [0, 1])
    j = judge(zero_noise, grid=zero_noise.values, tolerance=0.005, noise_k=2.0)
    assert j.sigma == pytest.approx(0.0, abs=1e-12)
    assert p_inside(j, zero_noise, j.winner, grid=zero_noise.values) == 1.0
    table = noisy_table()
    j = judge(table, grid=table.values, tolerance=0.0, noise_k=1.0)
    assert p_inside(j, table, 10.0, grid=table.values) == 0.0
    assert p_inside(j, table, 1e-4, grid=table.values) == 0.0


def test_verdict_thresholds():
    assert [verdict_of(p, seeds=3) for p in (0.8, 0.79, 0.5, 0.21, 0.2, 0.0)] == [
        "inside", "uncertain", "uncertain", "uncertain", "outside", "outside"]


def test_refinement_adds_the_midpoints_next_to_the_ends_of_v():
    grid = [0.01, 0.03, 0.1, 0.3]
    rows = rows_of({0.01: [0.7, 0.7], 0.03: [0.8, 0.8], 0.1: [0.9, 0.9], 0.3: [0.6, 0.6]})
    plan = plan_round(rows, [0, 1], grid=grid, refine=1, tolerance=0.005, noise_k=2)
    assert plan.missing == (refined_value(0.03, 0.1), refined_value(0.1, 0.3)) == (0.0547723, 0.173205)
    assert plan.values == (0.01, 0.03, 0.0547723, 0.1, 0.173205, 0.3)
    assert plan.refined == plan.missing and plan.ran() == tuple(grid)
    # Trained: the round is decided after one refinement; the winner moves if a midpoint is better.
    rows += rows_of({0.0547723: [0.95, 0.95], 0.173205: [0.5, 0.5]})
    plan = plan_round(rows, [0, 1], grid=grid, refine=1, tolerance=0.005, noise_k=2)
    values = plan.values
    assert plan.missing == ()
    table = round_table([r for r in rows if r["max_lr"] in values], [0, 1])
    assert judge(table, grid=values, tolerance=0.005, noise_k=2).winner == 0.0547723
    # A second refinement starts from the refined V = {0.0547723}.
    second = plan_round(rows, [0, 1], grid=grid, refine=2, tolerance=0.005, noise_k=2).missing
    assert second == (refined_value(0.03, 0.0547723), refined_value(0.0547723, 0.1))


def test_refinement_stops_at_open_ends_and_without_refine():
    grid = [0.01, 0.03, 0.1]
    rows = rows_of({0.01: [0.9, 0.9], 0.03: [0.8, 0.8], 0.1: [0.7, 0.7]})
    missing = plan_round(rows, [0, 1], grid=grid, refine=2, tolerance=0.005, noise_k=2).missing
    assert missing == (refined_value(0.01, 0.03),)  # the low end is open: only one midpoint
    plan = plan_round(rows, [0, 1], grid=grid, refine=0, tolerance=0.005, noise_k=2)
    assert (plan.values, plan.missing) == ((0.01, 0.03, 0.1), ())


def test_eight_values_pool_the_best_four():
    m = {v: a for v, a in zip([1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3],
                              [0.3, 0.4, 0.5, 0.86, 0.88, 0.9, 0.89, 0.2])}
    table = round_table(rows_of(additive(m, [0.0, 0.01, 0.02], {})), [0, 1, 2])
    assert [table.values[i] for i in competitive(table)] == [3e-3, 1e-2, 3e-2, 0.1]  # ceil(8/2) = 4


def test_two_complete_values_and_two_seeds_give_a_noise_estimate():
    table = round_table(rows_of({0.01: [0.80, 0.82], 0.1: [0.90, 0.88]}), [0, 1])
    # residuals +-0.01 at each cell: sum e^2 = 4e-4 over (2-1)(2-1) -> sigma = 0.02
    assert pooled_sigma(table) == pytest.approx(0.02, rel=1e-9)


def test_p_inside_matches_the_normal_probability_of_both_values_staying_within_tol():
    # Two values 1 point apart, sigma 2 points, S = 2: the difference of the redrawn means is
    # N(d, s^2) with s = sigma * sqrt(2/S). SILO just above the geometric midpoint of the two
    # is inside only when 0.1 is in V: when it wins, or trails 0.01 by at most tol.
    from statistics import NormalDist

    acc = {0.01: [0.90 + 0.01, 0.90 - 0.01], 0.1: [0.89 - 0.01, 0.89 + 0.01]}  # residuals +-0.01
    table = round_table(rows_of(acc), [0, 1])
    j = judge(table, grid=[0.001, 0.01, 0.1, 1.0], tolerance=0.0, noise_k=0.5)
    sigma = pooled_sigma(table)
    assert sigma == pytest.approx(0.02, rel=1e-9)
    s, d, tol = sigma * math.sqrt(2 / 2), 0.01, j.tol
    expected = NormalDist().cdf((tol - d) / s)
    got = p_inside(j, table, 1.1 * math.sqrt(0.01 * 0.1), grid=[0.001, 0.01, 0.1, 1.0])
    assert got == pytest.approx(expected, abs=0.035)  # 3.5 binomial sds of 2,000 draws


def test_p_inside_counts_the_midpoint_reach_of_the_judged_interval():
    table = round_table(rows_of({0.01: [0.8, 0.8], 0.03: [0.9, 0.9], 0.1: [0.85, 0.85]}), [0, 1])
    j = judge(table, grid=table.values, tolerance=0.005, noise_k=2.0)
    assert j.winner_mean == pytest.approx(0.9)
    just_below = 0.03 * 0.95  # below min V but above the midpoint with 0.01
    assert j.contains(just_below) and p_inside(j, table, just_below, grid=table.values) == 1.0


def test_a_round_without_a_complete_value_asks_for_no_refinement():
    rows = rows_of({0.01: [0.8, 0.8], 0.03: [0.9, 0.9]}, status={(0.01, 0): "failed", (0.03, 1): "diverged"})
    plan = plan_round(rows, [0, 1], grid=[0.01, 0.03], refine=2, tolerance=0.005, noise_k=2)
    assert (plan.values, plan.missing) == ((0.01, 0.03), ())
    assert judge(round_table(rows, [0, 1]), grid=[0.01, 0.03], tolerance=0, noise_k=0) is None


def test_one_seed_verdicts_are_the_point_estimate():
    assert verdict_of(0.5, seeds=1) == "inside" and verdict_of(0.49, seeds=1) == "outside"


def test_a_beam_round_pools_its_noise_over_as_many_values_as_the_whole_grid_would():
    m = {0.001: 0.50, 0.003: 0.60, 0.01: 0.88, 0.03: 0.90, 0.1: 0.89, 0.3: 0.40}
    wild = {0.001: [0.1, -0.1, 0.0], 0.003: [-0.1, 0.1, 0.0]}
    table = round_table(rows_of(additive(m, [0.0, 0.002, -0.001], {**PATTERN, **wild})), [0, 1, 2])
    assert pooled_sigma(table, pool=3) == pooled_sigma(table) == pytest.approx(D, rel=1e-9)
    assert pooled_sigma(table, pool=6) > 5 * D  # the wild values are in: all six pooled
    # A beam round of 3 of a 12-value grid pools 6 (capped at its complete values); a round
    # that holds the whole grid pools its own half, as the exhaustive round does.
    grid12 = [round(0.001 * 1.5 ** i, 6) for i in range(12)]
    beam = plan_round([], [0, 1], grid=grid12, refine=0, tolerance=0.005, noise_k=2.0, beam=1, previous=[grid12[5]])
    assert (len(beam.values), beam.pool) == (3, 6)
    whole = plan_round([], [0, 1], grid=grid12, refine=0, tolerance=0.005, noise_k=2.0)
    assert whole.pool is None
