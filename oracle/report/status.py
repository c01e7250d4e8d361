"""`silo-oracle status DIR` (or `--storage URL --study NAME`): where a study stands.

For a running, interrupted or finished study, from its Optuna record (written live by the
driver, oracle.sweep.live) and its folder's driver lock: per arm the runs done of those planned,
failures and divergences, the Oracle's current cycle, the elapsed time and an ETA from the
measured run times and the concurrency seen so far, and whether a driver is alive.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from oracle.store.arms import ORACLE
from oracle.store.rows import planned_runs
from oracle.store.settings import StudySettings
from silo.status import RunStatus


def study_status(rows, attrs: StudySettings | Mapping[str, Any], *, folder: str | None = None) -> dict:
    """The status as plain data (what `--json` prints). `rows`: oracle.store.rows.rows_frame rows;
    `attrs`: the study's settings (or the attrs or plan.json they are read from)."""
    from oracle.judge.analysis import tabulate
    from oracle.store.lock import LOCK_NAME, driver_alive, read_holder

    # What the study plans and whether it is complete, as the report judges it: a beam's
    # rounds, refinements and an Oracle that stopped plan other runs than grid x seeds.
    settings = StudySettings.from_attrs(attrs)
    progress = tabulate(rows, settings).summary["progress"]
    seeds = list(settings.seeds or ())
    cycles = settings.cycles or 0
    grid = settings.grid or ()
    arms = list(settings.arms or sorted(set(rows["arm"])))
    mine = rows[rows["seed"].isin(seeds)] if seeds else rows
    per_arm = {}
    chains = sum(planned_runs(arm, len(grid), len(seeds), cycles) for arm in arms if arm != ORACLE)
    for arm in arms:
        r = mine[mine["arm"] == arm]
        planned = (progress["runs_planned"] - chains if arm == ORACLE
                   else planned_runs(arm, len(grid), len(seeds), cycles))
        per_arm[arm] = {
            "done": int(len(r)), "planned": int(max(planned, len(r))),
            **{s.value: int((r["status"] == s).sum()) for s in RunStatus},
        }
    oracle = mine[mine["arm"] == ORACLE]
    done = sum(a["done"] for a in per_arm.values())
    planned = sum(a["planned"] for a in per_arm.values())
    alive = driver_alive(folder) if folder else False
    holder = read_holder(Path(folder) / LOCK_NAME) if folder else None
    elapsed = (time.time() - holder["started"]) if alive and holder and holder.get("started") else None
    # Concurrency seen so far: run-seconds spent per second of wall time.
    wall = float(mine["wall_s"].fillna(0).sum())
    concurrency = (wall / elapsed) if elapsed else None
    mean_run = float(mine["wall_s"].dropna().mean()) if mine["wall_s"].notna().any() else None
    eta = None
    if alive and mean_run and concurrency and concurrency > 0:
        eta = (planned - done) * mean_run / concurrency
    return {
        "study": settings.study,
        "driver_alive": alive,
        "state": "running" if alive else ("finished" if progress["complete"] else "interrupted"),
        "runs_done": done, "runs_planned": planned,
        "arms": per_arm,
        "oracle_cycle": int(oracle["cycle"].max()) if len(oracle) else None,
        "cycles": cycles,
        "elapsed_s": elapsed, "concurrency": concurrency, "mean_run_s": mean_run, "eta_s": eta,
        "rounds": round_modes(oracle),
    }


def round_modes(oracle_rows) -> list[dict]:
    """How the Oracle's rounds were trained: each (mode, why) once, with its cycles."""
    if "round_mode" not in oracle_rows or oracle_rows.empty:  # nothing trained yet
        return []
    trained = oracle_rows[oracle_rows["round_mode"].map(lambda m: isinstance(m, str) and bool(m))]
    out = []
    for (mode, why), group in trained.groupby(["round_mode", "round_mode_why"], sort=False, dropna=False):
        out.append({"mode": mode, "why": why if isinstance(why, str) else "",
                    "cycles": sorted(int(c) for c in set(group["cycle"]))})
    return sorted(out, key=lambda m: (m["cycles"][0], m["mode"]))


def _secs(x) -> str:
    if x is None or pd.isna(x):
        return "–"
    x = int(round(x))
    return f"{x // 3600}h{x % 3600 // 60:02d}m" if x >= 3600 else f"{x // 60}m{x % 60:02d}s"


def render(s: dict) -> str:
    lines = [f"study {s['study']}: {s['state']}"
             + (" (driver alive)" if s["driver_alive"] else " (no driver running)"),
             f"{s['runs_done']} of {s['runs_planned']} runs done; Oracle at cycle "
             f"{'–' if s['oracle_cycle'] is None else s['oracle_cycle']} of 0..{s['cycles'] - 1}",
             f"{'arm':<16}{'done':>6}{'planned':>9}{'ok':>6}{'diverged':>10}{'failed':>8}"]
    for arm, a in s["arms"].items():
        lines.append(f"{arm:<16}{a['done']:>6}{a['planned']:>9}{a['ok']:>6}{a['diverged']:>10}{a['failed']:>8}")
    for m in s.get("rounds", []):
        lines.append(f"oracle rounds {m['mode']} at cycle(s) {', '.join(map(str, m['cycles']))} ({m['why']})")
    conc = "–" if s["concurrency"] is None else f"{s['concurrency']:.1f}"
    lines.append(f"elapsed {_secs(s['elapsed_s'])}, mean run {_secs(s['mean_run_s'])}, "
                 f"concurrency {conc}, ETA {_secs(s['eta_s'])}")
    return "\n".join(lines)


def rows_and_settings(folder: str | None, storage: str | None, study: str | None):
    """The runs and the study's settings that `status` reads: the record's; while a driver
    holds the folder, the settings are its plan (DIR/plan.json, this invocation's), and the
    runs whatever the record holds yet (none before the live record's first write). An
    error only when there is neither a record, nor a live driver, nor a plan."""
    from oracle.errors import OracleError
    from oracle.store.lock import driver_alive
    from oracle.store.plan import PLAN_FILE, read_plan
    from oracle.store.record import load_record
    from oracle.store.rows import rows_frame
    from oracle.store.storage import locate, no_record_in

    plan = read_plan(folder) if storage is None else None
    alive = folder is not None and driver_alive(folder)
    if folder is not None and alive and plan is None and storage is None:
        plan = _plan_of_a_driver_starting(folder)
    try:
        url, name = locate(folder, storage, study)
        record = load_record(url, name or (StudySettings.from_attrs(plan).study if plan else None))
    except OracleError:
        if plan is None and not alive:
            if folder is not None and storage is None and no_record_in(folder):
                raise OracleError(f"{folder}: no Optuna record (optuna.db, record.json), no {PLAN_FILE} and no "
                                  "running driver here: not a study's output folder, or its run has not started; "
                                  "or pass --storage URL") from None
            raise
        return rows_frame([]), dict(plan or {})
    return record.rows, (plan if alive and plan else record.attrs)


def _plan_of_a_driver_starting(folder: str, wait_s: float = 5.0) -> dict[str, Any] | None:
    """The driver writes plan.json just after it takes the folder's lock: a status asked in
    between (a loaded machine widens the window) waits for it instead of answering 0 planned."""
    import time

    from oracle.store.plan import read_plan

    deadline = time.monotonic() + wait_s
    while (plan := read_plan(folder)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return plan
