"""What the verdict benches share: a study's Oracle on other seeds, swept into one run store,
and the verdicts of several seed sets set side by side.

    study = oracle_only(base, seeds=[1000, 1001, 1002], name="quickstart-set1")
    rows = sweep(study, out)                           # trains what out/runs lacks
    analysis = analysis_of(rows, judged_attrs(study, base))  # SILO's plan judged, without SILO's runs
    contradictions(per_set)                            # inside against outside, per cycle

Only the Oracle arm is trained: SILO's verdict judges SILO's planned max_lr per cycle against
the Oracle's interval, which needs no SILO run. Every study swept into the same folder shares
its run store (out/runs), so a run two studies both need (same task, seed, cycle, max_lr and
parent: the same run id) is trained once.
"""

from __future__ import annotations

import copy
import csv
import itertools
import sys
from pathlib import Path


def oracle_only(base, *, seeds=None, name: str | None = None, **arms_oracle):
    """`base` with only its Oracle arm (`arms_oracle` updates its settings, e.g. search=),
    on `seeds` (default its own) and under `name` (default its own)."""
    from oracle.study import parse_study

    data = copy.deepcopy(base.to_mapping())
    data["arms"] = {"oracle": dict(data["arms"]["oracle"], **arms_oracle)}
    if seeds is not None:
        data["seeds"] = [int(s) for s in seeds]
    data["name"] = name or base.name
    return parse_study(data, name or base.name)


def sweep(study, out: Path, *, label: str = ""):
    """Train `study` into `out` (its run store out/runs); its rows, or None if the sweep failed.

    results.csv holds the study's rows as the ledger wrote them; the next study swept into
    the same folder overwrites it, so the rows are read back here, at once."""
    from oracle.store.rows import rows_frame
    from oracle.sweep.driver import run_sweep

    print(f"-- {label or study.name}: grid of {len(study.grid)}, {len(study.seeds)} seeds x {study.cycles} cycles",
          file=sys.stderr, flush=True)
    swept = run_sweep(study, out=out, finish=False, quiet=True, stream=sys.stderr)
    if not swept.done:
        print(f"error: the sweep of {label or study.name} ended {swept.outcome}", file=sys.stderr)
        return None

    def typed(row: dict) -> dict:  # results.csv's text back to the ledger's values
        out = {k: (None if v == "" else v) for k, v in row.items()}
        for k in ("reused", "chosen", "refined"):
            out[k] = out[k] == "True"
        return out

    with (out / "results.csv").open() as f:
        return rows_frame(typed(r) for r in csv.DictReader(f))


def judged_attrs(study, base) -> dict:
    """The record's settings of `study`, with the full study's SILO plan to judge."""
    from oracle.store.record import study_attrs

    attrs = study_attrs(study)
    if "silo" in base.arm_names():
        silo = base.model_copy(update={"pruning": study.pruning})  # the variant's prune rate and cycles
        plan = [float(silo.schedule("silo").max_lr(q)) for q in range(study.cycles)]
        attrs["arms"] = [*attrs["arms"], "silo"]
        attrs["planned_max_lr"] = {"silo": plan}
        attrs["silo_max_lr"] = plan
    return attrs


def contradictions(per_set: list[dict[int, str | None]]) -> tuple[int, int, int, int]:
    """(contradictions, comparisons, decided, verdicts) over every pair of sets and cycle:
    a contradiction is one set saying `inside` and the other `outside`."""
    found = comparisons = 0
    for a, b in itertools.combinations(per_set, 2):
        for q in sorted(set(a) & set(b)):
            if a[q] is None or b[q] is None:
                continue
            comparisons += 1
            found += {a[q], b[q]} == {"inside", "outside"}
    verdicts = [v for s in per_set for v in s.values() if v is not None]
    decided = sum(v in ("inside", "outside") for v in verdicts)
    return found, comparisons, decided, len(verdicts)
