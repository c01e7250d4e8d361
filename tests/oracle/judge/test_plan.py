"""What a round trains (oracle.judge.plan) on hand-made rows: refinement at the ends of V, open
ends and rounds without a complete value, and how many values a beam round pools its noise over."""

from __future__ import annotations

from oracle.judge.plan import plan_round, refined_value, refinement_values
from oracle.judge.selection import judge, round_table
from tests.oracle.judge._rows import rows_of


def test_refinement_adds_the_midpoints_next_to_the_ends_of_v():
    grid = [0.01, 0.03, 0.1, 0.3]
    rows = rows_of({0.01: [0.7, 0.7], 0.03: [0.8, 0.8], 0.1: [0.9, 0.9], 0.3: [0.6, 0.6]})
    plan = plan_round(rows, [0, 1], grid=grid, refine=1, tolerance=0.005)
    assert plan.missing == (refined_value(0.03, 0.1), refined_value(0.1, 0.3)) == (0.0547723, 0.173205)
    assert plan.values == (0.01, 0.03, 0.0547723, 0.1, 0.173205, 0.3)
    assert plan.refined == plan.missing and plan.ran() == tuple(grid)
    # Trained: the round is decided after one refinement; the winner moves if a midpoint is better.
    rows += rows_of({0.0547723: [0.95, 0.95], 0.173205: [0.5, 0.5]})
    plan = plan_round(rows, [0, 1], grid=grid, refine=1, tolerance=0.005)
    values = plan.values
    assert plan.missing == ()
    table = round_table([r for r in rows if r["max_lr"] in values], [0, 1])
    assert judge(table, grid=values, tolerance=0.005).winner == 0.0547723
    # A second refinement starts from the refined V = {0.0547723}.
    second = plan_round(rows, [0, 1], grid=grid, refine=2, tolerance=0.005).missing
    assert second == (refined_value(0.03, 0.0547723), refined_value(0.0547723, 0.1))


def test_refinement_values_are_the_midpoints_at_the_closed_ends_of_v_to_six_digits():
    table = round_table(rows_of({0.01: [0.7, 0.7], 0.03: [0.9, 0.9], 0.1: [0.9, 0.9], 0.3: [0.6, 0.6]}), [0, 1])
    j = judge(table, grid=table.values, tolerance=0.005)
    assert j.members == (0.03, 0.1)
    assert refinement_values(j) == [0.0173205, 0.173205]  # sqrt(0.01 * 0.03), sqrt(0.1 * 0.3)
    edge = round_table(rows_of({0.01: [0.9, 0.9], 0.03: [0.7, 0.7]}), [0, 1])
    j = judge(edge, grid=edge.values, tolerance=0.005)
    assert (j.open_low, refinement_values(j)) == (True, [0.0173205])  # nothing below the grid's end


def test_refinement_stops_at_open_ends_and_without_refine():
    grid = [0.01, 0.03, 0.1]
    rows = rows_of({0.01: [0.9, 0.9], 0.03: [0.8, 0.8], 0.1: [0.7, 0.7]})
    missing = plan_round(rows, [0, 1], grid=grid, refine=2, tolerance=0.005).missing
    assert missing == (refined_value(0.01, 0.03),)  # the low end is open: only one midpoint
    plan = plan_round(rows, [0, 1], grid=grid, refine=0, tolerance=0.005)
    assert (plan.values, plan.missing) == ((0.01, 0.03, 0.1), ())


def test_a_round_without_a_complete_value_asks_for_no_refinement():
    rows = rows_of({0.01: [0.8, 0.8], 0.03: [0.9, 0.9]}, status={(0.01, 0): "failed", (0.03, 1): "diverged"})
    plan = plan_round(rows, [0, 1], grid=[0.01, 0.03], refine=2, tolerance=0.005)
    assert (plan.values, plan.missing) == ((0.01, 0.03), ())
    assert judge(round_table(rows, [0, 1]), grid=[0.01, 0.03], tolerance=0) is None


def test_a_beam_round_pools_its_noise_over_as_many_values_as_the_whole_grid_would():
    """A beam round of 3 of a 12-value grid pools 6, max(3, ceil(12/2)), capped at its complete
    values by oracle.judge.selection.competitive; a round that holds the whole grid pools its own
    half, as the exhaustive round does (None)."""
    grid12 = [round(0.001 * 1.5 ** i, 6) for i in range(12)]
    beam = plan_round([], [0, 1], grid=grid12, refine=0, tolerance=0.005, beam=1, previous=[grid12[5]])
    assert (len(beam.values), beam.pool) == (3, 6)
    whole = plan_round([], [0, 1], grid=grid12, refine=0, tolerance=0.005)
    assert whole.pool is None
