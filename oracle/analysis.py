"""Analysis of a study from its Optuna record alone: the Oracle's interval, SILO's verdict,
every arm's accuracy, and the compute each arm spent.

    record = read_record(storage, "smoke")       # storage: URL or Optuna storage object
    result = analyse(record.rows, record.attrs)  # pure: DataFrames and a summary dict
    write_tables(result, out)                    # verdicts.csv, arms.csv, summary.json

Definitions (DESIGN.md; the rule itself is oracle.selection's):
- Per cycle, the Oracle's winner and optimal interval are computed on the oracle arm's runs
  of that cycle (the Oracle's own trajectory) with the study's tolerance and noise_k. A grid
  value with a diverged or failed run, or a missing seed, is out of the running.
- SILO's max_lr of cycle q is the one its rule gives (recorded with the study), or, for
  records without it, the one its runs used. Inside iff interval_low <= max_lr <= interval_high.
- Accuracy per arm and cycle: mean and sample std (ddof=1; empty with one seed) over the
  seeds' `ok` runs. For the oracle arm these are the chosen runs (the winner's).
- Compute per arm: the distinct runs (by run_id) the arm needed, and the sum of their
  wall_s (run-seconds). A run shared by two arms (the dense cycle, a grid value equal to
  SILO's max_lr) counts for each arm that needed it: an arm's cost is what it costs on its
  own. Runs that diverged or failed count too: they were paid for. `study total` counts
  every run once, i.e. what the study actually trained.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from oracle.errors import OracleError
from oracle.ledger import COLUMNS
from oracle.selection import Interval, grid_points, optimal_interval

ORACLE, SILO = "oracle", "silo"
DEFAULT_TOLERANCE, DEFAULT_NOISE_K = 0.005, 2.0
ROW_COLUMNS = COLUMNS + ["trial"]
_FLOATS = ["max_lr", "sparsity", "val_acc", "test_acc", "train_loss", "wall_s", "steps", "images_per_s"]

VERDICT_COLUMNS = [
    "cycle", "sparsity", "oracle_max_lr", "interval_low", "interval_high", "silo_max_lr",
    "silo_in_interval", "silo_position", "oracle_val_acc", "silo_val_acc", "oracle_test_acc",
    "silo_test_acc", "gap_val_acc", "gap_test_acc", "oracle_val_std", "silo_val_std",
    "oracle_test_std", "silo_test_std", "oracle_val_se", "tol", "grid_values_ok",
    "grid_values_run", "interval_values", "note",
]
ARM_COLUMNS = [
    "arm", "cycle", "max_lr", "sparsity", "val_acc_mean", "val_acc_std", "test_acc_mean",
    "test_acc_std", "seeds_ok", "runs", "diverged", "failed",
]
COST_COLUMNS = ["arm", "runs", "run_seconds", "ok", "diverged", "failed"]
LANDSCAPE_COLUMNS = ["cycle", "max_lr", "mean_val_acc", "se", "seeds_ok", "state", "in_interval", "winner"]
TOTAL = "study total"


# ----------------------------------------------------------------------------- reading


@dataclass
class Record:
    study: str
    storage: str  # URL without password
    attrs: dict
    rows: pd.DataFrame  # ROW_COLUMNS; the latest trial per (arm, seed, cycle, max_lr)
    optuna_studies: list[str]
    superseded: int  # older trials ignored because a later one has the same key


def read_record(storage, study_name: str | None) -> Record:
    """Everything analysis needs, from the storage (a URL or an Optuna storage object).

    study_name None: the storage's only study (an error naming them if there are several)."""
    from oracle.record import open_storage, redact, study_names, unknown_study

    url = storage if isinstance(storage, str) else getattr(storage, "url", "<storage>")
    if isinstance(storage, str):
        storage = open_storage(storage, must_exist=True)
    known = study_names(storage)
    if study_name is None:
        if len(known) != 1:
            there = ", ".join(sorted(known)) or "none"
            raise OracleError(f"storage {redact(url)}: say which study with --study NAME (studies there: {there})")
        study_name = next(iter(known))
    if study_name not in known:
        raise unknown_study(study_name, url, known)
    studies = _load_studies(storage, study_name, known[study_name])
    rows, superseded = _rows_of(studies)
    return Record(study_name, redact(url), _attrs_of(studies, study_name), rows,
                  [s.study_name for s in studies.values()], superseded)


def load_rows(storage, study_name: str) -> pd.DataFrame:
    """The runs of every `<study_name>/<arm>` Optuna study, one row each (ROW_COLUMNS)."""
    return read_record(storage, study_name).rows


def load_attrs(storage, study_name: str) -> dict:
    """The study-level attributes recorded with the study (oracle.record.study_attrs)."""
    return read_record(storage, study_name).attrs


def _load_studies(storage, study_name: str, arms: list[str]) -> dict:
    import optuna

    from oracle.record import optuna_name, quiet_optuna

    with quiet_optuna():
        return {arm: optuna.load_study(study_name=optuna_name(study_name, arm), storage=storage)
                for arm in arms}


def _attrs_of(studies: Mapping[str, Any], study_name: str) -> dict:
    attrs: dict = {}
    for s in studies.values():  # the same on every arm's study; the union tolerates gaps
        for k, v in s.user_attrs.items():
            attrs.setdefault(k, v)
    attrs.pop("arm", None)
    attrs["study"] = study_name
    arms = list(attrs.get("arms") or [])
    attrs["arms"] = arms + [a for a in studies if a not in arms]
    return attrs


def _rows_of(studies: Mapping[str, Any]) -> tuple[pd.DataFrame, int]:
    from oracle.record import trial_key

    latest: dict[tuple, dict] = {}
    seen = 0
    for arm, s in studies.items():
        for t in s.get_trials(deepcopy=False):
            if not {"seed", "cycle", "max_lr"} <= set(t.params) or "status" not in t.user_attrs:
                continue  # not a run recorded by oracle.record
            seen += 1
            seed, cycle, max_lr = trial_key(t)
            key = (arm, seed, cycle, max_lr)
            if key in latest and latest[key]["trial"] > t.number:
                continue
            latest[key] = {**{c: t.user_attrs.get(c) for c in COLUMNS}, "arm": arm, "seed": seed,
                           "cycle": cycle, "max_lr": max_lr, "trial": t.number}
    return rows_frame(latest.values()), seen - len(latest)


def rows_frame(rows) -> pd.DataFrame:
    """Run rows (dicts with ledger.COLUMNS) as a typed DataFrame, sorted by arm, seed, cycle, max_lr."""
    rows = [dict(r) for r in rows]
    for r in rows:
        r.setdefault("trial", -1)
    df = pd.DataFrame.from_records(rows, columns=ROW_COLUMNS)
    for c in _FLOATS:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    for c in ("seed", "cycle", "trial"):
        df[c] = pd.to_numeric(df[c]).astype(int)
    for c in ("reused", "chosen"):
        df[c] = df[c].map(lambda v: bool(v) if v is not None and v == v else False).astype(bool)
    df["status"] = df["status"].map(lambda s: s if isinstance(s, str) else "failed").astype(object)
    for c in ("arm", "run_id", "parent_run_id"):  # plain objects, None where missing (not NaN)
        df[c] = pd.Series([v if isinstance(v, str) else None for v in df[c]], index=df.index, dtype=object)
    df = df.sort_values(["arm", "seed", "cycle", "max_lr"], kind="stable")
    return df.reset_index(drop=True)


# ----------------------------------------------------------------------------- analysis


@dataclass
class Analysis:
    study: str
    attrs: dict
    rows: pd.DataFrame
    verdicts: pd.DataFrame  # VERDICT_COLUMNS, one row per cycle
    arms: pd.DataFrame  # ARM_COLUMNS, one row per arm and cycle
    cost: pd.DataFrame  # COST_COLUMNS, one row per arm and the study total
    landscape: pd.DataFrame  # LANDSCAPE_COLUMNS: the Oracle's grid, per cycle and max_lr
    summary: dict
    messages: list[str] = field(default_factory=list)


def analyse(rows: pd.DataFrame | list[Mapping], attrs: Mapping[str, Any], *, superseded: int = 0) -> Analysis:
    """Per cycle verdicts, per arm accuracy and cost, and the summary. Pure."""
    if not isinstance(rows, pd.DataFrame):
        rows = rows_frame(rows)
    attrs = dict(attrs)
    study = str(attrs.get("study", "?"))
    arms = list(dict.fromkeys([*(attrs.get("arms") or []), *rows["arm"].unique().tolist()]))
    tolerance = float(attrs.get("tolerance", DEFAULT_TOLERANCE))
    noise_k = float(attrs.get("noise_k", DEFAULT_NOISE_K))
    oracle_rows = rows[rows["arm"] == ORACLE]
    seeds = attrs.get("seeds") or sorted(oracle_rows["seed"].unique().tolist())
    cycles = sorted(set(range(int(attrs.get("cycles") or 0))) | set(rows["cycle"].unique().tolist()))

    intervals: dict[int, Interval | None] = {}
    grids: dict[int, list] = {}
    landscape = []
    for q in cycles:
        recs = oracle_rows[oracle_rows["cycle"] == q].to_dict("records")
        grids[q] = grid_points(recs, seeds)
        intervals[q] = optimal_interval(grids[q], tolerance=tolerance, noise_k=noise_k)
        landscape += _landscape(q, recs, seeds, intervals[q])
    landscape_df = pd.DataFrame(landscape, columns=LANDSCAPE_COLUMNS)

    arm_stats = pd.DataFrame(
        [s for arm in arms for q in cycles if (s := _arm_cycle(rows, arm, q, intervals.get(q))) is not None],
        columns=ARM_COLUMNS,
    )
    silo_plan = attrs.get("silo_max_lr")
    verdicts = pd.DataFrame(
        [_verdict(q, rows, arm_stats, grids[q], intervals[q], silo_plan, SILO in arms, ORACLE in arms)
         for q in cycles],
        columns=VERDICT_COLUMNS,
    )
    cost = _cost(rows, arms)
    messages = _messages(arms, verdicts, rows, superseded)
    summary = _summary(study, attrs, verdicts, cost, arms, tolerance, noise_k, seeds, messages)
    return Analysis(study, attrs, rows, verdicts, arm_stats, cost, landscape_df, summary, messages)


def _landscape(q: int, recs: list[dict], seeds, interval: Interval | None) -> list[dict]:
    ok_values = {p.max_lr: p for p in grid_points(recs, seeds)}
    by_value: dict[float, list[dict]] = {}
    for r in recs:
        by_value.setdefault(float(r["max_lr"]), []).append(r)
    out = []
    for v, runs in sorted(by_value.items()):
        statuses = {r["status"] for r in runs}
        p = ok_values.get(v)
        ok = [r["val_acc"] for r in runs if r["status"] == "ok"]
        state = ("ok" if p is not None else "failed" if "failed" in statuses
                 else "diverged" if "diverged" in statuses else "incomplete")
        out.append({
            "cycle": q, "max_lr": v,
            "mean_val_acc": p.mean_val_acc if p else (sum(ok) / len(ok) if ok else math.nan),
            "se": p.se if p else math.nan, "seeds_ok": len(ok), "state": state,
            "in_interval": bool(interval is not None and interval.contains(v)),
            "winner": bool(interval is not None and interval.winner.max_lr == v),
        })
    return out


def _arm_cycle(rows: pd.DataFrame, arm: str, q: int, interval: Interval | None) -> dict | None:
    mine = rows[(rows["arm"] == arm) & (rows["cycle"] == q)]
    if mine.empty:
        return None
    if arm == ORACLE:
        max_lr = interval.winner.max_lr if interval else math.nan
        used = mine[mine["max_lr"] == max_lr] if interval else mine.iloc[0:0]
    else:
        max_lr = float(mine["max_lr"].iloc[0])
        used = mine
    ok = used[used["status"] == "ok"]
    return {
        "arm": arm, "cycle": q, "max_lr": max_lr,
        "sparsity": _mean(ok["sparsity"]) if not ok.empty else _mean(used["sparsity"]),
        "val_acc_mean": _mean(ok["val_acc"]), "val_acc_std": _std(ok["val_acc"]),
        "test_acc_mean": _mean(ok["test_acc"]), "test_acc_std": _std(ok["test_acc"]),
        "seeds_ok": len(ok), "runs": len(mine),
        "diverged": int((mine["status"] == "diverged").sum()),
        "failed": int((mine["status"] == "failed").sum()),
    }


def _mean(s: pd.Series) -> float:
    s = s.dropna()
    return float(s.mean()) if len(s) else math.nan


def _std(s: pd.Series) -> float:
    s = s.dropna()
    return float(s.std(ddof=1)) if len(s) > 1 else math.nan


def _stat(arm_stats: pd.DataFrame, arm: str, q: int, col: str) -> float:
    hit = arm_stats[(arm_stats["arm"] == arm) & (arm_stats["cycle"] == q)]
    return float(hit[col].iloc[0]) if len(hit) else math.nan


def _verdict(q, rows, arm_stats, points, interval, silo_plan, has_silo, has_oracle) -> dict:
    silo_rows = rows[(rows["arm"] == SILO) & (rows["cycle"] == q)]
    if has_silo and silo_plan and q < len(silo_plan) and silo_plan[q] is not None:
        silo_lr = float(silo_plan[q])
    elif not silo_rows.empty:
        silo_lr = float(silo_rows["max_lr"].iloc[0])
    else:
        silo_lr = math.nan
    inside = position = None
    if interval is not None and not math.isnan(silo_lr):
        inside = interval.contains(silo_lr)
        position = "inside" if inside else ("above" if silo_lr > interval.high else "below")
    sparsity = math.nan
    for arm in (ORACLE, SILO, *arm_stats["arm"].unique().tolist()):
        sparsity = _stat(arm_stats, arm, q, "sparsity")
        if not math.isnan(sparsity):
            break
    oracle_runs = rows[(rows["arm"] == ORACLE) & (rows["cycle"] == q)]
    o = {c: _stat(arm_stats, ORACLE, q, c) for c in ("val_acc_mean", "val_acc_std", "test_acc_mean", "test_acc_std")}
    s = {c: _stat(arm_stats, SILO, q, c) for c in ("val_acc_mean", "val_acc_std", "test_acc_mean", "test_acc_std")}
    notes = []
    if has_oracle and oracle_runs.empty:
        notes.append("the Oracle did not reach this cycle")
    elif has_oracle and interval is None:
        notes.append("no grid value ran ok for every seed")
    elif interval is not None:
        chosen = sorted(set(oracle_runs.loc[oracle_runs["chosen"], "max_lr"].tolist()))
        if chosen and chosen != [interval.winner.max_lr]:
            notes.append(f"recorded choice {', '.join(f'{v:g}' for v in chosen)} differs from the rule's winner")
    if has_silo and not silo_rows.empty and not (silo_rows["status"] == "ok").all():
        bad = sorted(set(silo_rows["status"]) - {"ok"})
        notes.append(f"SILO runs {' and '.join(bad)}")
    elif has_silo and silo_rows.empty:
        notes.append("no SILO runs recorded")
    return {
        "cycle": q, "sparsity": sparsity,
        "oracle_max_lr": interval.winner.max_lr if interval else math.nan,
        "interval_low": interval.low if interval else math.nan,
        "interval_high": interval.high if interval else math.nan,
        "silo_max_lr": silo_lr, "silo_in_interval": inside, "silo_position": position,
        "oracle_val_acc": o["val_acc_mean"], "silo_val_acc": s["val_acc_mean"],
        "oracle_test_acc": o["test_acc_mean"], "silo_test_acc": s["test_acc_mean"],
        "gap_val_acc": s["val_acc_mean"] - o["val_acc_mean"],
        "gap_test_acc": s["test_acc_mean"] - o["test_acc_mean"],
        "oracle_val_std": o["val_acc_std"], "silo_val_std": s["val_acc_std"],
        "oracle_test_std": o["test_acc_std"], "silo_test_std": s["test_acc_std"],
        "oracle_val_se": interval.winner.se if interval else math.nan,
        "tol": interval.tol if interval else math.nan,
        "grid_values_ok": len(points),
        "grid_values_run": int(oracle_runs["max_lr"].nunique()),
        "interval_values": sum(interval.contains(p.max_lr) for p in points) if interval else 0,
        "note": "; ".join(notes),
    }


def _cost(rows: pd.DataFrame, arms: list[str]) -> pd.DataFrame:
    def spent(df: pd.DataFrame, name: str) -> dict:
        named = df[df["run_id"].notna()].drop_duplicates("run_id")
        runs = pd.concat([named, df[df["run_id"].isna()]])
        return {
            "arm": name, "runs": len(runs), "run_seconds": float(runs["wall_s"].fillna(0.0).sum()),
            "ok": int((runs["status"] == "ok").sum()),
            "diverged": int((runs["status"] == "diverged").sum()),
            "failed": int((runs["status"] == "failed").sum()),
        }

    out = [spent(rows[rows["arm"] == arm], arm) for arm in arms]
    out.append(spent(rows, TOTAL))
    return pd.DataFrame(out, columns=COST_COLUMNS)


def _messages(arms, verdicts: pd.DataFrame, rows: pd.DataFrame, superseded: int) -> list[str]:
    out = []
    if SILO not in arms:
        out.append("This study has no silo arm: there is no verdict, only the Oracle's landscape "
                   "and the arms' accuracy and cost.")
    if ORACLE not in arms:
        out.append("This study has no oracle arm: SILO's max_lr cannot be judged against the "
                   "Oracle's optimal interval; the report compares accuracy and cost only.")
    if ORACLE in arms:
        missing = verdicts.loc[verdicts["oracle_max_lr"].isna(), "cycle"].tolist()
        if missing:
            out.append(f"The Oracle has no winner at cycle(s) {_cycles(missing)} "
                       "(not reached, or no grid value ran ok for every seed).")
    bad = rows[rows["status"] != "ok"]
    for arm, grp in bad.groupby("arm", sort=True):
        counts = grp["status"].value_counts()
        what = ", ".join(f"{int(n)} {status}" for status, n in sorted(counts.items()))
        out.append(f"{arm}: {what} run(s); they are left out of every mean, and a grid value with "
                   "one never wins nor enters the interval.")
    if superseded:
        out.append(f"{superseded} older trial(s) in the storage were superseded by later records "
                   "of the same run key and ignored.")
    return out


def _cycles(qs) -> str:
    return ", ".join(str(int(q)) for q in qs)


def _summary(study, attrs, verdicts, cost, arms, tolerance, noise_k, seeds, messages) -> dict:
    judged = verdicts[verdicts["silo_in_interval"].notna()]
    pruned = judged[judged["cycle"] >= 1]
    both = verdicts[verdicts["gap_test_acc"].notna()]
    final = both.iloc[-1] if len(both) else None
    by_arm = {r["arm"]: {"runs": int(r["runs"]), "run_seconds": float(r["run_seconds"])}
              for r in cost.to_dict("records")}

    def ratio(key: str):
        o, s = by_arm.get(ORACLE, {}).get(key), by_arm.get(SILO, {}).get(key)
        return (o / s) if o is not None and s else None

    def frac(df):
        n = len(df)
        k = int(df["silo_in_interval"].astype(bool).sum()) if n else 0
        return {"judged": n, "inside": k, "fraction_inside": (k / n) if n else None}

    from oracle.provenance import environment

    summary = {
        "study": study,
        "arms": arms,
        "cycles": int(attrs.get("cycles") or len(verdicts)),
        "seeds": list(seeds),
        "grid": attrs.get("grid"),
        "tolerance": tolerance,
        "noise_k": noise_k,
        "verdict": {
            **frac(judged),
            "pruned_cycles": frac(pruned),
            "outside": [{"cycle": int(r["cycle"]), "position": r["silo_position"],
                         "silo_max_lr": r["silo_max_lr"], "interval": [r["interval_low"], r["interval_high"]]}
                        for r in judged.to_dict("records") if not r["silo_in_interval"]],
        },
        "gap": {  # SILO minus Oracle, accuracy as a fraction
            "cycles": len(both),
            "mean_gap_test_acc": _mean(both["gap_test_acc"]),
            "mean_gap_val_acc": _mean(both["gap_val_acc"]),
            "final_cycle": int(final["cycle"]) if final is not None else None,
            "final_sparsity": final["sparsity"] if final is not None else None,
            "final_oracle_test_acc": final["oracle_test_acc"] if final is not None else None,
            "final_silo_test_acc": final["silo_test_acc"] if final is not None else None,
            "final_gap_test_acc": final["gap_test_acc"] if final is not None else None,
        },
        "cost": by_arm,
        "cost_ratio_oracle_to_silo": {"run_seconds": ratio("run_seconds"), "runs": ratio("runs")},
        "messages": messages,
        "versions": {"recorded_with": attrs.get("recorded_with") or {}, "report_built_with": environment()},
    }
    summary = _json_safe(summary)
    summary["text"] = verdict_text(summary)
    return summary


# ----------------------------------------------------------------------------- words


def pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def points(x) -> str:
    """A difference of accuracies in percentage points, signed."""
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:+.1f} points"


def lr(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


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
    words = [f"SILO's max_lr was inside the Oracle's optimal interval in {v['inside']} of {v['judged']} cycles"]
    p = v["pruned_cycles"]
    if p["judged"] and p["judged"] != v["judged"]:
        words[0] += f" ({p['inside']} of {p['judged']} pruned cycles, q ≥ 1)"
    out = v["outside"]
    if out:
        shown = [f"{o['cycle']} ({o['position']}: {lr(o['silo_max_lr'])} vs "
                 f"[{lr(o['interval'][0])}, {lr(o['interval'][1])}])" for o in out[:4]]
        more = f" and {len(out) - 4} more" if len(out) > 4 else ""
        words[0] += f"; it was outside at cycle {', '.join(shown)}{more}."
    else:
        words[0] += "."
    if gap["final_cycle"] is not None:
        words.append(
            f"At the last cycle both finished (cycle {gap['final_cycle']}, sparsity {pct(gap['final_sparsity'])}), "
            f"SILO reached {pct(gap['final_silo_test_acc'])} test accuracy against the Oracle's "
            f"{pct(gap['final_oracle_test_acc'])} ({points(gap['final_gap_test_acc'])}); averaged over "
            f"{gap['cycles']} cycles the difference was {points(gap['mean_gap_test_acc'])} on test and "
            f"{points(gap['mean_gap_val_acc'])} on validation accuracy."
        )
    r = summary["cost_ratio_oracle_to_silo"]
    c = summary["cost"]
    if r["runs"]:
        secs = f"{c[ORACLE]['run_seconds']:,.0f} vs {c[SILO]['run_seconds']:,.0f} run-seconds"
        times = f"{r['run_seconds']:.1f}×" if r["run_seconds"] else f"{r['runs']:.1f}× (in runs)"
        words.append(f"The Oracle cost {times} SILO's compute ({secs}; "
                     f"{c[ORACLE]['runs']} vs {c[SILO]['runs']} runs).")
    return " ".join(words)


# ----------------------------------------------------------------------------- files


def write_tables(analysis: Analysis, out: str | os.PathLike) -> list[Path]:
    """verdicts.csv, arms.csv, cost.csv and summary.json in `out` (each written atomically)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, df in (("verdicts.csv", analysis.verdicts), ("arms.csv", analysis.arms), ("cost.csv", analysis.cost)):
        written.append(_atomic(out / name, df.to_csv(index=False)))
    written.append(_atomic(out / "summary.json", json.dumps(analysis.summary, indent=2, allow_nan=False) + "\n"))
    return written


def _atomic(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
