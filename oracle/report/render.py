"""The report's pages: report.html (self-contained: PNGs inlined as data URIs, inline CSS, no
script, no external resource) and report.md (PNGs referenced as files beside it), each built
from the same tables (oracle.report.tables) with the figures' titles and captions between
them, the progress banner of a study still running, and where the record lives. `html_table`,
`md_table` and `CSS` serve the comparison's pages too (oracle.report.compare).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from typing import Any

from oracle.judge.analysis import Analysis
from oracle.report.tables import Table, answer_table, sections, versions_table
from oracle.report.words import delta_points

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



def _caption(name: str, calibration: Mapping[str, Any] | None) -> str:
    caption = FIGURES[name][1]
    if name == "landscape" and calibration:
        caption += (" The dashed purple line with hollow squares is the calibrated SILO's max_lr "
                    "(silo-oracle calibrate, calibration.json).")
    return caption


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


def html_table(t: Table) -> str:
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


def html_report(a: Analysis, images: dict[str, bytes | None], source: Mapping[str, Any],
                calibration: Mapping[str, Any] | None = None) -> str:
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
        parts.append(html_table(answer))
        parts.append("<h2>The verdict in detail</h2>")
    parts.append(f'<p class="verdict" id="verdict">{e(a.summary["text"])}</p>')
    if a.messages:
        parts.append('<ul class="messages">' + "".join(f"<li>{e(m)}</li>" for m in a.messages) + "</ul>")
    tables = sections(a, calibration)
    parts.append(html_table(tables[0]))
    for name, png in images.items():
        title, caption = FIGURES[name][0], _caption(name, calibration)
        parts.append(f"<h2>{e(title)}</h2>")
        if png is None:
            parts.append(f'<p class="note">{e(_missing(name))}</p>')
            continue
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<figure><img id="fig-{name}" alt="{e(title)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{e(caption)}</figcaption></figure>")
    parts += [html_table(t) for t in tables[1:]]
    parts.append("<h2>Where this comes from</h2>")
    parts.append(f"<p>Optuna storage <code>{e(source['storage'])}</code>, studies "
                 + ", ".join(f"<code>{e(n)}</code>" for n in source["optuna_studies"])
                 + f" (one per arm, named <code>&lt;study&gt;/&lt;arm&gt;</code>). Rebuild this report with "
                 f"<code>{e(source['rebuild'])}</code>; browse the runs with "
                 f"<code>{e(source['dashboard'])}</code>.</p>")
    parts.append(html_table(versions_table(a)))
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
            f"delta {delta_points(s)}")


def _missing(name: str) -> str:
    return {"landscape": "No Oracle runs recorded: there is no landscape to draw.",
            "accuracy": "No run finished ok: there is no accuracy to draw.",
            "comparisons": "No baseline (or Oracle) has a seed paired with a SILO run: nothing to compare.",
            "curves": "No learning curves recorded for the Oracle's round (no Oracle arm, or runs recorded "
                      "before runs kept per-epoch curves)."}[name]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def md_table(t: Table) -> str:
    headers = t.headers if any(t.headers) else ["", ""]
    lines = [f"## {t.title}", "", "| " + " | ".join(_md_cell(h) for h in headers) + " |",
             "|" + "|".join("---" if i == 0 or t.html_id in ("summary", "versions") else "---:"
                            for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
    if t.note:
        lines += ["", f"_{t.note}_"]
    return "\n".join(lines)


def markdown_report(a: Analysis, image_files: dict[str, str | None], source: Mapping[str, Any],
                    calibration: Mapping[str, Any] | None = None) -> str:
    out = [f"# Study {a.study}: SILO vs the Oracle", "", f"_{_subtitle(a)}_", ""]
    if banner := progress_banner(a):
        out += [f"**{banner}**", ""]
    answer = answer_table(a)
    if answer is not None:
        out += [f"**{a.summary['answer']['headline']}**", "", md_table(answer), "", "## The verdict in detail", ""]
    out += [f"> {a.summary['text']}", ""]
    if a.messages:
        out += [f"- {m}" for m in a.messages] + [""]
    tables = sections(a, calibration)
    out += [md_table(tables[0]), ""]
    for name, file in image_files.items():
        title, caption = FIGURES[name][0], _caption(name, calibration)
        out += [f"## {title}", ""]
        out += ([f"![{title}]({file})", "", f"_{caption}_"] if file else [_missing(name)]) + [""]
    for t in tables[1:]:
        out += [md_table(t), ""]
    out += ["## Where this comes from", "",
            f"Optuna storage `{source['storage']}`, studies "
            + ", ".join(f"`{n}`" for n in source["optuna_studies"])
            + f" (one per arm, named `<study>/<arm>`). Rebuild this report with `{source['rebuild']}`; "
            f"browse the runs with `{source['dashboard']}`.", "",
            md_table(versions_table(a)), "", "## Study file", "", "```yaml",
            (a.settings.study_yaml or "(not recorded)").rstrip("\n"), "```", ""]
    return "\n".join(out)


__all__ = ["FIGURES", "CSS", "html_report", "markdown_report", "progress_banner", "html_table", "md_table"]
