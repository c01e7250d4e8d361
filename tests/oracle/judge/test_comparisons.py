"""Paired comparisons (oracle.judge.comparisons): differences paired by seed, t intervals equal to
scipy's, the percentile bootstrap from 4 seeds, and the three readings on synthetic records."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from oracle.judge.comparisons import (
    BETTER,
    NOT_SEPARATED,
    WORSE,
    bootstrap_interval,
    paired_comparisons,
    pairs,
    reading,
    t_interval,
)
from oracle.report.build import analysis_of
from oracle.store.rows import rows_frame

SEEDS = [0, 1, 2, 3, 4]


def _row(arm, seed, cycle, max_lr, test_acc, status="ok"):
    return {"arm": arm, "seed": seed, "cycle": cycle, "max_lr": max_lr, "sparsity": 1 - 0.8 ** cycle,
            "val_acc": test_acc, "test_acc": test_acc, "train_loss": 0.1, "status": status,
            "run_id": f"{arm}-{seed}-{cycle}-{max_lr}", "parent_run_id": None, "wall_s": 1.0, "steps": 10,
            "images_per_s": 1.0, "reused": False, "chosen": False, "refined": False}


def _verdicts(cycles, winners=None):
    winners = winners or {}
    return pd.DataFrame({"cycle": list(cycles), "sparsity": [1 - 0.8 ** q for q in cycles],
                         "oracle_max_lr": [winners.get(q, math.nan) for q in cycles]})


def _record(offsets: dict[str, list[float]], seed_effect: list[float], cycles=(0, 1)) -> pd.DataFrame:
    """silo at 0.80 + the seed's effect; every other arm the same plus its per-seed offset."""
    rows = []
    for q in cycles:
        for s, b in zip(SEEDS, seed_effect):
            rows.append(_row("silo", s, q, 0.05, 0.80 + b - 0.01 * q))
            for arm, off in offsets.items():
                rows.append(_row(arm, s, q, 0.03, 0.80 + b - 0.01 * q + off[s]))
    return rows_frame(rows)


def test_the_t_interval_is_scipys_on_fixed_rows():
    silo = [0.812, 0.797, 0.825, 0.790, 0.808]
    base = [0.801, 0.780, 0.819, 0.772, 0.806]
    rows = rows_frame([_row("silo", s, 0, 0.05, a) for s, a in zip(SEEDS, silo)]
                      + [_row("lr_rewinding", s, 0, 0.03, a) for s, a in zip(SEEDS, base)])
    table = paired_comparisons(rows, _verdicts([0]), ["silo", "lr_rewinding"])
    assert len(table) == 1
    r = table.iloc[0]
    d = np.array(base) - np.array(silo)
    low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert r["seeds"] == 5 and r["mean_diff"] == pytest.approx(d.mean(), abs=1e-15)
    assert r["t_low"] == pytest.approx(low, abs=1e-12) and r["t_high"] == pytest.approx(high, abs=1e-12)
    # scipy's own paired test gives the same interval
    ci = stats.ttest_rel(base, silo).confidence_interval(0.95)
    assert (r["t_low"], r["t_high"]) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert r["sd_diff"] == pytest.approx(d.std(ddof=1), abs=1e-15)
    assert r["interval"] == "t and bootstrap" and r["last_cycle"]


def test_the_bootstrap_needs_four_seeds_and_is_a_reproducible_percentile_interval():
    d = np.array([-0.031, -0.024, -0.036, -0.029])
    assert all(math.isnan(x) for x in bootstrap_interval(d[:3]))
    low, high = bootstrap_interval(d)
    assert d.min() <= low < d.mean() < high <= d.max()
    assert (low, high) == bootstrap_interval(d.copy())  # fixed RNG: a rebuilt report is identical
    ref = stats.bootstrap((d,), np.mean, n_resamples=10_000, method="percentile",
                          rng=np.random.default_rng(20230)).confidence_interval
    assert (low, high) == (ref.low, ref.high)
    assert bootstrap_interval(np.full(5, 0.01)) == (0.01, 0.01)


def test_a_baseline_three_points_worse_on_every_seed_reads_worse():
    noise = [0.002, -0.003, 0.001, 0.0, -0.001]
    seed_effect = [0.04, -0.05, 0.02, -0.01, 0.0]  # large, and shared within a seed: pairing removes it
    table = paired_comparisons(_record({"lr_rewinding": [-0.03 + n for n in noise]}, seed_effect),
                               _verdicts([0, 1]), ["silo", "lr_rewinding"])
    assert table["reading"].tolist() == [WORSE, WORSE]
    assert table["mean_diff"].tolist() == pytest.approx([-0.03 + np.mean(noise)] * 2, abs=1e-12)
    assert (table["t_high"] < 0).all() and (table["bootstrap_high"] < 0).all()
    # The same differences unpaired would not separate: the seed effect dwarfs 3 points.
    a = 0.8 + np.array(seed_effect)
    assert stats.ttest_ind(a - 0.03 + np.array(noise), a).pvalue > 0.05


def test_within_noise_reads_not_separated_and_a_better_arm_better():
    table = paired_comparisons(
        _record({"lr_warmup": [0.01, -0.012, 0.004, -0.006, 0.002], "cosine": [0.021, 0.018, 0.025, 0.02, 0.019]},
                [0.0] * 5, cycles=(0,)),
        _verdicts([0]), ["silo", "lr_warmup", "cosine"])
    got = dict(zip(table["arm"], table["reading"]))
    assert got == {"lr_warmup": NOT_SEPARATED, "cosine": BETTER}


def test_runs_shared_with_silo_are_not_separated_not_better():
    # cycle 0 and 1 of lr_rewinding are SILO's own runs: differences exactly 0, interval [0, 0]
    rows = _record({"lr_rewinding": [0.0] * 5}, [0.01, 0.0, -0.01, 0.02, 0.0], cycles=(0,))
    r = paired_comparisons(rows, _verdicts([0]), ["silo", "lr_rewinding"]).iloc[0]
    assert (r["t_low"], r["t_high"]) == (0.0, 0.0) and r["reading"] == NOT_SEPARATED
    assert reading(0.0, 0.01) == NOT_SEPARATED and reading(-0.01, 0.0) == NOT_SEPARATED
    assert reading(1e-12, 0.01) == BETTER and reading(-0.01, -1e-12) == WORSE
    assert reading(math.nan, math.nan) == NOT_SEPARATED


def test_seeds_pair_by_seed_and_unpaired_or_failed_seeds_are_left_out():
    rows = _record({"lr_rewinding": [-0.01, -0.011, -0.009, -0.01, -0.01]}, [0.05, -0.05, 0.03, -0.03, 0.0],
                   cycles=(0,))
    # seed 4 of the baseline failed, seed 3 of SILO is missing: 3 seeds pair up
    rows.loc[(rows["arm"] == "lr_rewinding") & (rows["seed"] == 4), "status"] = "failed"
    rows = rows[~((rows["arm"] == "silo") & (rows["seed"] == 3))]
    r = paired_comparisons(rows, _verdicts([0]), ["silo", "lr_rewinding"]).iloc[0]
    assert r["seeds"] == 3 and r["mean_diff"] == pytest.approx(-0.01, abs=1e-12)
    assert r["reading"] == WORSE and r["interval"] == "t"  # 3 seeds: no bootstrap
    assert math.isnan(r["bootstrap_low"])


def test_the_oracle_is_compared_at_its_winner_and_one_seed_has_no_interval():
    rows = rows_frame([_row("silo", 0, 0, 0.05, 0.80), _row("oracle", 0, 0, 0.01, 0.70),
                       _row("oracle", 0, 0, 0.1, 0.83)])
    t = paired_comparisons(rows, _verdicts([0], {0: 0.1}), ["oracle", "silo"])
    r = t.iloc[0]
    assert (r["arm"], r["reference"]) == ("silo", "oracle")
    assert r["mean_diff"] == pytest.approx(-0.03) and r["seeds"] == 1
    assert math.isnan(r["t_low"]) and r["reading"] == NOT_SEPARATED and r["interval"] == "none (one seed)"
    assert all(map(math.isnan, t_interval(np.array([0.1]))))


def test_pairs_cover_every_arm_against_silo_and_the_oracle():
    assert pairs(["oracle", "silo", "lr_rewinding", "lr_warmup"]) == [
        ("lr_rewinding", "silo"), ("lr_warmup", "silo"),
        ("silo", "oracle"), ("lr_rewinding", "oracle"), ("lr_warmup", "oracle")]
    assert pairs(["oracle", "lr_rewinding"]) == [("lr_rewinding", "oracle")]
    assert pairs(["silo"]) == []


def test_the_analysis_summary_carries_the_last_cycle_of_each_pair():
    from oracle.store.record import study_attrs
    from tests._fake_record import fake_rows, fake_study

    study = fake_study()
    a = analysis_of(fake_rows(study), study_attrs(study))
    by = {(p["arm"], p["reference"]): p for p in a.summary["comparisons"]["pairs"]}
    assert set(by) == {("lr_rewinding", "silo"), ("silo", "oracle"), ("lr_rewinding", "oracle")}
    silo_oracle = by[("silo", "oracle")]["last"]
    assert silo_oracle["cycle"] == 2
    assert silo_oracle["mean_diff"] == pytest.approx(a.summary["gap"]["final_gap_test_acc"], abs=1e-12)
    # cycle 0 is shared (same runs): not separated; the fake's SILO is 0.8 points above lr_rewinding after
    assert by[("lr_rewinding", "silo")]["cycles"] == {"better": 0, "worse": 2, "not separated": 1}
    assert a.comparisons.loc[a.comparisons["last_cycle"], "cycle"].tolist() == [2, 2, 2]
