"""The answer to the tool's question, per cycle: the Oracle's best max_lr with its judged
interval, SILO's max_lr, the verdict with P(inside), and how wide the interval is.

Pure: the analysis' verdicts table and the study's grid in, numbers out (no words; those are
oracle.report.render's). Nothing here judges again: the verdict, P(inside) and the judged
interval are the analysis' own fields; this only measures the interval against the grid,
so that a reader sees when "inside" is said of most of the grid.

- width in grid steps: log(judged_high / judged_low) over the grid's mean log spacing
  (log(max / min) / (G - 1)); with one grid value there is no step and it is None;
- factor: judged_high / judged_low;
- share of the grid: log(judged_high / judged_low) over log(max / min);
- flat: the judged interval spans more than FLAT_SHARE of the grid's log range: every max_lr
  over most of the grid did about as well, and a verdict there says little.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from oracle.store.plain import json_safe, missing

FLAT_SHARE = 0.5  # more than half of the grid's log range: the landscape is flat there

FIELDS = ["cycle", "sparsity", "oracle_max_lr", "judged_low", "judged_high", "open_low", "open_high",
          "silo_max_lr", "verdict", "p_inside", "width_steps", "width_factor", "grid_share", "flat"]


def answer_cycles(verdicts: pd.DataFrame, grid: Sequence[float] | None) -> list[dict[str, Any]]:
    """One dict per cycle (FIELDS), from the analysis' verdicts table as it is."""
    values = sorted(float(v) for v in (grid or []) if not missing(v) and float(v) > 0)
    span = math.log(values[-1] / values[0]) if len(values) > 1 else 0.0
    step = span / (len(values) - 1) if span > 0 else None
    out: list[dict[str, Any]] = []
    for r in verdicts.to_dict("records"):
        low, high = r.get("judged_low"), r.get("judged_high")
        width = math.log(high / low) if not missing(low) and not missing(high) and low > 0 else None
        share = width / span if width is not None and span > 0 else None
        out.append({
            "cycle": int(r["cycle"]), "sparsity": r.get("sparsity"), "oracle_max_lr": r.get("oracle_max_lr"),
            "judged_low": low, "judged_high": high, "open_low": bool(r.get("open_low")) if width is not None else None,
            "open_high": bool(r.get("open_high")) if width is not None else None,
            "silo_max_lr": r.get("silo_max_lr"),
            "verdict": r.get("verdict") if isinstance(r.get("verdict"), str) else None,
            "p_inside": r.get("p_inside"),
            "width_steps": None if width is None or step is None else width / step,
            "width_factor": None if width is None else math.exp(width),
            "grid_share": share,
            "flat": share is not None and share > FLAT_SHARE,
        })
    cycles: list[dict[str, Any]] = json_safe(out)  # json_safe keeps the shape: a list of dicts
    return cycles


def runs_of(cycles: Sequence[Mapping[str, Any]], key: str) -> list[tuple[float, list[int]]]:
    """Consecutive cycles that share one value of `key` (missing values skipped): the
    Oracle's best max_lr as "0.098 at cycles 0-5, then 0.031 at 6-7"."""
    out: list[tuple[float, list[int]]] = []
    for c in cycles:
        v: Any = c.get(key)  # a JSON number or null (skipped below)
        if missing(v):
            continue
        if out and math.isclose(out[-1][0], v, rel_tol=1e-9) and out[-1][1][-1] == c["cycle"] - 1:
            out[-1][1].append(c["cycle"])
        else:
            out.append((v, [c["cycle"]]))
    return out
