"""The report's text: report.html (self-contained: PNGs inlined as data URIs, inline CSS, no
script, no external resource) and report.md (PNGs referenced as files beside it), and the
words they are made of: the number formatters (`pct`, `points`, `lr`) and the verdict's
opening paragraph (`verdict_text`, from the summary alone), which oracle.report.build puts in the
summary as "text" (summary.json, both pages, the CLI's closing line).

Both pages are built from the same tables (`sections()`), so they always say the same thing.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping
from dataclasses import dataclass

from oracle.judge.analysis import TOTAL, Analysis
from oracle.judge.answer import FLAT_SHARE, runs_of
from oracle.store.arms import ORACLE, SILO
from oracle.store.plain import missing
from silo.status import RunStatus

FIGURES = {
    "landscape": ("The Oracle's landscape",
                  "Each cell is the Oracle's mean val accuracy over seeds for one grid max_lr at one cycle, "
                  "on the Oracle's own trajectory (every seed continues from its winner). The dashed box is the "
                  "judged interval: the grid values whose mean is within delta (analysis.tolerance) of the "
                  "best's, each end reaching halfway (in log) to the next grid value outside; an arrow marks an "
                  "end at the grid's edge (open: the best max_lr may lie beyond it). ★ marks the winner. SILO's "
                  "max_lr per cycle is drawn over it: a green dot where the verdict is inside, a red cross "
                  "outside, an amber diamond uncertain. Grey "
                  "cells: a grid value with a diverged or failed run, which can neither win nor enter the interval; "
                  "'pending': planned for the round, not yet run; 'not trained (beam)': outside the beam's round, "
                  "never trained and never a neighbour."),
    "accuracy": ("Accuracy vs sparsity",
                 "Every arm's test and val accuracy per cycle: mean over seeds, bars show the std over "
                 "seeds. The oracle arm's points are its chosen runs. SILO and the Oracle follow different "
                 "trajectories after cycle 1 (different parents, different masks)."),
    "comparisons": ("Baselines against SILO",
                    "Each baseline's test accuracy minus SILO's, paired by seed (same seed, same cycle), in "
                    "percentage points against sparsity: the line is the mean difference over seeds, the band "
                    "its 95 % t interval. Below 0: SILO was better. The dashed line is the Oracle's difference "
                    "from SILO (its chosen runs). A band that crosses 0 is not separated from SILO by seed noise."),
    "curves": ("Learning curves of the Oracle's round",
               "Val accuracy and training loss after every epoch for each grid value of the Oracle's round at "
               "one cycle (mean over seeds; the thick line is the winner). Choose the cycle with "
               "`silo-oracle report DIR --curves-cycle Q` (default: the last judged cycle). Epochs that "
               "task.eval_every skips have no val point."),
}


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""
    html_id: str = ""
    classes: list[list[str]] | None = None  # per cell CSS class (HTML only)


# ----------------------------------------------------------------------------- words


def pct(x) -> str:
    return "–" if missing(x) else f"{100 * x:.1f}%"


def points(x) -> str:
    """A difference of accuracies in percentage points, signed."""
    return "–" if missing(x) else f"{100 * x:+.1f} points"


def lr(x) -> str:
    return "–" if missing(x) else f"{x:.4g}"


def headline(summary: Mapping, cycles: list[dict]) -> str | None:
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


def verdict_text(summary: Mapping) -> str:
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


def _delta(summary: Mapping) -> str:
    """delta (a fraction of accuracy) in points: "1 point", "0.5 points"."""
    said = f"{100 * summary['tolerance']:.3g}"
    return f"{said} point" + ("" if said == "1" else "s")


def _to_decide(unsure: list[Mapping], seeds: int) -> str:
    """Per uncertain cycle, the seeds that would decide it if the means stayed as measured."""
    said = []
    for u in unsure:
        n = u.get("seeds_to_decide")
        said.append(f"cycle {u['cycle']}: " + ("no number of seeds (its neighbour sits at delta itself)" if n is None
                                               else f"about {max(1, n - seeds)} more seed(s)"))
    return "; ".join(said)


def _comparison_words(summary: Mapping) -> list[str]:
    """One sentence: every baseline against SILO at its last paired cycle."""
    said = []
    for p in (summary.get("comparisons") or {}).get("pairs", []):
        if p["reference"] != SILO:
            continue
        last = p["last"]
        said.append(f"{p['arm']} {points(last['mean_diff'])} ({_ci(last['t_low'], last['t_high'])}, "
                    f"{last['seeds']} seeds): {last['reading']}")
    if not said:
        return []
    return [f"Against SILO at the last cycle, paired by seed (test accuracy, 95 % t interval): {'; '.join(said)}."]


def _ci(low, high) -> str:
    """A 95 % interval of a difference, in points."""
    return "no interval" if missing(low) else f"[{100 * low:+.1f}, {100 * high:+.1f}]"


def search_text(search: Mapping | None) -> str:
    """Which search the Oracle ran, and what a beam saved against the exhaustive grid."""
    if not search or search.get("name") != "beam":
        return "exhaustive (every grid value in every cycle)"
    grid = search["grid_runs"]
    share = f" ({search['saved_runs'] / grid:.0%})" if grid else ""
    return (f"beam of {search['beam']}: trained {search['grid_runs_trained']} of the {grid} grid runs of its "
            f"cycles, {search['saved_runs']} saved{share}")


def _cycles(qs) -> str:
    return ", ".join(str(int(q)) for q in qs)


# ----------------------------------------------------------------------------- tables


def _acc(mean, std) -> str:
    if missing(mean):
        return "–"
    return f"{100 * mean:.1f}" + ("" if missing(std) else f" ± {100 * std:.1f}")


def _interval(low, high) -> str:
    return "–" if missing(low) else f"[{lr(low)}, {lr(high)}]"


def _judged(r) -> str:
    if missing(r["judged_low"]) or missing(r["judged_high"]):
        return "–"
    low = ("open " if r["open_low"] else "") + lr(r["judged_low"])
    high = lr(r["judged_high"]) + (" open" if r["open_high"] else "")
    return f"[{low}, {high}]"


_MARK = {"inside": "✔ inside", "outside": "✘ outside", "uncertain": "? uncertain"}
_CLASS = {"inside": "in", "outside": "out", "uncertain": "unsure"}


def _width(c: Mapping) -> str:
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
            f"The question: {s['verdict']['question']} δ = {_delta(s)} "
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
        rows.append([f"{arm} − {ref}", f"{int(last['cycle'])} ({pct(last['sparsity'])})", str(int(last["seeds"])),
                     points(last["mean_diff"]).replace(" points", ""), _ci(last["t_low"], last["t_high"]),
                     _ci(last["bootstrap_low"], last["bootstrap_high"]) if not missing(last["bootstrap_low"])
                     else "– (< 4 seeds)", last["reading"], counts])
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
    def counts(d):
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
        ["delta (analysis.tolerance)", f"{_delta(s)} of val accuracy"],
        ["seed noise", v["noise"]],
        ["refinements per round", str(s.get("refine", 0))],
        ["Oracle search", search_text(s.get("search"))],
    ]
    return Table("Summary", ["", ""], rows, "", "summary")


def calibration_table(a: Analysis, calibration: dict) -> Table:
    """The study's SILO beside the calibrated one (calibration.json): settings and fractions."""
    study = calibration.get("study_silo") or {}
    mine = study.get("settings") or {}
    fit, held = calibration.get("fit") or {}, calibration.get("held_out")

    def count(d) -> str:
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


def sections(a: Analysis, calibration: dict | None = None) -> list[Table]:
    extra = [calibration_table(a, calibration)] if calibration else []
    return [summary_table(a), verdict_table(a), comparisons_table(a), *extra, arms_table(a), cost_table(a)]


def _caption(name: str, calibration: dict | None) -> str:
    caption = FIGURES[name][1]
    if name == "landscape" and calibration:
        caption += (" The dashed purple line with hollow squares is the calibrated SILO's max_lr "
                    "(silo-oracle calibrate, calibration.json).")
    return caption


# ----------------------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
 color:#1d1d1f;background:#fff;margin:0;line-height:1.5}
main{max-width:1240px;margin:0 auto;padding:28px 28px 60px}
h1{font-size:1.7rem;margin:0 0 4px}
h2{font-size:1.2rem;margin:34px 0 8px;border-bottom:1px solid #e3e3e3;padding-bottom:4px}
.sub{color:#666;margin:0 0 18px;font-size:.92rem}
.progress{background:#fff7e6;border-left:4px solid #d08700;padding:10px 18px;border-radius:4px}
.headline{font-size:1.12rem;font-weight:500;margin:6px 0 4px}
td.flat{color:#a15c00}
.verdict{background:#f4f7fb;border-left:4px solid #2b6cb0;padding:14px 18px;font-size:1.04rem;border-radius:4px}
.messages{color:#7a4b00;background:#fff8e6;border-left:4px solid #e0a100;padding:8px 18px;border-radius:4px;
 font-size:.92rem}
.messages li{margin:2px 0}
figure{margin:10px 0 0} figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption,.note{color:#555;font-size:.88rem;margin-top:6px;max-width:980px}
.tablewrap{overflow-x:auto}
table{border-collapse:collapse;font-size:.88rem;font-variant-numeric:tabular-nums}
th,td{padding:5px 9px;border-bottom:1px solid #e6e6e6;text-align:right;white-space:nowrap}
th{background:#fafafa;font-weight:600;border-bottom:2px solid #ddd;vertical-align:bottom}
td:first-child,th:first-child{text-align:left}
tbody tr:nth-child(even){background:#fcfcfc}
td.in{color:#1a7a3a;font-weight:600} td.out{color:#b3261e;font-weight:600} td.unsure{color:#a15c00;font-weight:600}
td.pos{color:#1a7a3a} td.neg{color:#b3261e}
#verdicts td:nth-child(16){text-align:left;white-space:normal;color:#666;min-width:180px}
#versions td,#versions th{text-align:left}
#calibration td{text-align:left}
#summary td:first-child{color:#444} #summary td{text-align:left}
pre{background:#f7f7f7;border:1px solid #eaeaea;padding:12px;overflow-x:auto;font-size:.82rem;border-radius:4px}
code{font-size:.88em}
"""


def _html_table(t: Table) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in t.headers)
    head = f"<thead><tr>{cells}</tr></thead>" if any(t.headers) else ""
    body = []
    for i, row in enumerate(t.rows):
        cls = t.classes[i] if t.classes else [""] * len(row)
        body.append("<tr>" + "".join(
            f'<td class="{c}">{html.escape(x)}</td>' if c else f"<td>{html.escape(x)}</td>" for x, c in zip(row, cls)
        ) + "</tr>")
    ident = f' id="{t.html_id}"' if t.html_id else ""
    note = f'<p class="note">{html.escape(t.note)}</p>' if t.note else ""
    return (f"<h2>{html.escape(t.title)}</h2>\n<div class=\"tablewrap\"><table{ident}>{head}<tbody>"
            + "\n".join(body) + f"</tbody></table></div>{note}")


def html_report(a: Analysis, images: dict[str, bytes | None], source: dict, calibration: dict | None = None) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(a.study)}: SILO vs the Oracle</title><style>{CSS}</style></head><body><main>",
        f"<h1>Study {e(a.study)}: SILO vs the Oracle</h1>",
        f'<p class="sub">{e(_subtitle(a))}</p>',
    ]
    if banner := progress_banner(a):
        parts.append(f'<p class="progress" id="progress">{e(banner)}</p>')
    answer = answer_table(a)
    if answer is not None:
        parts.append(f'<p class="headline" id="headline">{e(a.summary["answer"]["headline"])}</p>')
        parts.append(_html_table(answer))
        parts.append("<h2>The verdict in detail</h2>")
    parts.append(f'<p class="verdict" id="verdict">{e(a.summary["text"])}</p>')
    if a.messages:
        parts.append('<ul class="messages">' + "".join(f"<li>{e(m)}</li>" for m in a.messages) + "</ul>")
    tables = sections(a, calibration)
    parts.append(_html_table(tables[0]))
    for name, png in images.items():
        title, caption = FIGURES[name][0], _caption(name, calibration)
        parts.append(f"<h2>{e(title)}</h2>")
        if png is None:
            parts.append(f'<p class="note">{e(_missing(name))}</p>')
            continue
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<figure><img id="fig-{name}" alt="{e(title)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{e(caption)}</figcaption></figure>")
    parts += [_html_table(t) for t in tables[1:]]
    parts.append("<h2>Where this comes from</h2>")
    parts.append(f"<p>Optuna storage <code>{e(source['storage'])}</code>, studies "
                 + ", ".join(f"<code>{e(n)}</code>" for n in source["optuna_studies"])
                 + f" (one per arm, named <code>&lt;study&gt;/&lt;arm&gt;</code>). Rebuild this report with "
                 f"<code>{e(source['rebuild'])}</code>; browse the runs with "
                 f"<code>{e(source['dashboard'])}</code>.</p>")
    parts.append(_html_table(versions_table(a)))
    parts.append("<h2>Study file</h2>")
    parts.append(f"<pre>{e(a.settings.study_yaml or '(not recorded)')}</pre>")
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def progress_banner(a: Analysis) -> str | None:
    """"in progress: k of n runs, cycles 0-3 judged" for a study whose sweep is not over."""
    p = a.summary.get("progress") or {}
    if not p or p.get("complete"):
        return None
    judged = p.get("judged_cycles") or []
    which = (f"cycles {judged[0]}-{judged[-1]} judged" if len(judged) > 1
             else f"cycle {judged[0]} judged" if judged else "no cycle judged yet")
    stop = p.get("oracle_stopped")
    if stop:  # the Oracle is done: only the other arms still run
        return (f"in progress: {p['runs_done']} of {p['runs_planned']} runs, {which}; the Oracle stopped at "
                f"cycle {stop['cycle']} ({stop['why']}), the other arms are still running. Rebuild the "
                "report when the sweep has finished.")
    return (f"in progress: {p['runs_done']} of {p['runs_planned']} runs, {which}; the other cycles "
            "are not yet judged. Rebuild the report when the sweep has finished.")


def _subtitle(a: Analysis) -> str:
    s = a.summary
    arms = ", ".join(s["arms"]) or "none"
    return (f"{s['cycles']} cycles · {len(s['seeds'])} seed(s) · arms: {arms} · "
            f"delta {_delta(s)}")


def _missing(name: str) -> str:
    return {"landscape": "No Oracle runs recorded: there is no landscape to draw.",
            "accuracy": "No run finished ok: there is no accuracy to draw.",
            "comparisons": "No baseline (or Oracle) has a seed paired with a SILO run: nothing to compare.",
            "curves": "No learning curves recorded for the Oracle's round (no Oracle arm, or runs recorded "
                      "before runs kept per-epoch curves)."}[name]


# ----------------------------------------------------------------------------- Markdown


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(t: Table) -> str:
    headers = t.headers if any(t.headers) else ["", ""]
    lines = [f"## {t.title}", "", "| " + " | ".join(_md_cell(h) for h in headers) + " |",
             "|" + "|".join("---" if i == 0 or t.html_id in ("summary", "versions") else "---:"
                            for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
    if t.note:
        lines += ["", f"_{t.note}_"]
    return "\n".join(lines)


def markdown_report(a: Analysis, image_files: dict[str, str | None], source: dict,
                    calibration: dict | None = None) -> str:
    out = [f"# Study {a.study}: SILO vs the Oracle", "", f"_{_subtitle(a)}_", ""]
    if banner := progress_banner(a):
        out += [f"**{banner}**", ""]
    answer = answer_table(a)
    if answer is not None:
        out += [f"**{a.summary['answer']['headline']}**", "", _md_table(answer), "", "## The verdict in detail", ""]
    out += [f"> {a.summary['text']}", ""]
    if a.messages:
        out += [f"- {m}" for m in a.messages] + [""]
    tables = sections(a, calibration)
    out += [_md_table(tables[0]), ""]
    for name, file in image_files.items():
        title, caption = FIGURES[name][0], _caption(name, calibration)
        out += [f"## {title}", ""]
        out += ([f"![{title}]({file})", "", f"_{caption}_"] if file else [_missing(name)]) + [""]
    for t in tables[1:]:
        out += [_md_table(t), ""]
    out += ["## Where this comes from", "",
            f"Optuna storage `{source['storage']}`, studies "
            + ", ".join(f"`{n}`" for n in source["optuna_studies"])
            + f" (one per arm, named `<study>/<arm>`). Rebuild this report with `{source['rebuild']}`; "
            f"browse the runs with `{source['dashboard']}`.", "",
            _md_table(versions_table(a)), "", "## Study file", "", "```yaml",
            (a.settings.study_yaml or "(not recorded)").rstrip("\n"), "```", ""]
    return "\n".join(out)


__all__ = ["headline", "answer_table",
           "verdict_text", "html_report", "markdown_report", "sections", "verdict_table", "arms_table", "cost_table",
           "summary_table", "versions_table", "calibration_table", "comparisons_table"]
