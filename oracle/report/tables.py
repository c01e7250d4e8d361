"""The report's tables: `Table` (a title, headers, rows of strings, a note, the HTML id and
per-cell CSS classes) and the builders that turn the analysis (oracle.judge.analysis) into
them: the answer per cycle, the verdict per cycle, the paired comparisons, the calibration,
the accuracy and cost per arm, the summary and the versions. Both pages (oracle.report.render)
are built from the same tables (`sections()`), so they always say the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from oracle.judge.analysis import TOTAL, Analysis
from oracle.judge.answer import FLAT_SHARE
from oracle.report.words import delta_points, lr, pct, points, points_interval, search_text
from oracle.store.arms import ORACLE, SILO
from oracle.store.plain import missing
from silo.status import RunStatus


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""
    html_id: str = ""
    classes: list[list[str]] | None = None  # per cell CSS class (HTML only)



def _acc(mean: Any, std: Any) -> str:
    if missing(mean):
        return "–"
    return f"{100 * mean:.1f}" + ("" if missing(std) else f" ± {100 * std:.1f}")


def _interval(low: Any, high: Any) -> str:
    return "–" if missing(low) else f"[{lr(low)}, {lr(high)}]"


def _judged(r: Mapping[str, Any]) -> str:
    if missing(r["judged_low"]) or missing(r["judged_high"]):
        return "–"
    low = ("open " if r["open_low"] else "") + lr(r["judged_low"])
    high = lr(r["judged_high"]) + (" open" if r["open_high"] else "")
    return f"[{low}, {high}]"


_MARK = {"inside": "✔ inside", "outside": "✘ outside", "uncertain": "? uncertain"}
_CLASS = {"inside": "in", "outside": "out", "uncertain": "unsure"}


def _width(c: Mapping[str, Any]) -> str:
    """An interval's width as a factor in max_lr and in grid steps; "flat" when it spans
    most of the grid; "≥" when an end is open (the interval may reach beyond the grid)."""
    if c["width_factor"] is None:
        return "–"
    at_least = "≥ " if c["open_low"] or c["open_high"] else ""
    steps = "" if c["width_steps"] is None else f", {c['width_steps']:.1f} grid steps"
    text = f"{at_least}×{c['width_factor']:.1f}{steps}"
    return f"flat: {c['grid_share']:.0%} of the grid ({text})" if c["flat"] else text


def answer_table(a: Analysis) -> Table | None:
    """The first screen's table, one row per cycle, from summary["answer"]["cycles"]."""
    answer = a.summary.get("answer") or {}
    if not answer.get("headline") or ORACLE not in a.summary["arms"] or SILO not in a.summary["arms"]:
        return None
    headers = ["cycle", "sparsity", "Oracle's best max_lr", "judged interval", "SILO's max_lr",
               "verdict (P(inside))", "interval width"]
    rows, classes = [], []
    for c in answer["cycles"]:
        kind = c["verdict"]
        verdict = "–" if kind is None else _MARK[kind] + ("" if missing(c["p_inside"]) else f" ({c['p_inside']:.2f})")
        rows.append([str(c["cycle"]), pct(c["sparsity"]), lr(c["oracle_max_lr"]), _judged(c), lr(c["silo_max_lr"]),
                     verdict, _width(c)])
        classes.append(["", "", "", "", "", "" if kind is None else _CLASS[kind], "flat" if c["flat"] else ""])
    note = ("Judged interval: the max_lr values as good as the best within the tolerance, each end reaching "
            "halfway to the next grid value (docs/design.md). Width: high / low, and in steps of the grid's "
            f"mean spacing; 'flat' when it spans more than {FLAT_SHARE:.0%} of the grid's log range. "
            "The details follow.")
    return Table("The answer, cycle by cycle", headers, rows, note, "answer", classes)


def verdict_table(a: Analysis) -> Table:
    headers = ["cycle", "sparsity", "Oracle max_lr", "judged interval", "SILO max_lr", "verdict", "P(inside)",
               "Oracle test %", "SILO test %", "Δ test", "Oracle val %", "SILO val %", "Δ val", "grid interval",
               "sd, δ", "note"]
    rows, classes = [], []
    for r in a.verdicts.to_dict("records"):
        kind = r["verdict"] if isinstance(r["verdict"], str) else None
        verdict = "–" if kind is None else _MARK[kind]
        if kind == "outside" and r["silo_position"] in ("above", "below"):
            verdict += f" ({r['silo_position']})"
        rows.append([
            str(r["cycle"]), pct(r["sparsity"]), lr(r["oracle_max_lr"]), _judged(r),
            lr(r["silo_max_lr"]), verdict, "–" if missing(r["p_inside"]) else f"{r['p_inside']:.2f}",
            _acc(r["oracle_test_acc"], r["oracle_test_std"]),
            _acc(r["silo_test_acc"], r["silo_test_std"]), points(r["gap_test_acc"]).replace(" points", ""),
            _acc(r["oracle_val_acc"], r["oracle_val_std"]), _acc(r["silo_val_acc"], r["silo_val_std"]),
            points(r["gap_val_acc"]).replace(" points", ""), _interval(r["interval_low"], r["interval_high"]),
            "–" if missing(r["delta"]) else f"{100 * r['sd']:.2f}, {100 * r['delta']:.2f}", r["note"] or "",
        ])
        cls = [""] * len(headers)
        cls[5] = "" if kind is None else _CLASS[kind]
        for i, key in ((9, "gap_test_acc"), (12, "gap_val_acc")):
            if not missing(r[key]):
                cls[i] = "pos" if r[key] > 0 else "neg" if r[key] < 0 else ""
        classes.append(cls)
    if not any(r[-1] for r in rows):  # no notes: no note column
        headers, rows, classes = headers[:-1], [r[:-1] for r in rows], [c[:-1] for c in classes]
    s = a.summary
    note = (f"Accuracies are mean ± std over seeds, in %; Δ = SILO − Oracle in percentage points. "
            f"The question: {s['verdict']['question']} δ = {delta_points(s)} "
            f"(analysis.tolerance), the same whatever the number of seeds ({len(s['seeds'])} here). "
            f"Grid interval: the grid max_lr values whose mean val accuracy is within δ of the best; the "
            f"judged interval extends each end halfway (in log) to the next grid value outside, or stays at "
            f"the grid's edge (open). sd: the seed noise of a difference of two grid means (pooled over the "
            f"round's better half), in points; it never moves the interval, only the confidence. P(inside): "
            f"the share of 2,000 redraws of the grid means within their noise (the noise estimate itself "
            f"redrawn too) in which SILO's max_lr is inside the judged interval; inside if ≥ 0.8, outside if "
            f"≤ 0.2, uncertain between.")
    return Table("Verdict per cycle", headers, rows, note, "verdicts", classes)


def arms_table(a: Analysis) -> Table:
    cycles = a.verdicts["cycle"].tolist()
    arms = list(dict.fromkeys(a.arms["arm"]))
    headers = ["arm"] + [f"cycle {q}" for q in cycles]
    rows = []
    for arm in arms:
        cells = [arm]
        mine = a.arms[a.arms["arm"] == arm].set_index("cycle")
        for q in cycles:
            if q not in mine.index:
                cells.append("–")
                continue
            r = mine.loc[q]
            text = _acc(r["test_acc_mean"], r["test_acc_std"])
            bad = [f"{int(r[s])} {s}" for s in (RunStatus.DIVERGED, RunStatus.FAILED) if r[s]]
            extra = f" ({', '.join(bad)})" if bad else ""
            cells.append(f"{text} @ {lr(r['max_lr'])}{extra}")
        rows.append(cells)
    return Table("Test accuracy per arm and cycle", headers, rows,
                 "Mean ± std over seeds (%), @ the cycle's max_lr (for the oracle: its winner). "
                 "Diverged and failed runs are counted in brackets and left out of the mean.", "arms")


def cost_table(a: Analysis) -> Table:
    silo = a.cost[a.cost["arm"] == SILO]
    silo_s = float(silo["run_seconds"].iloc[0]) if len(silo) else 0.0
    rows = []
    for r in a.cost.to_dict("records"):
        ratio = f"{r['run_seconds'] / silo_s:.1f}×" if silo_s and r["arm"] != TOTAL else "–"
        rows.append([r["arm"], str(r["runs"]), f"{r['run_seconds']:,.1f}", f"{r['run_seconds'] / 3600:.2f}",
                     ratio, " / ".join(str(r[s]) for s in RunStatus)])
    return Table("Compute per arm", ["arm", "runs", "run-seconds", "run-hours", "vs SILO", "ok / diverged / failed"],
                 rows, "Run-seconds are the summed wall time of the distinct runs an arm needed. A run shared "
                 "by two arms (the dense cycle, a grid value equal to SILO's max_lr) counts for each of "
                 f"them; '{TOTAL}' counts every run once: what the study actually trained.", "cost")


_READING_CLASS = {"better": "pos", "worse": "neg", "not separated": ""}


def comparisons_table(a: Analysis) -> Table:
    """One row per (arm, reference): the last paired cycle, and the readings over all cycles."""
    table = a.comparisons
    rows, classes = [], []
    for (arm, ref), grp in ([] if table is None or table.empty else table.groupby(["arm", "reference"], sort=False)):
        last = grp[grp["last_cycle"]].iloc[0]
        counts = " / ".join(str(int((grp["reading"] == k).sum())) for k in ("better", "worse", "not separated"))
        bootstrap = ("– (< 4 seeds)" if missing(last["bootstrap_low"])
                     else points_interval(last["bootstrap_low"], last["bootstrap_high"]))
        rows.append([f"{arm} − {ref}", f"{int(last['cycle'])} ({pct(last['sparsity'])})", str(int(last["seeds"])),
                     points(last["mean_diff"]).replace(" points", ""), points_interval(last["t_low"], last["t_high"]),
                     bootstrap, last["reading"], counts])
        classes.append(["", "", "", "", "", "", _READING_CLASS[last["reading"]], ""])
    note = ("Test accuracy of the arm minus the reference's, paired by seed (same seed, same cycle; the Oracle's "
            "runs at its winner), at the last cycle both have runs, in percentage points. 95 % t interval on the "
            "paired differences; the percentile bootstrap over seeds (10,000 resamples) only with 4 or more "
            "seeds. Reading, from the t interval: better (all above 0), worse (all below 0), not separated "
            "(it holds 0). Cycles: how many cycles read better / worse / not separated. Every cycle is in "
            "comparisons.csv.")
    return Table("Paired differences at the last cycle", ["comparison", "cycle (sparsity)", "seeds", "Δ test",
                 "95 % t interval", "bootstrap", "reading", "cycles better / worse / n.s."], rows, note,
                 "comparisons", classes)


def summary_table(a: Analysis) -> Table:
    s = a.summary
    v, g, r = s["verdict"], s["gap"], s["cost_ratio_oracle_to_silo"]
    def counts(d: Mapping[str, Any]) -> str:
        if not d["judged"]:
            return "–"
        return f"{d['inside']} inside, {d['outside']} outside, {d['uncertain']} uncertain (of {d['judged']})"

    rows = [
        ["cycles: SILO's verdict", counts(v)],
        ["pruned cycles (q ≥ 1)", counts(v["pruned_cycles"])],
        ["mean gap, test accuracy (SILO − Oracle)", points(g["mean_gap_test_acc"])],
        ["mean gap, val accuracy (SILO − Oracle)", points(g["mean_gap_val_acc"])],
        ["gap at the last cycle, test accuracy", "–" if g["final_cycle"] is None
         else f"{points(g['final_gap_test_acc'])} (cycle {g['final_cycle']}, sparsity {pct(g['final_sparsity'])})"],
        ["cost ratio Oracle / SILO, run-seconds", "–" if not r["run_seconds"] else f"{r['run_seconds']:.2f}"],
        ["cost ratio Oracle / SILO, runs", "–" if not r["runs"] else f"{r['runs']:.2f}"],
        ["seeds", ", ".join(map(str, s["seeds"]))],
        ["Oracle grid", "–" if not s["grid"] else ", ".join(f"{x:g}" for x in s["grid"])],
        ["delta (analysis.tolerance)", f"{delta_points(s)} of val accuracy"],
        ["seed noise", v["noise"]],
        ["refinements per round", str(s.get("refine", 0))],
        ["Oracle search", search_text(s.get("search"))],
    ]
    return Table("Summary", ["", ""], rows, "", "summary")


def calibration_table(a: Analysis, calibration: Mapping[str, Any]) -> Table:
    """The study's SILO beside the calibrated one (calibration.json): settings and fractions."""
    study = calibration.get("study_silo") or {}
    mine = study.get("settings") or {}
    fit, held = calibration.get("fit") or {}, calibration.get("held_out")

    def count(d: Mapping[str, Any] | None) -> str:
        if not d or not d.get("judged"):
            return "–"
        return (f"{d['inside']} of {d['judged']} ({pct(d['fraction_inside'])}; {d['outside']} outside, "
                f"{d['uncertain']} uncertain)")

    seeds = ", ".join(map(str, fit.get("seeds") or []))
    rows = [[k, "–" if mine.get(k) is None else f"{mine[k]:.4g}", f"{calibration['settings'][k]:.4g}"]
            for k in ("offset", "alpha", "beta", "delay")]
    rows.append([f"inside, fit seeds ({seeds})", count(study.get("fit")), count(fit)])
    if held:
        rows.append([f"inside, held-out seeds ({', '.join(map(str, held.get('seeds') or []))})",
                     count(study.get("held_out")), count(held)])
    note = (f"Fitted by `silo-oracle calibrate` (prune rate {calibration.get('prune_rate', '–')}): the settings "
            f"whose max_lr maximizes the sum over judged cycles of P(inside), ties to the closest curve (in "
            f"log) to the Oracle's winners. Each fraction is the verdict's own (inside: P ≥ 0.8) on the Oracle's "
            f"rounds as judged from those seeds alone; "
            + ("the held-out seeds never entered the fit." if held else "no seeds were held out, so the fit "
               "is judged on the seeds it was fitted to: rerun with --holdout-seeds N to see if it transfers."))
    return Table("Calibrated SILO", ["", "the study's SILO", "calibrated SILO"], rows, note, "calibration")


def versions_table(a: Analysis) -> Table:
    vers = a.summary["versions"]
    rec, now = vers.get("recorded_with") or {}, vers.get("report_built_with") or {}
    names = list(dict.fromkeys([*rec, *now]))
    rows = [[n, str(rec.get(n, "–")), str(now.get(n, "–"))] for n in names]
    return Table("Versions", ["", "the study was recorded with", "this report was built with"], rows, "", "versions")


def sections(a: Analysis, calibration: Mapping[str, Any] | None = None) -> list[Table]:
    extra = [calibration_table(a, calibration)] if calibration else []
    return [summary_table(a), verdict_table(a), comparisons_table(a), *extra, arms_table(a), cost_table(a)]


__all__ = ["Table", "answer_table", "verdict_table", "arms_table", "cost_table", "comparisons_table", "summary_table",
           "calibration_table", "versions_table", "sections"]
