"""Studies side by side, as the SILO paper's tables put networks and datasets.

    silo-oracle compare results/quickstart results/smoke [--out DIR]
    silo-oracle compare --storage URL --study NAME [--storage URL2 --study NAME2 ...] [DIR ...]

One row per study: its network, dataset, pruning, final sparsity and seeds; whether its sweep
is complete or in progress; SILO's verdict counts; SILO's test accuracy at the final sparsity
and at the highest sparsity every study reached (when one is common to all, within 0.1
point); each baseline's paired difference from SILO at the last cycle with its 95 % t
interval and reading (oracle.judge.comparisons); the Oracle's gap (SILO - Oracle, paired the same
way); and the cost ratio Oracle / SILO in run-seconds. Written as compare.csv, compare.md
and compare.html (self-contained), after every study has been read: a source that cannot
be read, or a study without a silo arm, is one line and exit 2 with nothing written.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from oracle.errors import OracleError, writing
from oracle.judge.analysis import Analysis
from oracle.judge.comparisons import last_of
from oracle.report.render import CSS, html_table, md_table
from oracle.report.tables import Table
from oracle.report.words import pct, points
from oracle.store.arms import ORACLE, SILO
from oracle.store.plain import missing
from silo.atomic import write_atomic

COMPARE_FILES = ("compare.csv", "compare.md", "compare.html")
COMMON_TOL = 1e-3  # sparsities within 0.1 point are the same level (rounding of layer sizes)


@dataclass(frozen=True)
class Comparison:
    """Studies side by side: the table (one row a study), the notes under it, and the files
    written (compare.csv, .md, .html; none when not asked to write)."""

    table: pd.DataFrame
    notes: list[str]
    files: list[Path]


@dataclass(frozen=True)
class Compared:
    source: str  # the folder, or storage#study
    analysis: Analysis


def read_sources(dirs: Sequence[str], storages: Sequence[str], studies: Sequence[str]) -> list[Compared]:
    """Every source's analysis, or OracleError naming the first that cannot be read."""
    from oracle.report.build import analyse_record
    from oracle.store.record import load_record
    from oracle.store.storage import locate, redact

    if len(storages) != len(studies):
        raise OracleError(f"--storage and --study come in pairs: got {len(storages)} --storage and "
                          f"{len(studies)} --study")
    wanted = [(d, *locate(d, None, None)) for d in dirs]
    wanted += [(f"{redact(url)}#{name}", url, name) for url, name in zip(storages, studies)]
    if not wanted:
        raise OracleError("give studies to compare: output folders DIR..., or --storage URL --study NAME pairs")
    out = []
    for label, url, name in wanted:
        try:
            a = analyse_record(load_record(url, name))
        except OracleError as exc:
            raise OracleError(f"{label}: {exc.message}") from None
        if SILO not in a.summary["arms"]:
            raise OracleError(f"{label}: study {a.study} has no silo arm; compare sets SILO beside its "
                              "baselines and the Oracle, so leave this study out")
        out.append(Compared(label, a))
    return out


def _task(a: Analysis) -> dict:
    try:
        body = yaml.safe_load(a.settings.study_yaml or "") or {}
    except yaml.YAMLError:
        body = {}
    return body if isinstance(body, dict) else {}


def _silo_acc(a: Analysis) -> pd.DataFrame:
    """SILO's ok cycles: cycle, sparsity, test accuracy (mean over seeds)."""
    s = a.arms[(a.arms["arm"] == SILO) & (a.arms["seeds_ok"] > 0)]
    return s[["cycle", "sparsity", "test_acc_mean"]].sort_values("cycle")


def common_sparsity(analyses: Sequence[Analysis]) -> float | None:
    """The highest sparsity at which every study has SILO's test accuracy, else None."""
    levels = [_silo_acc(a)["sparsity"].dropna().tolist() for a in analyses]
    if not levels or not all(levels):
        return None
    shared = [x for x in levels[0] if all(any(abs(x - y) <= COMMON_TOL for y in other) for other in levels[1:])]
    return max(shared) if shared else None


def compare_table(compared: Sequence[Compared]) -> tuple[pd.DataFrame, list[str], list[str]]:
    """(one row per study, the baselines in column order, notes for the table)."""
    analyses = [c.analysis for c in compared]
    common = common_sparsity(analyses)
    baselines = list(dict.fromkeys(arm for a in analyses for arm in a.summary["arms"] if arm not in (SILO, ORACLE)))
    rows = []
    for c in compared:
        a, s = c.analysis, c.analysis.summary
        body = _task(a)
        task, pruning = body.get("task") or {}, body.get("pruning") or {}
        data = task.get("data") or {}
        silo = _silo_acc(a)
        final = silo.iloc[-1] if len(silo) else None
        at_common = silo[(silo["sparsity"] - (common or 0)).abs() <= COMMON_TOL] if common is not None else silo[:0]
        v = s["verdict"]
        row = {
            "study": a.study, "source": c.source,
            "network": task.get("model", "?"), "dataset": data.get("name", "?") if isinstance(data, dict) else data,
            "pruning": (f"{pruning.get('strategy', '?')} {pruning.get('rate', '?')}/cycle, "
                        f"rewind {pruning.get('rewind', '?')}"),
            "cycles": s["cycles"], "final_sparsity": float(final["sparsity"]) if final is not None else math.nan,
            "seeds": " ".join(map(str, s["seeds"])),
            "status": "complete" if (s.get("progress") or {}).get("complete", True) else "in progress",
            "judged": v["judged"], "inside": v["inside"], "outside": v["outside"], "uncertain": v["uncertain"],
            "silo_test_acc_final": float(final["test_acc_mean"]) if final is not None else math.nan,
            "common_sparsity": common if common is not None else math.nan,
            "silo_test_acc_common": float(at_common["test_acc_mean"].iloc[-1]) if len(at_common) else math.nan,
        }
        gap = last_of(s, SILO, ORACLE)
        row.update(_pair("oracle_gap", gap))
        for b in baselines:
            row.update(_pair(b, last_of(s, b, SILO)))
        ratio = s["cost_ratio_oracle_to_silo"]["run_seconds"]
        row["cost_ratio_oracle_to_silo"] = ratio if ratio is not None else math.nan
        rows.append(row)
    notes = []
    seeds = {r["seeds"] for r in rows}
    if len(seeds) > 1:
        notes.append("The studies' seeds differ (" + "; ".join(f"{r['study']}: {r['seeds']}" for r in rows)
                     + "): each study's differences are paired within its own seeds.")
    if common is None:
        notes.append("No sparsity is common to every study: the 'at common sparsity' column is empty.")
    elif only_dense(common, rows):
        notes.append("The only sparsity every study reached is the dense network's (0 %): their pruning "
                     "differs (" + "; ".join(f"{r['study']}: {r['pruning']}" for r in rows) + "), so compare "
                     "them at their final sparsity, or cycle by cycle in each study's own report.")
    for r in rows:
        if r["status"] == "in progress":
            notes.append(f"{r['study']} is still in progress: its row is of the runs recorded so far.")
    return pd.DataFrame(rows), baselines, notes


def only_dense(common: float | None, rows: Sequence[Mapping]) -> bool:
    """The common sparsity is the dense network's, while some study was pruned beyond it."""
    return (common is not None and not missing(common) and common <= COMMON_TOL
            and any(not missing(r["final_sparsity"]) and r["final_sparsity"] > COMMON_TOL for r in rows))


def _common_header(common: float, rows: Sequence[Mapping]) -> str:
    if missing(common):
        return "SILO test % (common sparsity)"
    if only_dense(common, rows):
        return "SILO test %, dense (the only common sparsity)"
    return f"SILO test % at {pct(common)}"


def _pair(prefix: str, last: dict | None) -> dict:
    keys = ("diff", "low", "high", "reading", "cycle")
    if last is None:
        return {f"{prefix}_{k}": (None if k == "reading" else math.nan) for k in keys}
    return {f"{prefix}_diff": _num(last["mean_diff"]), f"{prefix}_low": _num(last["t_low"]),
            f"{prefix}_high": _num(last["t_high"]), f"{prefix}_reading": last["reading"],
            f"{prefix}_cycle": last["cycle"]}


def _num(x) -> float:
    return math.nan if x is None else float(x)


def _diff_cell(row: dict, prefix: str) -> str:
    if missing(row.get(f"{prefix}_diff")):
        return "–"
    low, high = row[f"{prefix}_low"], row[f"{prefix}_high"]
    ci = "no interval" if missing(low) else f"[{100 * low:+.1f}, {100 * high:+.1f}]"
    return f"{points(row[f'{prefix}_diff']).replace(' points', '')} {ci} {row[f'{prefix}_reading']}"


def render_table(df: pd.DataFrame, baselines: list[str], notes: list[str]) -> Table:
    common = df["common_sparsity"].iloc[0] if len(df) else math.nan
    headers = ["study", "network", "dataset", "pruning", "final sparsity", "seeds", "status",
               "SILO verdict (in / out / unsure of judged)", "SILO test % (final)",
               _common_header(common, df.to_dict("records")),
               *[f"{b} − SILO" for b in baselines], "SILO − Oracle", "cost Oracle / SILO"]
    rows = []
    for r in df.to_dict("records"):
        rows.append([
            r["study"], str(r["network"]), str(r["dataset"]), r["pruning"], pct(r["final_sparsity"]), r["seeds"],
            r["status"], f"{r['inside']} / {r['outside']} / {r['uncertain']} of {r['judged']}",
            pct(r["silo_test_acc_final"]), pct(r["silo_test_acc_common"]),
            *[_diff_cell(r, b) for b in baselines], _diff_cell(r, "oracle_gap"),
            "–" if missing(r["cost_ratio_oracle_to_silo"]) else f"{r['cost_ratio_oracle_to_silo']:.1f}×",
        ])
    note = ("Differences are test accuracy in percentage points at each study's last cycle, paired by seed, "
            "with the 95 % t interval and its reading (better / worse / not separated: the interval is above "
            "0, below 0, or holds 0); '−' where a study lacks that arm. Cost: run-seconds of the Oracle over "
            "SILO's. " + " ".join(notes))
    return Table("Studies side by side", headers, rows, note.strip(), "compare")


def write_compare(df: pd.DataFrame, table: Table, out: str | os.PathLike) -> list[Path]:
    """compare.csv, .md and .html in `out`; a folder that cannot be written is one line (OracleError)."""
    out = Path(out)
    with writing("the comparison", out):
        return _write_compare(df, table, out)


def _write_compare(df: pd.DataFrame, table: Table, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    e = html.escape
    page = "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>silo-oracle: {e(', '.join(df['study']))}</title><style>{CSS}</style></head><body><main>",
        "<h1>SILO across studies</h1>",
        f'<p class="sub">{e(str(len(df)))} studies: {e(", ".join(df["study"]))}</p>',
        html_table(table), "</main></body></html>", ""])
    md = "\n".join(["# SILO across studies", "", md_table(table), ""])
    return [write_atomic(out / "compare.csv", df.to_csv(index=False)),
            write_atomic(out / "compare.md", md.encode("utf-8")),
            write_atomic(out / "compare.html", page.encode("utf-8"))]
