"""What a round of the Oracle trains, replayed from its rows (docs/design.md, "The optimal
interval and SILO's verdict", step 5, and "The beam").

One notion serves the sweep (what to train next) and the analysis (which recorded values are
this lineage's round, which are pending, which grid values the beam left untrained):

    plan = plan_round(rows, seeds, grid=grid, refine=K, tolerance=delta, beam=W, previous=V)
    plan.missing                     # train these next (for every seed, from the same parents)
    plan.ran(), plan.neighbours()    # what the rule judges on, and where V's ends may reach

It judges with oracle.judge.selection (steps 1-3) after each step: the grid (or the beam
around the previous round's V), widened while an end of V is the beam's edge, then refined
up to K times at the midpoints next to the ends of V.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from oracle.judge.selection import Judgement, geometric_midpoint, judge, round_table


def refined_value(a: float, b: float) -> float:
    """A refinement max_lr, to 6 significant digits like the grid (it appears in run ids)."""
    return float(f"{geometric_midpoint(a, b):.6g}")



def refinement_values(j: Judgement) -> list[float]:
    """Step 5's new values: the geometric midpoints between each closed end of V and its
    outside neighbour (an open end has none: the grid stops there)."""
    out = []
    if j.below is not None:
        out.append(refined_value(j.below, j.low))
    if j.above is not None:
        out.append(refined_value(j.high, j.above))
    return out


@dataclass(frozen=True)
class RoundPlan:
    """The values that belong to one round, as the rule replays it (step 5 and the beam).

    One notion serves the sweep (what to train next: `missing`) and the analysis (which
    recorded values are this round's, which are still pending, and which grid values the
    beam left untrained). A value of the round without rows is pending; a grid value outside
    the round was not trained (beam). Neither is ever judged nor in V. A pending value is
    never a neighbour of V (it never narrows an interval); an untrained one is where the
    grid goes on, so V's end reaches halfway to it as to a trained one (`neighbours`)."""

    values: tuple[float, ...]  # ascending: every value of the round (beam, widened, refined)
    missing: tuple[float, ...]  # values of the round without a row yet: train them next (pending)
    refined: tuple[float, ...]  # the refinement values among `values` (not grid values)
    untrained: tuple[float, ...] = ()  # grid values outside the round: not trained (beam)

    @property
    def pool(self) -> int | None:
        """How many best complete values a beam round pools its noise over: as many as the
        exhaustive round over the whole grid would, max(3, ceil(G/2)) of the grid's G, so a
        narrower round does not change the noise estimate (None: the round's own half)."""
        if not self.untrained:
            return None
        grid_size = len(self.values) - len(self.refined) + len(self.untrained)
        return max(3, math.ceil(grid_size / 2))

    def ran(self) -> tuple[float, ...]:
        """The round's values that have rows: the only ones the rule judges on."""
        return tuple(v for v in self.values if v not in self.missing)

    def neighbours(self) -> tuple[float, ...]:
        """The max_lrs each end of V may reach halfway to (step 3, resolution): the values
        that ran and the grid values the beam left untrained. The grid's spacing is the
        grid's whether a value was trained or not, so an end of V at the beam's edge reaches
        the midpoint to the next grid value, as the exhaustive Oracle's does (in the point
        estimate and in each of P(inside)'s draws); only the grid's own end is open."""
        return tuple(sorted(self.ran() + self.untrained))


def beam_values(grid: Iterable[float], previous: Iterable[float], width: int) -> tuple[float, ...]:
    """A beam round's first values: the grid values spanning the previous round's V, plus
    `width` grid neighbours each side, at least 3 (or the whole grid when it is smaller).

    V may hold refinement values between grid values: the span reaches the grid value at or
    beyond each end of V, so the beam never starts inside a refined interval."""
    grid = sorted(float(v) for v in grid)
    previous = [float(v) for v in previous]
    lo = max((i for i, v in enumerate(grid) if v <= min(previous)), default=0)
    hi = min((i for i, v in enumerate(grid) if v >= max(previous)), default=len(grid) - 1)
    lo, hi = max(0, lo - int(width)), min(len(grid) - 1, hi + int(width))
    while hi - lo + 1 < min(3, len(grid)):  # only at an edge of the grid: grow away from it
        lo, hi = (lo - 1, hi) if hi == len(grid) - 1 else (lo, hi + 1)
    return tuple(grid[lo:hi + 1])


def plan_round(rows: Iterable[Mapping[str, Any]], seeds: Iterable[int], *, grid: Iterable[float], refine: int,
               tolerance: float, beam: int | None = None,
               previous: Iterable[float] | None = None) -> RoundPlan:
    """The round's values replayed from its rows, in the order the sweep trains them:

    1. the grid; with a beam (`beam` = W, `previous` = V of the previous round; None at
       cycle 0) the grid values spanning `previous` plus W neighbours each side (beam_values);
    2. beam only: while an end of V is the beam's edge but not the grid's own end, the next
       grid value beyond it, judged again;
    3. up to `refine` times the midpoints next to the ends of V (step 5).

    While a planned value has no rows the round stops there: it is pending (`missing`), and
    nothing that depends on it (widening, a refinement) is planned yet. Every judgement here
    uses as neighbours the round's values, all of which have rows, and the grid values outside
    the beam (RoundPlan.neighbours). Once widening stops, no end of V is next to an
    untrained value, so a refinement's midpoint always lies between two values that ran.
    The sweep calls this to know what to train next; the analysis to know which recorded
    values belong to this lineage's round and which are pending.
    """
    rows = list(rows)
    seeds = tuple(seeds)
    grid = tuple(sorted(float(v) for v in grid))
    have = {float(r["max_lr"]) for r in rows}
    values = grid if beam is None or previous is None else beam_values(grid, previous, beam)

    def plan(missing: Iterable[float] = ()) -> RoundPlan:
        return RoundPlan(values, tuple(missing), tuple(v for v in values if v not in grid),
                         tuple(v for v in grid if v not in values))

    def judged() -> Judgement | None:
        table = round_table([r for r in rows if float(r["max_lr"]) in values], seeds)
        now = plan()
        return judge(table, grid=now.neighbours(), tolerance=tolerance, pool=now.pool)

    def extended(new: Iterable[float]) -> RoundPlan | None:
        """The round with `new` values added to V's span: its plan if some have no rows yet."""
        nonlocal values
        values = tuple(sorted(values + tuple(new)))
        missing = [v for v in new if v not in have]
        return plan(missing) if missing else None

    missing = [v for v in values if v not in have]
    if missing:
        return plan(missing)
    while beam is not None and len(values) < len(grid):
        j = judged()
        if j is None:
            break
        # An end of V at the beam's edge (values holds only grid values until refinement)
        i, k = grid.index(values[0]), grid.index(values[-1])
        wider = ([grid[i - 1]] if j.low == values[0] and i > 0 else []) + (
            [grid[k + 1]] if j.high == values[-1] and k + 1 < len(grid) else [])
        if not wider:
            break
        if (pending := extended(wider)) is not None:
            return pending
    for _ in range(int(refine)):
        j = judged()
        if j is None:
            break
        new = [v for v in refinement_values(j) if v not in values]
        if not new:
            break
        if (pending := extended(new)) is not None:
            return pending
    return plan()
