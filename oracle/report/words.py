"""The report's words: the number formatters every table and figure writes with (`pct`,
`points`, `lr`, `points_interval`, `delta_points`), the answer in three sentences
(`headline`), the verdict's opening paragraph (`verdict_text`, from the summary alone) and the
Oracle's search (`search_text`). oracle.report.build puts the headline and the paragraph in the
summary ("answer", "text": summary.json, both pages, the CLI's closing line).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from oracle.judge.answer import FLAT_SHARE, runs_of
from oracle.store.arms import ORACLE, SILO
from oracle.store.plain import missing

# What the words are said of: the summary (oracle.judge.analysis' with the report's additions),
# and numbers read from it or from the analysis' tables, any of which may be missing (None, NaN).
Summary = Mapping[str, Any]


def pct(x: Any) -> str:
    return "–" if missing(x) else f"{100 * x:.1f}%"


def points(x: Any) -> str:
    """A difference of accuracies in percentage points, signed."""
    return "–" if missing(x) else f"{100 * x:+.1f} points"


def lr(x: Any) -> str:
    return "–" if missing(x) else f"{x:.4g}"


def headline(summary: Summary, cycles: list[dict[str, Any]]) -> str | None:
    """The answer in three sentences, before every detail: the Oracle's best max_lr per
    cycle, SILO's, the verdicts, and how wide the intervals they are said of are. `cycles`:
    oracle.judge.answer.answer_cycles. None when the study has no Oracle or no SILO."""
    if ORACLE not in summary["arms"] or SILO not in summary["arms"]:
        return None
    best = runs_of(cycles, "oracle_max_lr")
    if not best:
        return "The Oracle has no best max_lr yet in any cycle: rerun the study to finish it."
    sparsity = {c["cycle"]: c["sparsity"] for c in cycles}

    def at(qs: list[int]) -> str:
        where = f"cycle {qs[0]}" if len(qs) == 1 else f"cycles {qs[0]}-{qs[-1]}"
        lo, hi = sparsity.get(qs[0]), sparsity.get(qs[-1])
        return f"{where} ({pct(lo)} sparsity)" if lo == hi else f"{where} ({pct(lo)}-{pct(hi)} sparsity)"

    words = ["The Oracle's best max_lr: " + ", then ".join(f"{lr(v)} at {at(qs)}" for v, qs in best) + "."]
    silo = runs_of(cycles, "silo_max_lr")
    if silo:
        moves = "rising" if silo[-1][0] > silo[0][0] else "falling"
        words.append(f"SILO's max_lr: {lr(silo[0][0])} at cycle {silo[0][1][0]}" + (
            "" if len(silo) == 1 else f", {moves} to {lr(silo[-1][0])} at cycle {silo[-1][1][-1]}") + ".")
    v = summary["verdict"]
    if v["judged"]:
        words.append(f"SILO's max_lr was inside the Oracle's judged interval at {v['inside']} of {v['judged']} "
                     f"cycles, outside at {v['outside']}, uncertain at {v['uncertain']}.")
    widths = [c for c in cycles if c["width_factor"] is not None]
    if widths:
        lo, hi = min(c["width_factor"] for c in widths), max(c["width_factor"] for c in widths)
        factor = f"a factor of {lo:.1f}" if math.isclose(lo, hi, rel_tol=0.05) else f"a factor of {lo:.1f} to {hi:.1f}"
        words.append(f"The judged intervals are {factor} wide in max_lr.")
    flat = [c["cycle"] for c in cycles if c["flat"]]
    if flat:
        words.append(f"At cycle(s) {_cycles(flat)} the interval spans more than {FLAT_SHARE:.0%} of the grid: "
                     "the landscape is flat there (most max_lr values did about as well), so a verdict "
                     "there says little.")
    return " ".join(words)


def verdict_text(summary: Summary) -> str:
    """The report's opening paragraph, in plain words."""
    arms = summary["arms"]
    if SILO not in arms and ORACLE not in arms:
        return "This study has neither a silo nor an oracle arm: the report compares the arms' accuracy and cost."
    if SILO not in arms:
        return ("This study has no silo arm, so there is no verdict. The report shows the Oracle's "
                "landscape and optimal interval per cycle, and every arm's accuracy and cost.")
    if ORACLE not in arms:
        return ("This study has no oracle arm, so SILO's max_lr cannot be judged against an optimal "
                "interval. The report compares every arm's accuracy and cost.")
    v, gap = summary["verdict"], summary["gap"]
    if not v["judged"]:
        return ("No cycle could be judged yet: the Oracle has no winner, or SILO no max_lr, in any "
                "recorded cycle. Rerun the study to finish it.")
    seeds = len(summary["seeds"])  # what summary["verdict"]["noise"] is named for
    words = [f"The question, per cycle: {v['question']} (delta = analysis.tolerance; {seeds} seed(s)).",
             f"Of {v['judged']} cycles, {v['decided']} were decided: SILO's max_lr was inside the "
             f"Oracle's optimal interval in {v['inside']} and outside in {v['outside']}"]
    p = v["pruned_cycles"]
    if p["judged"] and p["judged"] != v["judged"]:
        words[1] += f" (pruned cycles, q ≥ 1: {p['inside']} inside, {p['outside']} outside of {p['judged']})"
    out = v["outside_cycles"]
    if out:
        shown = [f"{o['cycle']} ({o['position']}: {lr(o['silo_max_lr'])} vs "
                 f"[{lr(o['interval'][0])}, {lr(o['interval'][1])}])" for o in out[:4]]
        more = f" and {len(out) - 4} more" if len(out) > 4 else ""
        words[1] += f"; outside at cycle {', '.join(shown)}{more}."
    else:
        words[1] += "."
    unsure = v["uncertain_cycles"]
    if unsure:
        why = [f"{len(unsure)} cycle(s) ({_cycles(u['cycle'] for u in unsure)}) stayed uncertain: "
               "there the grid values next to SILO's max_lr are about delta below the best, closer than the "
               "seeds' noise can tell"]
        if v["uncertain_open"]:
            why.append(f"{v['uncertain_open']} of them at an open end of the grid")
        words.append(", ".join(why) + f"; what would decide them: {_to_decide(unsure, seeds)}.")
    if v["open_cycles"]:
        words.append(f"At cycle(s) {_cycles(v['open_cycles'])} the interval reaches the grid's edge: "
                     "the best max_lr may lie beyond the grid: widen it.")
    if seeds == 1:
        words.append("With one seed there is no noise estimate: each verdict is the point estimate.")
    elif seeds == 2:
        words.append("With two seeds the noise estimate is fragile; use 3 or more seeds.")
    if gap["final_cycle"] is not None:
        words.append(
            f"At the last cycle both finished (cycle {gap['final_cycle']}, sparsity {pct(gap['final_sparsity'])}), "
            f"SILO reached {pct(gap['final_silo_test_acc'])} test accuracy against the Oracle's "
            f"{pct(gap['final_oracle_test_acc'])} ({points(gap['final_gap_test_acc'])}); averaged over "
            f"{gap['cycles']} cycles the difference was {points(gap['mean_gap_test_acc'])} on test and "
            f"{points(gap['mean_gap_val_acc'])} on validation accuracy."
        )
    words += _comparison_words(summary)
    r = summary["cost_ratio_oracle_to_silo"]
    c = summary["cost"]
    if r["runs"]:
        secs = f"{c[ORACLE]['run_seconds']:,.0f} vs {c[SILO]['run_seconds']:,.0f} run-seconds"
        times = f"{r['run_seconds']:.1f}×" if r["run_seconds"] else f"{r['runs']:.1f}× (in runs)"
        words.append(f"The Oracle cost {times} SILO's compute ({secs}; "
                     f"{c[ORACLE]['runs']} vs {c[SILO]['runs']} runs).")
    search = summary.get("search") or {}
    if search.get("name") == "beam":
        words.append(f"Its search was a beam of {search['beam']}: {search_text(search).split(': ', 1)[1]}.")
    return " ".join(words)


def delta_points(summary: Summary) -> str:
    """delta (a fraction of accuracy) in points: "1 point", "0.5 points"."""
    said = f"{100 * summary['tolerance']:.3g}"
    return f"{said} point" + ("" if said == "1" else "s")


def _to_decide(unsure: list[Mapping[str, Any]], seeds: int) -> str:
    """Per uncertain cycle, the seeds that would decide it if the means stayed as measured."""
    said = []
    for u in unsure:
        n = u.get("seeds_to_decide")
        said.append(f"cycle {u['cycle']}: " + ("no number of seeds (its neighbour sits at delta itself)" if n is None
                                               else f"about {max(1, n - seeds)} more seed(s)"))
    return "; ".join(said)


def _comparison_words(summary: Summary) -> list[str]:
    """One sentence: every baseline against SILO at its last paired cycle."""
    said = []
    for p in (summary.get("comparisons") or {}).get("pairs", []):
        if p["reference"] != SILO:
            continue
        last = p["last"]
        said.append(f"{p['arm']} {points(last['mean_diff'])} ({points_interval(last['t_low'], last['t_high'])}, "
                    f"{last['seeds']} seeds): {last['reading']}")
    if not said:
        return []
    return [f"Against SILO at the last cycle, paired by seed (test accuracy, 95 % t interval): {'; '.join(said)}."]


def points_interval(low: Any, high: Any) -> str:
    """A 95 % interval of a difference, in points."""
    return "no interval" if missing(low) else f"[{100 * low:+.1f}, {100 * high:+.1f}]"


def search_text(search: Mapping[str, Any] | None) -> str:
    """Which search the Oracle ran, and what a beam saved against the exhaustive grid."""
    if not search or search.get("name") != "beam":
        return "exhaustive (every grid value in every cycle)"
    grid = search["grid_runs"]
    share = f" ({search['saved_runs'] / grid:.0%})" if grid else ""
    return (f"beam of {search['beam']}: trained {search['grid_runs_trained']} of the {grid} grid runs of its "
            f"cycles, {search['saved_runs']} saved{share}")


def _cycles(qs: Iterable[Any]) -> str:
    return ", ".join(str(int(q)) for q in qs)


__all__ = ["pct", "points", "lr", "points_interval", "delta_points", "headline", "verdict_text", "search_text"]
