"""The analysis' findings in words: each cycle's note (verdicts.csv), the study's messages
(summary.json, the report's box of notes), the question every verdict answers, and why the
Oracle stopped. oracle.judge.analysis states the findings (oracle.judge.facts) with their
numbers; `worded` puts these words where the report's files have always had them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import pandas as pd

from oracle.judge.analysis import Analysis
from oracle.judge.facts import Fact, Finding
from oracle.judge.selection import retired_rule_line

STOPPED_WHY = "no grid value ran ok for every seed"  # the Oracle's rule for stopping


def question(delta: float) -> str:
    """What every verdict answers, in one line (delta as a fraction, said in points)."""
    points = f"{100 * delta:.3g}"
    return (f"is SILO's max_lr within {points} point{'' if points == '1' else 's'} of the best max_lr's "
            "expected validation accuracy?")


def _values(values: Iterable[float]) -> str:
    return f"max_lr {', '.join(f'{v:g}' for v in values)}"


def _cycles(cycles: Iterable[int]) -> str:
    return ", ".join(str(q) for q in cycles)


def said(f: Fact) -> str:
    """One finding in words."""
    match f.finding:
        case Finding.NOT_REACHED:
            return "the Oracle did not reach this cycle"
        case Finding.NOT_REACHED_STOPPED:
            return f"the Oracle did not reach this cycle: it stopped at cycle {f.cycle} ({STOPPED_WHY})"
        case Finding.IN_PROGRESS:
            return "not yet judged: the study is in progress"
        case Finding.PENDING:
            return f"not yet judged: {_values(f.values)} pending"
        case Finding.STOPPED_HERE:
            return f"the Oracle stopped here: {STOPPED_WHY}"
        case Finding.PROVISIONAL:
            return f"provisional: {_values(f.values)} pending"
        case Finding.CHOICE_DIFFERS:
            return f"recorded choice {', '.join(f'{v:g}' for v in f.values)} differs from the rule's winner"
        case Finding.BEYOND_GRID:
            return "the best max_lr may lie beyond the grid: widen it"
        case Finding.ONE_SEED_CYCLE:
            return "one seed: no noise estimate"
        case Finding.NO_SILO_RUNS:
            return "no SILO runs recorded"
        case Finding.SILO_NOT_OK:
            return f"SILO runs {' and '.join(f.labels)}"
        case Finding.RETIRED_RULE:
            tolerance, noise_k = f.numbers
            return retired_rule_line(tolerance, noise_k) + "."
        case Finding.NO_SILO_ARM:
            return ("This study has no silo arm: there is no verdict, only the Oracle's landscape "
                    "and the arms' accuracy and cost.")
        case Finding.NO_ORACLE_ARM:
            return ("This study has no oracle arm: SILO's max_lr cannot be judged against the "
                    "Oracle's optimal interval; the report compares accuracy and cost only.")
        case Finding.ORACLE_STOPPED:
            return (f"The Oracle stopped at cycle {f.cycle} ({STOPPED_WHY}), as its rule says: "
                    f"it has no winner at cycle(s) {_cycles(f.cycles)}.")
        case Finding.NO_WINNER_YET:
            return f"The Oracle has no winner yet at cycle(s) {_cycles(f.cycles)}: the study is in progress."
        case Finding.ONE_SEED:
            return ("One seed: there is no estimate of seed noise, so each verdict is the point "
                    "estimate (inside or outside the judged interval), not a probability. Run 3 "
                    "or more seeds for a verdict that holds up.")
        case Finding.TWO_SEEDS:
            return ("Two seeds: the noise estimate has very few degrees of freedom, so the "
                    "verdicts are fragile; 3 or more seeds make them hold up.")
        case Finding.BAD_RUNS:
            what = ", ".join(f"{n} {status}" for status, n in f.counts)
            return (f"{f.arm}: {what} run(s); they are left out of every mean, and a grid value with "
                    "one never wins nor enters the interval.")
        case Finding.SUPERSEDED:
            return (f"{f.count} older trial(s) in the storage were superseded by later records "
                    "of the same run key and ignored.")
        case Finding.DROPPED_ARMS:
            which = ", ".join(f"{n} of {arm}" for arm, n in f.counts)
            return (f"{f.count} run(s) in the record belong to arm(s) no longer in this study "
                    f"({which}) and were left out of every table and figure.")
        case Finding.STALE:
            return (f"{f.count} run(s) in the record belong to an earlier version of this study "
                    "(other seeds, grid values, schedules or lineage) and were left out.")
    raise ValueError(f"no words for {f.finding!r}")  # a new Finding must be worded here


def worded(a: Analysis) -> Analysis:
    """The analysis with its findings in words, where the report's files keep them: each cycle's
    `note`, summary["messages"] (and Analysis.messages), summary["verdict"]["question"] and
    why the Oracle stopped in summary["progress"]. The judge leaves these places empty."""
    verdicts = a.verdicts.copy()
    verdicts["note"] = pd.Series(["; ".join(said(f) for f in a.cycle_facts.get(int(q), ()))
                                  for q in verdicts["cycle"]], index=verdicts.index, dtype=object)
    messages = [said(f) for f in a.facts]
    summary = dict(a.summary)
    summary["verdict"] = {**summary["verdict"], "question": question(a.summary["tolerance"])}
    summary["messages"] = list(messages)
    progress = summary.get("progress")
    if progress and progress.get("oracle_stopped"):
        summary["progress"] = {**progress, "oracle_stopped": {**progress["oracle_stopped"], "why": STOPPED_WHY}}
    return replace(a, verdicts=verdicts, summary=summary, messages=messages)
