"""The results row: one run as results.csv, the ledger and the Optuna record hold it.

Its columns, and the typed DataFrame the analysis reads, defined below both the sweep (which
writes rows) and the analysis (which reads them), so neither depends on the other.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from oracle.store.arms import ORACLE
from oracle.store.identity import RunKey
from silo.status import RunStatus

COLUMNS = [
    "arm", "seed", "cycle", "max_lr", "sparsity", "val_acc", "test_acc", "train_loss",
    "status", "run_id", "parent_run_id", "wall_s", "steps", "images_per_s", "reused", "chosen", "refined",
    # An Oracle run trained in this sweep: `fused` or `sequential`, and why (oracle.sweep.execute).
    "round_mode", "round_mode_why",
    # A failed run: its trial's error in one line (e.g. the worker's bf16 refusal).
    "error",
]
# A run's learning curve (silo.curves), carried by a row beside COLUMNS from Tune's result to
# the record (Optuna intermediate values and a user attr); results.csv leaves it out.
CURVE = "curve"
ROW_COLUMNS = COLUMNS + ["trial"]  # the Optuna trial number a row was read from (-1: not read)
_FLOATS = ["max_lr", "sparsity", "val_acc", "test_acc", "train_loss", "wall_s", "steps", "images_per_s"]


def rows_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Run rows (dicts with COLUMNS) as a typed DataFrame, sorted by arm, seed, cycle, max_lr."""
    records: list[dict[str, Any]] = [dict(r) for r in rows]
    for r in records:
        r.setdefault("trial", -1)
    df = pd.DataFrame.from_records(records, columns=ROW_COLUMNS)
    for c in _FLOATS:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    for c in ("seed", "cycle", "trial"):
        df[c] = pd.to_numeric(df[c]).astype(int)
    for c in ("reused", "chosen", "refined"):
        df[c] = df[c].map(lambda v: False if v is None or pd.isna(v) else bool(v)).astype(bool)
    df["status"] = df["status"].map(lambda s: s if isinstance(s, str) else RunStatus.FAILED).astype(object)
    for c in ("arm", "run_id", "parent_run_id"):  # plain objects, None where missing (not NaN)
        df[c] = pd.Series([v if isinstance(v, str) else None for v in df[c]], index=df.index, dtype=object)
    df = df.sort_values(["arm", "seed", "cycle", "max_lr"], kind="stable")
    return df.reset_index(drop=True)


def row_key(row: Mapping[str, Any]) -> tuple[str, int, int, float]:
    """(arm, seed, cycle, max_lr): a row's place in a study, one row per key."""
    return row["arm"], int(row["seed"]), int(row["cycle"]), float(row["max_lr"])


# The columns a run store's metrics fill: a run trained again under the same id (its folder
# was found damaged and moved aside, or another --out with the same --storage) has new ones.
# `reused` is not among them: it says what this invocation did, not what the run is.
METRICS = ("val_acc", "test_acc", "train_loss", "sparsity", "wall_s", "steps")


def row_signature(row: Mapping[str, Any]) -> tuple[object, ...]:
    """What can change about a run's row between two writes of it: a run trained again under
    another id or the same one (its metrics), a status, the Oracle's choice. Missing numbers
    (None, NaN) compare equal, as the record stores NaN as null."""
    return (row.get("run_id"), row.get("status"), bool(row.get("chosen")),
            *(_number(row.get(c)) for c in METRICS))


def _number(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def planned_runs(arm: str, grid_size: int, seeds: int, cycles: int, beam: int | None = None) -> int:
    """Runs an arm plans: the Oracle its round's values per seed and cycle (refinement and a
    beam's widening add to them as they come), a chain arm one run per seed and cycle."""
    if arm != ORACLE:
        return seeds * cycles
    return seeds * sum(round_values(grid_size, q, beam) for q in range(cycles))


def round_values(grid_size: int, cycle: int, beam: int | None = None) -> int:
    """How many values an Oracle round starts with: the grid, or (a beam from cycle 1 on) at
    least V's one value plus W each side, never fewer than 3 nor more than the grid."""
    if beam is None or cycle == 0:
        return grid_size
    return min(grid_size, max(3, 2 * int(beam) + 1))


def failed_row(arm: str, key: RunKey, error: str | None = None) -> dict[str, Any]:
    """The row of a run that failed: no metrics, the trial's `error` in one line. Its run id
    only where it is known: a parent_run_id of None past cycle 0 means the parent never
    existed (a chain that broke earlier) or was never chosen, so the run has no id."""
    known = key.parent_run_id is not None or key.cycle == 0
    return {
        "arm": arm, "seed": key.seed, "cycle": key.cycle, "max_lr": key.max_lr,
        "status": RunStatus.FAILED, "run_id": key.run_id if known else None, "parent_run_id": key.parent_run_id,
        "reused": False, "refined": False, "val_acc": float("nan"), "test_acc": float("nan"), "sparsity": None,
        "error": error,
    }
