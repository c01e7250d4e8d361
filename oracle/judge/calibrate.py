"""Calibrate SILO to an Oracle: the S-curve settings that would have followed it.

    c = calibrate_rows(record.rows, record.attrs, holdout_seeds=1)   # pure: rows in, result out
    c.settings            # Settings(offset, alpha, beta, delay); the prune rate is the study's
    c.line()              # "... inside k of n cycles (held out: k' of n')"
    write_calibration(c, out)   # calibration.json, calibrated_silo.yaml (oracle.judge.calibration_file)

What is fitted (docs/design.md, "The optimal interval and SILO's verdict"; the rule is
oracle.judge.selection's and nothing here judges by another): per judged cycle q of the Oracle's
rounds (oracle.judge.lineage.oracle_rounds, on the study's own trajectory), P_q(inside) is the
share of the verdict's 2,000 fixed parametric draws whose judged interval holds the curve's
max_lr at q. The objective is the sum of P_q over the judged cycles, maximized; ties are
broken by the squared distance in log max_lr to the Oracle's winners, minimized.

Held-out seeds: the fit uses the rounds as judged from all but the last N seeds, the check
the same rounds as judged from the N held-out seeds alone. Both use the runs the study
trained, i.e. the lineage of the Oracle's winners over all seeds: a subset's own winner can
differ from the one every seed continued from, and the runs that would follow it do not
exist, so `oracle_rounds` on a subset would stop at the first disagreement.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pandas as pd
import yaml

from oracle.errors import OracleError
from oracle.judge.calibration_file import CALIBRATION_FILE, SCHEMA
from oracle.judge.lineage import OracleRound, oracle_rounds, tolerance_of
from oracle.judge.selection import (
    DRAWS,
    INSIDE,
    OUTSIDE,
    UNCERTAIN,
    IntervalDraws,
    judge,
    round_table,
    verdict_of,
)
from oracle.store.arms import ORACLE, SILO
from oracle.store.plain import json_safe
from oracle.store.rows import rows_frame
from oracle.store.settings import StudySettings
from silo.schedules import silo_max_lr

BETA_LOW, BETA_HIGH = 0.5, 20.0
# beta is searched on a grid: it only bends the curve between the cycles, and a coarse grid
# keeps each (delay, beta) search a 2-D one over (offset, alpha) with the curve's shape
# computed once; the final local polish frees beta between the grid points.
BETA_GRID = tuple(float(b) for b in np.geomspace(BETA_LOW, BETA_HIGH, 13))
# alpha's lower bound (relative to the grid's smallest value): > 0 as log space needs, and
# small enough that "the optimum does not move" comes out as alpha ~ 0.
ALPHA_FLOOR = 1e-3
GRID_POINTS = 48  # per axis of the (offset, alpha) grid: < 0.06 decades apart in offset
STARTS = 4  # the best delays, each polished from its best grid point
# The tie-break stays below half of one draw's share (1/DRAWS), so it can never outweigh
# one more draw inside: the objective is lexicographic (sum P first, distance second).
TIE_WEIGHT = 0.5 / DRAWS
DIGITS = 6  # the settings are rounded like grid values before the final judgement


@dataclass(frozen=True)
class Settings:
    """SILO's S-curve (silo.schedules.silo_max_lr) minus the prune rate, the study's own."""

    offset: float
    alpha: float
    beta: float
    delay: int

    def max_lr(self, cycle: int, prune_rate: float) -> float:
        return silo_max_lr(cycle, prune_rate=prune_rate, offset=self.offset, alpha=self.alpha,
                           beta=self.beta, delay=self.delay)

    def rounded(self) -> Settings:
        def r(x: float) -> float:
            return float(f"{x:.{DIGITS}g}")

        return Settings(r(self.offset), r(self.alpha), r(self.beta), int(self.delay))

    def text(self) -> str:
        return f"offset {self.offset:.4g}, alpha {self.alpha:.4g}, beta {self.beta:.4g}, delay {self.delay}"


@dataclass(frozen=True)
class Target:
    """One judged cycle as seen from one set of seeds: the rule's judgement and its draws."""

    cycle: int
    winner: float
    judged_low: float
    judged_high: float
    seeds: int
    draws: IntervalDraws

    def p_inside(self, max_lr: npt.ArrayLike) -> np.ndarray:
        return self.draws.share(max_lr)


@dataclass(frozen=True)
class Calibration:
    study: str
    prune_rate: float
    cycles: int
    grid: tuple[float, ...]
    settings: Settings
    sum_p_inside: float  # the objective on the fit seeds
    log_distance: float  # its tie-break: sum over judged cycles of log(max_lr / winner)^2
    fit_seeds: tuple[int, ...]
    held_out_seeds: tuple[int, ...]
    per_cycle: list[dict[str, Any]]
    fit: dict[str, Any]  # counts of verdicts on the fit seeds
    held_out: dict[str, Any] | None
    study_silo: dict[str, Any] | None  # the study's own SILO judged the same way, for comparison

    def line(self) -> str:
        held = (f"held out: {self.held_out['inside']} of {self.held_out['judged']}" if self.held_out
                else "no seeds held out")
        return (f"calibrated SILO: {self.settings.text()} (prune rate {self.prune_rate:g}): "
                f"inside {self.fit['inside']} of {self.fit['judged']} cycles ({held})")

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = json_safe({  # json_safe keeps the shape: a dict
            "schema": SCHEMA,
            "study": self.study,
            "prune_rate": self.prune_rate,
            "cycles": self.cycles,
            "grid": list(self.grid),
            "settings": asdict(self.settings),
            "objective": {"sum_p_inside": self.sum_p_inside, "log_distance": self.log_distance,
                          "judged_cycles": self.fit["judged"]},
            "fit": {"seeds": list(self.fit_seeds), **self.fit},
            "held_out": None if self.held_out is None else {"seeds": list(self.held_out_seeds), **self.held_out},
            "study_silo": self.study_silo,
            "per_cycle": self.per_cycle,
            "method": ("maximize the sum over judged cycles of P(inside) (oracle.judge.selection's 2,000 fixed "
                       "draws) at the curve's max_lr, ties to the smallest squared log-distance to the "
                       "Oracle's winners; every delay x a beta grid x a log grid of (offset, alpha), then a "
                       "bounded Nelder-Mead over (offset, alpha, beta) from the best delays' best points"),
        })
        return body

    def yaml_block(self, calibration_path: str = CALIBRATION_FILE) -> str:
        held = (f"held out (seeds {_seeds(self.held_out_seeds)}): inside {self.held_out['inside']} of "
                f"{self.held_out['judged']}" if self.held_out else "no seeds held out")
        body = yaml.safe_dump({"arms": {SILO: asdict(self.settings)}}, sort_keys=False, default_flow_style=None)
        return (f"# SILO calibrated to the Oracle of study {self.study} (silo-oracle calibrate), prune rate "
                f"{self.prune_rate:g}.\n# Fit on seeds {_seeds(self.fit_seeds)}: inside {self.fit['inside']} "
                f"of {self.fit['judged']} cycles; {held}.\n# Paste the silo block into a study's arms, or run "
                f"it beside SILO: arms: {{silo_calibrated: {{from: {calibration_path}}}}}\n{body}")


def _seeds(seeds: Iterable[int]) -> str:
    return ", ".join(str(s) for s in seeds)


# ----------------------------------------------------------------------------- the fit


def calibrate_rows(rows: pd.DataFrame | list[Mapping[str, Any]], attrs: StudySettings | Mapping[str, Any], *,
              holdout_seeds: int = 0) -> Calibration:
    """Fit SILO's settings to the record's Oracle; OracleError (one line) for unusable input.
    `attrs`: the record's settings, or the attrs they are read from (StudySettings.from_attrs)."""
    if not isinstance(rows, pd.DataFrame):
        rows = rows_frame(rows)
    recorded = StudySettings.from_attrs(attrs)
    arms = list(dict.fromkeys([*(recorded.arms or ()), *rows["arm"].unique().tolist()]))
    if ORACLE not in arms or not (rows["arm"] == ORACLE).any():
        raise OracleError("this record has no oracle arm: there is no Oracle to calibrate SILO to")
    seeds = sorted(int(s) for s in (recorded.seeds or sorted(rows["seed"].unique().tolist())))
    n = holdout_seeds
    if isinstance(n, bool) or not isinstance(n, int) or n < 0 or n >= len(seeds):
        raise OracleError(f"--holdout-seeds: must be an int from 0 to {len(seeds) - 1} (the study has "
                          f"{len(seeds)} seed(s): {_seeds(seeds)}), got {n!r}")
    prune_rate = _prune_rate(recorded)
    tolerance = tolerance_of(recorded)
    cycles = sorted(set(range(recorded.cycles or 0)) | set(rows["cycle"].unique().tolist()))
    grid = tuple(sorted(float(v) for v in (recorded.grid or rows.loc[rows["arm"] == ORACLE, "max_lr"].unique())))
    rounds = oracle_rounds(rows, recorded, seeds, cycles, tolerance=tolerance)

    fit_seeds, held_seeds = tuple(seeds[:len(seeds) - n]), tuple(seeds[len(seeds) - n:])
    fit_targets = targets(rounds, fit_seeds, tolerance=tolerance)
    if len(fit_targets) < 2:
        raise OracleError(f"the Oracle has {len(fit_targets)} judged cycle(s) on seeds {_seeds(fit_seeds)}: "
                          "a calibration needs at least 2 (finish the study, or hold out fewer seeds)")
    held_targets = targets(rounds, held_seeds, tolerance=tolerance) if n else []

    settings = fit(fit_targets, prune_rate=prune_rate, cycles=len(cycles), grid=grid).rounded()
    curve = {q: settings.max_lr(q, prune_rate) for q in cycles}
    sum_p, dist = objective(fit_targets, [curve[t.cycle] for t in fit_targets])
    study_curve = _study_silo_curve(recorded, cycles)

    per_cycle: list[dict[str, Any]] = []
    fit_by_q, held_by_q = {t.cycle: t for t in fit_targets}, {t.cycle: t for t in held_targets}
    for q in cycles:
        row: dict[str, Any] = {"cycle": int(q), "max_lr": curve[q]}
        row.update(_judged("", fit_by_q.get(q), curve[q]))
        row.update(_judged("held_out_", held_by_q.get(q), curve[q]) if n else {})
        if study_curve is not None:
            row["study_silo_max_lr"] = study_curve.get(q)
            row.update(_judged("study_silo_", fit_by_q.get(q), study_curve.get(q), oracle=False))
            row.update(_judged("study_silo_held_out_", held_by_q.get(q), study_curve.get(q), oracle=False)
                       if n else {})
        per_cycle.append(row)

    study_silo: dict[str, Any] | None = None
    if study_curve is not None:
        study_silo = {
            "settings": _study_silo_settings(recorded),
            "fit": _counts(per_cycle, "study_silo_verdict"),
            "held_out": _counts(per_cycle, "study_silo_held_out_verdict") if n else None,
        }
        study_silo["sum_p_inside"], _ = objective(fit_targets, [study_curve.get(t.cycle) for t in fit_targets])
    return Calibration(
        study=recorded.study or "?", prune_rate=prune_rate, cycles=len(cycles), grid=grid,
        settings=settings, sum_p_inside=sum_p, log_distance=dist, fit_seeds=fit_seeds,
        held_out_seeds=held_seeds, per_cycle=per_cycle, fit=_counts(per_cycle, "verdict"),
        held_out=_counts(per_cycle, "held_out_verdict") if n else None, study_silo=study_silo,
    )


def targets(rounds: Mapping[int, OracleRound], seeds: Iterable[int], *, tolerance: float) -> list[Target]:
    """The judged cycles of the Oracle's rounds as the rule judges them from `seeds` alone."""
    out: list[Target] = []
    for q, r in sorted(rounds.items()):
        table = round_table(r.rows.to_dict("records"), seeds)
        j = judge(table, grid=r.neighbours, tolerance=tolerance, pool=r.pool)
        if j is None:
            continue
        out.append(Target(int(q), j.winner, j.judged_low, j.judged_high, table.seed_count,
                          IntervalDraws.of(j, table, grid=r.neighbours)))
    return out


def objective(targets: list[Target], max_lrs: Iterable[float | None]) -> tuple[float, float]:
    """(sum of P_q(inside), sum of log(max_lr / winner)^2) over the targets; max_lrs per target."""
    x = np.asarray([math.nan if v is None else float(v) for v in max_lrs], dtype=float)
    p = sum(float(t.p_inside(v)) for t, v in zip(targets, x) if math.isfinite(v))
    d = float(sum(math.log(v / t.winner) ** 2 for t, v in zip(targets, x) if math.isfinite(v) and v > 0))
    return p, d


def _score(targets: list[Target], x: np.ndarray) -> np.ndarray:
    """The objective to minimize for candidates x (rows) x targets (columns): lexicographic."""
    p = np.zeros(x.shape[0])
    for i, t in enumerate(targets):
        p += t.p_inside(x[:, i])
    logw = np.log([t.winner for t in targets])
    d = ((np.log(x) - logw[None, :]) ** 2).sum(axis=1)
    score: np.ndarray = -p + TIE_WEIGHT * d / (1.0 + d)
    return score


def fit(targets: list[Target], *, prune_rate: float, cycles: int, grid: tuple[float, ...]) -> Settings:
    """The settings that maximize the objective (module doc); deterministic.

    P_q(inside) is a step function of max_lr (a share of 2,000 draws): flat almost
    everywhere, so a gradient-based search alone stalls on the first plateau it meets.
    delay is an integer and beta only bends the curve between cycles, so every delay
    0..Q-1 is searched with every beta of a coarse grid; for each, the curve's shape S_q
    (silo_max_lr with offset 0 and alpha 1) is fixed, max_lr_q = offset + alpha * S_q, and a
    dense log-spaced grid of (offset, alpha) is scored in one vectorized pass. The best
    point of each delay then starts a bounded Nelder-Mead (scipy.optimize) over (offset,
    alpha, beta) in log space: derivative-free, it moves along the tie-break inside the best
    plateau and across steps to better ones, and is kept only where it improved. (Seeded
    differential evolution per (delay, beta) finds the same optima, but its per-generation
    overhead made one quickstart calibration take ~15 s instead of well under one.)
    """
    from scipy.optimize import minimize

    low, high = min(grid), max(grid)
    qs = [t.cycle for t in targets]
    bounds = [(math.log(low), math.log(high)), (math.log(ALPHA_FLOOR * low), math.log(high)),
              (math.log(BETA_LOW), math.log(BETA_HIGH))]
    offsets = np.exp(np.linspace(*bounds[0], GRID_POINTS))
    alphas = np.exp(np.linspace(*bounds[1], GRID_POINTS))
    o, a = (m.ravel() for m in np.meshgrid(offsets, alphas, indexing="ij"))
    starts: list[tuple[float, int, np.ndarray]] = []
    for delay in range(max(1, cycles)):
        best: tuple[float, np.ndarray] | None = None
        for beta in BETA_GRID:
            shape = np.array([silo_max_lr(q, prune_rate=prune_rate, offset=0.0, alpha=1.0, beta=beta, delay=delay)
                              for q in qs])
            score = _score(targets, o[:, None] + a[:, None] * shape[None, :])
            i = int(np.argmin(score))  # the first of equal scores: deterministic
            if best is None or score[i] < best[0]:
                best = (float(score[i]), np.log([o[i], a[i], beta]))
        found = cast("tuple[float, np.ndarray]", best)  # set by the first beta: BETA_GRID is not empty
        starts.append((found[0], delay, found[1]))

    def polished(delay: int, w0: np.ndarray) -> tuple[float, np.ndarray]:
        def g(w: np.ndarray) -> float:  # through silo_max_lr itself
            s = Settings(math.exp(w[0]), math.exp(w[1]), math.exp(w[2]), delay)
            return float(_score(targets, np.array([[s.max_lr(q, prune_rate) for q in qs]]))[0])

        res = minimize(g, w0, method="Nelder-Mead", bounds=bounds,
                       options={"xatol": 1e-7, "fatol": 1e-14, "maxiter": 800})
        return (float(res.fun), res.x) if res.fun < g(w0) else (g(w0), w0)

    best_score, best_delay, best_w = math.inf, 0, cast("np.ndarray", None)  # set by the first start's finite score
    for _, delay, w0 in sorted(starts, key=lambda s: (s[0], s[1]))[:STARTS]:
        polished_score, w = polished(delay, w0)
        if polished_score < best_score:
            best_score, best_delay, best_w = polished_score, delay, w
    return Settings(math.exp(best_w[0]), math.exp(best_w[1]), math.exp(best_w[2]), best_delay)


def calibrated_curve(calibration: Mapping[str, Any], cycles: Iterable[int],
                     prune_rate: float | None = None) -> dict[int, float]:
    """The calibrated max_lr per cycle from a calibration.json's content (its own prune rate
    unless one is given)."""
    s = calibration["settings"]
    settings = Settings(float(s["offset"]), float(s["alpha"]), float(s["beta"]), int(s["delay"]))
    rate = float(calibration["prune_rate"] if prune_rate is None else prune_rate)
    return {int(q): settings.max_lr(int(q), rate) for q in cycles}


# ----------------------------------------------------------------------------- helpers


def _prune_rate(recorded: StudySettings) -> float:
    rate = recorded.prune_rate  # from the study file for a record without it (StudySettings.from_attrs)
    if rate is None:
        raise OracleError("this record does not say its prune rate (pruning.rate): re-record it with "
                          "`silo-oracle run` of the same study")
    return float(rate)


def _study_silo_curve(recorded: StudySettings, cycles: Iterable[int]) -> dict[int, float] | None:
    plan = recorded.silo_plan
    if not plan:
        return None
    return {q: float(v) for q in cycles if q < len(plan) and (v := plan[q]) is not None}  # v: so that it narrows


def _study_silo_settings(recorded: StudySettings) -> dict[str, Any] | None:
    try:
        silo = ((yaml.safe_load(recorded.study_yaml or "") or {}).get("arms") or {}).get(SILO)
    except yaml.YAMLError:
        return None
    if not isinstance(silo, dict):
        return None
    return {k: silo.get(k) for k in ("offset", "alpha", "beta", "delay")}


def _judged(prefix: str, t: Target | None, max_lr: float | None, *, oracle: bool = True) -> dict[str, Any]:
    """One cycle's verdict of `max_lr` against target t (None: not judged from these seeds)."""
    p = None if t is None or max_lr is None else float(t.p_inside(max_lr))
    out: dict[str, Any] = {}
    if oracle:
        out = {f"{prefix}oracle_max_lr": t.winner if t else None,
               f"{prefix}judged_low": t.judged_low if t else None,
               f"{prefix}judged_high": t.judged_high if t else None}
    return {**out, f"{prefix}p_inside": p,
            # `t is None` only for the checker: p is None whenever t is
            f"{prefix}verdict": None if p is None or t is None else verdict_of(p, seeds=t.seeds)}


def _counts(per_cycle: list[dict[str, Any]], key: str) -> dict[str, Any]:
    verdicts = [r.get(key) for r in per_cycle if r.get(key) is not None]
    k = {v: sum(x == v for x in verdicts) for v in (INSIDE, OUTSIDE, UNCERTAIN)}
    return {"judged": len(verdicts), **k, "fraction_inside": k[INSIDE] / len(verdicts) if verdicts else None}
