"""The Oracle's interval and SILO's verdict (docs/design.md) on hand-built tables of runs."""

from __future__ import annotations

import math

import pytest

from oracle.report.build import analysis_of
from oracle.report.words import verdict_text

GRID = [0.01, 0.03, 0.1, 0.3]


def run(arm, seed, cycle, max_lr, val, *, status="ok", test=None, run_id=None, wall_s=10.0,
        sparsity=None, chosen=False, parent=None):
    return {
        "arm": arm, "seed": seed, "cycle": cycle, "max_lr": max_lr,
        "sparsity": (1 - 0.8 ** cycle) if sparsity is None else sparsity,
        "val_acc": val, "test_acc": (val - 0.01) if test is None else test, "train_loss": 0.5,
        "status": status, "run_id": run_id or f"{arm}-{seed}-{cycle}-{max_lr}",
        "parent_run_id": parent, "wall_s": wall_s, "steps": 10, "images_per_s": 100.0,
        "reused": False, "chosen": chosen,
    }


def oracle_round(cycle, accs: dict[float, list[float]], statuses: dict[tuple[float, int], str] | None = None,
                 *, parent: float | None = None):
    """Oracle runs of one cycle: accs[max_lr] = val accuracy per seed (seed = position).

    `parent`: the max_lr of the previous cycle's winner, whose run each seed continues from."""
    statuses = statuses or {}
    return [run("oracle", s, cycle, v, a, status=statuses.get((v, s), "ok"),
                parent=None if parent is None else f"oracle-{s}-{cycle - 1}-{parent}")
            for v, per_seed in accs.items() for s, a in enumerate(per_seed)]


def oracle_rounds(landscapes: list[dict], winners: list[float]) -> list[dict]:
    """Several cycles on the Oracle's own lineage: cycle q continues from winners[q-1]."""
    return [r for q, acc in enumerate(landscapes)
            for r in oracle_round(q, acc, parent=winners[q - 1] if q else None)]


def attrs(*, seeds=(0, 1), cycles=1, silo=None, arms=("oracle", "silo"), tolerance=0.005, noise_k=None,
          grid=GRID, refine=0):
    return {"study": "hand", "arms": list(arms), "cycles": cycles, "seeds": list(seeds), "grid": grid,
            "tolerance": tolerance, "noise_k": noise_k, "silo_max_lr": silo, "refine": refine}


def silo_runs(cycle, max_lr, accs):
    """SILO's runs of one cycle, each seed continuing its own run of cycle - 1."""
    return [run("silo", s, cycle, max_lr, a, run_id=f"silo-{s}-{cycle}",
                parent=f"silo-{s}-{cycle - 1}" if cycle else None) for s, a in enumerate(accs)]


def verdict(result, cycle=0) -> dict:
    return result.verdicts.set_index("cycle").loc[cycle].to_dict()


def test_a_tie_goes_to_the_smaller_max_lr():
    rows = oracle_round(0, {0.01: [0.80, 0.80], 0.03: [0.85, 0.85], 0.1: [0.90, 0.90], 0.3: [0.90, 0.90]})
    v = verdict(analysis_of(rows + silo_runs(0, 0.3, [0.9, 0.9]), attrs(silo=[0.3])))
    assert v["oracle_max_lr"] == 0.1
    assert (v["interval_low"], v["interval_high"]) == (0.1, 0.3)
    assert v["judged_low"] == pytest.approx(math.sqrt(0.03 * 0.1)) and v["judged_high"] == 0.3
    assert (v["open_low"], v["open_high"]) == (False, True)
    assert v["silo_in_interval"] is True and v["silo_position"] == "inside"
    assert (v["p_inside"], v["verdict"]) == (1.0, "inside")  # no seed noise at all


def test_one_seed_has_no_standard_error_and_delta_is_the_tolerance():
    rows = oracle_round(0, {0.01: [0.80], 0.03: [0.896], 0.1: [0.900], 0.3: [0.8949]})
    v = verdict(analysis_of(rows + silo_runs(0, 0.3, [0.89]), attrs(seeds=[0], silo=[0.3])))
    assert v["oracle_val_se"] == 0.0
    assert (v["delta"], v["seeds"], v["seeds_to_decide"]) == (0.005, 1, None)
    assert (v["oracle_max_lr"], v["interval_low"], v["interval_high"]) == (0.1, 0.03, 0.1)
    assert v["judged_high"] == pytest.approx(math.sqrt(0.1 * 0.3))
    assert math.isnan(v["oracle_val_std"])  # one seed: no spread
    assert v["silo_in_interval"] is False and v["silo_position"] == "above"
    assert (v["sd"], v["verdict"]) == (0.0, "outside") and "one seed" in v["note"]


def test_every_grid_value_equal_makes_the_whole_grid_the_interval():
    rows = oracle_round(0, {v: [0.85, 0.85] for v in GRID})
    v = verdict(analysis_of(rows + silo_runs(0, 0.02, [0.8, 0.8]), attrs(silo=[0.02])))
    assert v["oracle_max_lr"] == 0.01  # the tie goes to the smallest
    assert (v["interval_low"], v["interval_high"]) == (0.01, 0.3)
    assert v["interval_values"] == 4
    assert (v["open_low"], v["open_high"]) == (True, True)
    assert v["silo_in_interval"] is True
    assert "widen it" in v["note"]


def test_silo_exactly_on_a_judged_end_is_inside_and_just_beyond_is_not():
    landscape = {0.01: [0.80, 0.80], 0.03: [0.897, 0.897], 0.1: [0.90, 0.90], 0.3: [0.70, 0.70]}
    rows = oracle_rounds([landscape] * 4, [0.1] * 4)
    low, high = math.sqrt(0.01 * 0.03), math.sqrt(0.1 * 0.3)  # V = {0.03, 0.1}, judged halfway out
    plan = [low, high, high * (1 + 1e-9), low * (1 - 1e-9)]
    rows += [r for q, v in enumerate(plan) for r in silo_runs(q, v, [0.88, 0.88])]
    result = analysis_of(rows, attrs(cycles=4, silo=plan))
    got = result.verdicts[["cycle", "interval_low", "interval_high", "silo_in_interval", "silo_position", "verdict"]]
    assert got.to_dict("records") == [
        {"cycle": 0, "interval_low": 0.03, "interval_high": 0.1, "silo_in_interval": True, "silo_position": "inside",
         "verdict": "inside"},
        {"cycle": 1, "interval_low": 0.03, "interval_high": 0.1, "silo_in_interval": True, "silo_position": "inside",
         "verdict": "inside"},
        {"cycle": 2, "interval_low": 0.03, "interval_high": 0.1, "silo_in_interval": False, "silo_position": "above",
         "verdict": "outside"},
        {"cycle": 3, "interval_low": 0.03, "interval_high": 0.1, "silo_in_interval": False, "silo_position": "below",
         "verdict": "outside"},
    ]
    v = result.summary["verdict"]
    assert (v["inside"], v["outside"], v["uncertain"], v["judged"], v["decided"]) == (2, 2, 0, 4, 4)
    assert v["pruned_cycles"]["judged"] == 3 and v["pruned_cycles"]["inside"] == 1
    assert v["pruned_cycles"]["fraction_inside"] == pytest.approx(1 / 3)


def test_diverged_and_failed_runs_never_win_nor_enter_the_interval():
    # 0.3: seed 0 is the best run of all, seed 1 diverged (chance accuracy): out entirely.
    # 0.01: both seeds failed (no accuracy). 0.1 wins; 0.03 is within the tolerance.
    rows = oracle_round(
        0, {0.01: [math.nan, math.nan], 0.03: [0.898, 0.898], 0.1: [0.90, 0.90], 0.3: [0.99, 0.10]},
        statuses={(0.3, 1): "diverged", (0.01, 0): "failed", (0.01, 1): "failed"},
    )
    result = analysis_of(rows + silo_runs(0, 0.3, [0.85, 0.85]), attrs(silo=[0.3]))
    v = verdict(result)
    assert v["oracle_max_lr"] == 0.1
    assert (v["interval_low"], v["interval_high"]) == (0.03, 0.1)
    # The failed 0.01 and the diverged 0.3 are outside V but still grid values: both ends close.
    assert (v["open_low"], v["open_high"]) == (False, False)
    assert v["judged_high"] == pytest.approx(math.sqrt(0.1 * 0.3))
    assert v["silo_in_interval"] is False and v["silo_position"] == "above"
    assert v["oracle_val_acc"] == pytest.approx(0.90)  # the winner's runs, not the diverged one
    assert (v["grid_values_ok"], v["grid_values_run"]) == (2, 4)
    states = result.landscape.set_index("max_lr")["state"].to_dict()
    assert states == {0.01: "failed", 0.03: "ok", 0.1: "ok", 0.3: "diverged"}
    assert any("1 diverged, 2 failed" in m for m in result.messages)
    cost = result.cost.set_index("arm").loc["oracle"]
    assert (cost["runs"], cost["ok"], cost["diverged"], cost["failed"]) == (8, 5, 1, 2)


def test_a_value_missing_a_seed_is_out_of_the_running():
    rows = oracle_round(0, {0.03: [0.89, 0.89], 0.1: [0.90, 0.90]})
    rows.append(run("oracle", 0, 0, 0.3, 0.95))  # seed 1 never reported at 0.3
    v = verdict(analysis_of(rows, attrs(arms=["oracle"])))
    assert (v["oracle_max_lr"], v["interval_low"], v["interval_high"]) == (0.1, 0.1, 0.1)


def test_the_pooled_seed_noise_is_measured_but_only_delta_sets_the_interval():
    # G = 4: the noise is pooled over the H = 3 best values 0.03, 0.1, 0.3 (0.01 is left out).
    # Residuals of the additive fit: +-1/300 at 0.03 and 0.3, +-2/300 at 0.1; sum e^2 = 12/90000
    # over (3-1)(2-1) = 2 degrees of freedom: sigma^2 = 1/15000, sd = sigma * sqrt(2/2).
    rows = oracle_round(0, {0.01: [0.70, 0.70], 0.03: [0.885, 0.885], 0.1: [0.89, 0.91], 0.3: [0.80, 0.80]})
    narrow = verdict(analysis_of(rows, attrs(tolerance=0.005)))
    assert narrow["oracle_val_se"] == pytest.approx(0.01)
    assert narrow["sd"] == pytest.approx(math.sqrt(1 / 15000))  # 0.82 points, more than delta...
    assert narrow["delta"] == 0.005
    assert (narrow["interval_low"], narrow["interval_high"]) == (0.1, 0.1)  # ...which alone sets V
    wide = verdict(analysis_of(rows, attrs(tolerance=0.015)))  # 0.03 is 1.5 points below 0.1
    assert (wide["delta"], wide["interval_low"], wide["interval_high"]) == (0.015, 0.03, 0.1)
    # a study written for the retired rule (noise_k): the same verdicts, and the report says why
    old = analysis_of(rows, attrs(tolerance=0.005, noise_k=2.0))
    assert old.verdicts.equals(analysis_of(rows, attrs(tolerance=0.005)).verdicts)
    assert old.messages[0].startswith("analysis.noise_k (2) is no longer used: the optimal interval is now "
                                      "every max_lr within analysis.tolerance = 0.005")


def test_oracle_accuracy_is_its_chosen_runs_and_the_gap_is_silo_minus_oracle():
    rows = oracle_round(0, {0.03: [0.88, 0.90], 0.1: [0.91, 0.93]})
    rows = [dict(r, test_acc=r["val_acc"] - 0.02) for r in rows]
    rows += [run("silo", 0, 0, 0.03, 0.88, test=0.85), run("silo", 1, 0, 0.03, 0.90, test=0.87)]
    result = analysis_of(rows, attrs(silo=[0.03]))
    v = verdict(result)
    assert v["oracle_val_acc"] == pytest.approx(0.92) and v["oracle_test_acc"] == pytest.approx(0.90)
    assert v["oracle_test_std"] == pytest.approx(math.sqrt(2) * 0.01)
    assert v["silo_test_acc"] == pytest.approx(0.86)
    assert v["gap_test_acc"] == pytest.approx(-0.04) and v["gap_val_acc"] == pytest.approx(-0.03)
    assert result.summary["gap"]["mean_gap_test_acc"] == pytest.approx(-0.04)


def test_a_shared_run_counts_for_each_arm_that_needed_it_and_once_in_the_total():
    rows = [
        run("oracle", 0, 0, 0.03, 0.90, run_id="dense", wall_s=100.0),
        run("oracle", 0, 0, 0.1, 0.91, run_id="o-0.1", wall_s=100.0),
        run("oracle", 0, 1, 0.1, 0.89, run_id="o-1", wall_s=80.0, parent="o-0.1"),
        run("silo", 0, 0, 0.03, 0.90, run_id="dense", wall_s=100.0),
        run("silo", 0, 1, 0.05, 0.88, run_id="s-1", wall_s=60.0, parent="dense"),
    ]
    result = analysis_of(rows, attrs(seeds=[0], cycles=2, silo=[0.03, 0.05]))
    cost = result.cost.set_index("arm")
    assert (cost.loc["oracle", "runs"], cost.loc["oracle", "run_seconds"]) == (3, 280.0)
    assert (cost.loc["silo", "runs"], cost.loc["silo", "run_seconds"]) == (2, 160.0)
    assert (cost.loc["study total", "runs"], cost.loc["study total", "run_seconds"]) == (4, 340.0)
    assert result.summary["cost_ratio_oracle_to_silo"] == {"run_seconds": 1.75, "runs": 1.5}


def test_without_a_silo_arm_the_verdict_is_empty_and_says_why():
    rows = oracle_round(0, {0.03: [0.89, 0.89], 0.1: [0.90, 0.90]})
    result = analysis_of(rows, attrs(arms=["oracle"]))
    v = verdict(result)
    assert v["oracle_max_lr"] == 0.1
    assert math.isnan(v["silo_max_lr"]) and v["silo_in_interval"] is None
    assert result.summary["verdict"]["fraction_inside"] is None
    assert verdict_text(result.summary).startswith("This study has no silo arm")


def test_without_an_oracle_arm_there_is_no_interval_and_it_says_why():
    rows = silo_runs(0, 0.03, [0.88, 0.90]) + [run("lr_rewinding", s, 0, 0.03, 0.87) for s in (0, 1)]
    result = analysis_of(rows, attrs(arms=["silo", "lr_rewinding"], silo=[0.03]))
    v = verdict(result)
    assert math.isnan(v["interval_low"]) and v["silo_in_interval"] is None
    assert v["silo_max_lr"] == 0.03 and v["silo_test_acc"] == pytest.approx(0.88)
    assert result.landscape.empty
    assert "no oracle arm" in verdict_text(result.summary)
    assert result.summary["cost_ratio_oracle_to_silo"] == {"run_seconds": None, "runs": None}


def test_a_cycle_the_oracle_did_not_reach_has_no_verdict():
    rows = oracle_round(0, {0.03: [0.89, 0.89], 0.1: [0.90, 0.90]})
    rows += silo_runs(0, 0.03, [0.88, 0.88]) + silo_runs(1, 0.05, [0.86, 0.86])
    result = analysis_of(rows, attrs(cycles=2, silo=[0.03, 0.05]))
    v1 = verdict(result, 1)
    assert math.isnan(v1["oracle_max_lr"]) and v1["silo_in_interval"] is None
    assert v1["silo_max_lr"] == 0.05 and "not yet judged" in v1["note"]  # in progress, not a failure
    assert result.summary["progress"] == {"runs_done": 8, "runs_planned": 20, "complete": False,
                                          "judged_cycles": [0], "oracle_stopped": None}
    assert result.summary["verdict"]["judged"] == 1


# -- the study as it is now: stale rows never enter a figure --------------------------------

CLEAR = {0.01: [0.70, 0.70], 0.03: [0.88, 0.88], 0.1: [0.90, 0.90], 0.3: [0.60, 0.60]}


def test_rows_of_other_seeds_are_left_out():
    rows = oracle_round(0, CLEAR)
    rows += [run("oracle", 7, 0, v, 0.99 if v == 0.3 else 0.1) for v in GRID]  # an earlier seed 7
    rows += silo_runs(0, 0.1, [0.88, 0.88]) + [run("silo", 7, 0, 0.1, 0.2)]
    result = analysis_of(rows, attrs(silo=[0.1]))
    v = verdict(result)
    assert v["oracle_max_lr"] == 0.1 and v["silo_val_acc"] == pytest.approx(0.88)
    assert set(result.rows["seed"]) == {0, 1}
    assert any("5 run(s)" in m and "earlier version" in m for m in result.messages)


def test_rows_of_another_grid_are_left_out():
    rows = oracle_round(0, CLEAR)
    rows += oracle_round(0, {1.0: [0.99, 0.99], 0.05: [0.95, 0.95]})  # an earlier, other grid
    result = analysis_of(rows, attrs(arms=["oracle"]))
    v = verdict(result)
    assert (v["oracle_max_lr"], v["grid_values_run"], v["interval_high"]) == (0.1, 4, 0.1)
    assert sorted(result.landscape["max_lr"]) == GRID
    assert result.cost.set_index("arm").loc["oracle", "runs"] == 8


def test_rows_of_another_silo_setting_are_left_out():
    rows = oracle_round(0, CLEAR) + silo_runs(0, 0.1, [0.88, 0.88])
    rows += silo_runs(0, 0.05, [0.5, 0.5])  # an earlier SILO offset
    result = analysis_of(rows, attrs(silo=[0.1]))
    silo = result.arms.set_index(["arm", "cycle"]).loc[("silo", 0)]
    assert (silo["max_lr"], silo["runs"]) == (0.1, 2)
    assert verdict(result)["silo_val_acc"] == pytest.approx(0.88)


def test_oracle_rows_of_another_lineage_are_left_out():
    # Cycle 1 continues from cycle 0's winner 0.1; rows whose parent is the 0.03 run are an
    # earlier invocation's (say, with other seeds' data at cycle 0) and must not be judged.
    rows = oracle_rounds([CLEAR, CLEAR], [0.1])
    rows += oracle_round(1, {v: [0.99 if v == 0.01 else 0.2] * 2 for v in GRID}, parent=0.03)
    result = analysis_of(rows, attrs(arms=["oracle"], cycles=2))
    v1 = verdict(result, 1)
    assert (v1["oracle_max_lr"], v1["grid_values_run"]) == (0.1, 4)
    assert result.landscape[result.landscape["cycle"] == 1]["mean_val_acc"].max() == pytest.approx(0.90)


def test_refinement_values_of_this_lineage_enter_and_others_do_not():
    rows = oracle_round(0, CLEAR)
    mids = [0.0547723, 0.173205]  # the midpoints next to V = {0.1}
    rows += [dict(r, refined=True) for r in oracle_round(0, {mids[0]: [0.93, 0.93], mids[1]: [0.85, 0.85]})]
    rows += [dict(r, refined=True) for r in oracle_round(0, {0.02: [0.99, 0.99]})]  # not a midpoint of V
    result = analysis_of(rows, attrs(arms=["oracle"], refine=1))
    v = verdict(result)
    assert v["oracle_max_lr"] == mids[0] and v["refined_values"] == 2
    assert (v["interval_low"], v["interval_high"]) == (mids[0], mids[0])
    assert v["judged_low"] == pytest.approx(math.sqrt(0.03 * mids[0]))
    assert 0.02 not in set(result.landscape["max_lr"])
    unrefined = verdict(analysis_of(rows, attrs(arms=["oracle"], refine=0)))
    assert unrefined["oracle_max_lr"] == 0.1 and unrefined["refined_values"] == 0


def test_a_noisy_round_leaves_the_verdict_uncertain_and_the_summary_says_why():
    # Three seeds; 0.03 is 2 points below the winner 0.1, delta 2.2 points away, so V holds it
    # in some draws and not in others, and SILO's 0.02 is inside only when it does.
    acc = {0.01: [0.70, 0.71, 0.69], 0.03: [0.89, 0.87, 0.88], 0.1: [0.89, 0.91, 0.90], 0.3: [0.60, 0.62, 0.61]}
    rows = oracle_round(0, acc) + [run("silo", s, 0, 0.02, 0.8) for s in range(3)]
    result = analysis_of(rows, attrs(seeds=[0, 1, 2], silo=[0.02], tolerance=0.022))
    v = verdict(result)
    assert 0.2 < v["p_inside"] < 0.8 and v["verdict"] == "uncertain"
    assert v["silo_in_interval"] and v["seeds_to_decide"] > 3  # the point estimate: inside
    s = result.summary
    assert (s["verdict"]["uncertain"], s["verdict"]["decided"]) == (1, 0)
    assert s["verdict"]["uncertain_cycles"][0]["seeds_to_decide"] == v["seeds_to_decide"]
    assert s["verdict"]["question"] == ("is SILO's max_lr within 2.2 points of the best max_lr's expected "
                                        "validation accuracy?")
    text = verdict_text(s)
    more = v["seeds_to_decide"] - 3
    assert text.startswith(f"The question, per cycle: {s['verdict']['question']} (delta = analysis.tolerance; "
                           "3 seed(s)).")
    assert "stayed uncertain" in text and f"cycle 0: about {more} more seed(s)" in text


def test_verdicts_csv_has_the_new_columns(tmp_path):
    import csv

    from oracle.report.build import write_tables

    rows = oracle_round(0, CLEAR) + silo_runs(0, 0.1, [0.88, 0.88])
    write_tables(analysis_of(rows, attrs(silo=[0.1])), tmp_path)
    with (tmp_path / "verdicts.csv").open() as f:
        row = next(csv.DictReader(f))
    for col in ("judged_low", "judged_high", "open_low", "open_high", "sd", "delta", "seeds", "seeds_to_decide",
                "p_inside", "verdict", "interval_low", "interval_high"):
        assert col in row
    assert "tol" not in row and (row["delta"], row["seeds"], row["seeds_to_decide"]) == ("0.005", "2", "")
    assert (row["verdict"], row["open_low"], row["p_inside"]) == ("inside", "False", "1.0")


def test_the_analysis_asks_nothing_of_the_machine_and_the_report_adds_what_built_it(monkeypatch):
    import oracle.store.provenance
    from oracle.report.build import analyse_record
    from oracle.store.record import Record
    from oracle.store.rows import rows_frame

    rows = oracle_round(0, CLEAR) + silo_runs(0, 0.1, [0.88, 0.88])
    a = attrs(silo=[0.1]) | {"recorded_with": {"python": "3.x"}}

    def no_environment():
        raise AssertionError("the analysis must not ask the machine what it runs")

    monkeypatch.setattr(oracle.store.provenance, "environment", no_environment)
    assert analysis_of(rows, a).summary["versions"] == {"recorded_with": {"python": "3.x"}}
    monkeypatch.undo()
    summary = analyse_record(Record("hand", "sqlite:///nowhere.db", a, rows_frame(rows), [], 0)).summary
    assert list(summary["versions"]) == ["recorded_with", "report_built_with"]
    assert "git commit" in summary["versions"]["report_built_with"]
    assert list(summary)[-3:] == ["versions", "text", "progress"]


def test_missing_is_none_or_nan_and_nothing_else():
    import numpy as np
    import pandas as pd

    from oracle.store.plain import missing

    assert all(missing(x) for x in (None, math.nan, np.nan, np.float64("nan"), pd.NA, pd.NaT))
    assert not any(missing(x) for x in (0, 0.0, False, "", "inside", np.float64(0.1)))


# -- a changed study: pending values, fewer cycles, a stopped Oracle, chain lineage (issue 19) --

PEAKED = {0.01: [0.70, 0.70], 0.03: [0.80, 0.80], 0.1: [0.90, 0.90], 0.3: [0.60, 0.60]}


def test_a_value_added_to_the_grid_and_not_yet_run_is_pending_never_a_neighbour():
    # V = {0.1}; 0.05 was added to the grid and has no runs yet. Its neighbour below is still
    # 0.03 (judged low sqrt(0.03 * 0.1) = 0.0548), so SILO at 0.06 is inside, not outside.
    rows = oracle_round(0, PEAKED) + silo_runs(0, 0.06, [0.85, 0.85])
    result = analysis_of(rows, attrs(silo=[0.06], grid=[0.01, 0.03, 0.05, 0.1, 0.3]))
    v = verdict(result)
    assert v["judged_low"] == pytest.approx(math.sqrt(0.03 * 0.1))
    assert (v["silo_in_interval"], v["verdict"]) == (True, "inside")
    assert "provisional: max_lr 0.05 pending" in v["note"]
    states = result.landscape.set_index("max_lr")["state"].to_dict()
    assert states == {0.01: "ok", 0.03: "ok", 0.05: "pending", 0.1: "ok", 0.3: "ok"}
    assert result.summary["progress"]["runs_planned"] == 5 * 2 + 2
    assert result.summary["progress"]["complete"] is False
    # a value one seed has run is pending too: its other seed may still come
    rows += [run("oracle", 0, 0, 0.05, 0.99)]
    v = verdict(analysis_of(rows, attrs(silo=[0.06], grid=[0.01, 0.03, 0.05, 0.1, 0.3])))
    assert v["judged_low"] == pytest.approx(math.sqrt(0.03 * 0.1)) and v["oracle_max_lr"] == 0.1


def test_refinements_still_to_run_are_planned_and_pending():
    rows = oracle_round(0, PEAKED) + silo_runs(0, 0.1, [0.88, 0.88])
    mids = [0.0547723, 0.173205]  # the midpoints next to V = {0.1}
    result = analysis_of(rows, attrs(silo=[0.1], refine=1))
    assert result.summary["progress"] == {"runs_done": 10, "runs_planned": 14, "complete": False,
                                          "judged_cycles": [0], "oracle_stopped": None}
    pending = result.landscape[result.landscape["state"] == "pending"]
    assert pending["max_lr"].tolist() == mids and pending["refined"].all()
    rows += [dict(r, refined=True) for r in oracle_round(0, {mids[0]: [0.85, 0.85], mids[1]: [0.85, 0.85]})]
    done = analysis_of(rows, attrs(silo=[0.1], refine=1))
    assert done.summary["progress"]["complete"] and (done.summary["progress"]["runs_done"] == 14)
    assert "pending" not in set(done.landscape["state"])


def test_cycles_beyond_the_studys_cycles_leave_every_table():
    rows = oracle_rounds([PEAKED] * 3, [0.1, 0.1])
    rows += [r for q in range(3) for r in silo_runs(q, 0.1, [0.88, 0.88])]
    result = analysis_of(rows, attrs(cycles=2, silo=[0.1, 0.1]))  # the study now has 2 cycles, not 3
    assert result.verdicts["cycle"].tolist() == [0, 1]
    assert set(result.landscape["cycle"]) == {0, 1} and set(result.arms["cycle"]) == {0, 1}
    cost = result.cost.set_index("arm")
    assert (cost.loc["oracle", "runs"], cost.loc["silo", "runs"]) == (16, 4)
    assert result.summary["cost_ratio_oracle_to_silo"]["runs"] == 4.0
    assert result.summary["progress"]["complete"] is True
    assert any("10 run(s)" in m and "earlier version" in m for m in result.messages)


def test_an_oracle_that_stopped_says_where_and_why_and_is_not_in_progress():
    from oracle.report.render import progress_banner

    # Cycle 1: every value diverged for seed 1, so no value ran ok for every seed.
    diverged = {(v, 1): "diverged" for v in GRID}
    rows = oracle_round(0, PEAKED) + oracle_round(1, PEAKED, diverged, parent=0.1)
    rows += [r for q in range(3) for r in silo_runs(q, 0.1, [0.88, 0.88])]
    result = analysis_of(rows, attrs(cycles=3, silo=[0.1] * 3))
    p = result.summary["progress"]
    assert p["complete"] is True and p["oracle_stopped"] == {"cycle": 1, "why": "no grid value ran ok for every seed"}
    assert p["runs_planned"] == 8 + 8 + 6  # nothing planned for the Oracle after it stopped
    notes = result.verdicts.set_index("cycle")["note"]
    assert notes[1].startswith("the Oracle stopped here: no grid value ran ok for every seed")
    assert notes[2].startswith("the Oracle did not reach this cycle: it stopped at cycle 1")
    assert "in progress" not in " ".join(notes) and progress_banner(result) is None
    assert any("The Oracle stopped at cycle 1" in m for m in result.messages)
    # while SILO still runs, the study is in progress, and the banner says the Oracle stopped
    running = analysis_of([r for r in rows if not (r["arm"] == "silo" and r["cycle"] == 2)],
                      attrs(cycles=3, silo=[0.1] * 3))
    banner = progress_banner(running)
    assert "in progress: 20 of 22 runs" in banner and "the Oracle stopped at cycle 1" in banner


def test_chain_rows_are_current_only_on_their_own_lineage():
    # The task changed: the rerun rewrote SILO's cycle 0 (new run ids) and was interrupted;
    # cycles 1-2 still hold the old task's runs, whose parents are the old cycle-0 runs.
    rows = oracle_rounds([PEAKED] * 3, [0.1, 0.1])
    old = [r for q in range(3) for r in silo_runs(q, 0.1, [0.5, 0.5])]
    new = [dict(r, run_id=f"new-{r['seed']}", val_acc=0.88) for r in silo_runs(0, 0.1, [0.88, 0.88])]
    rows += new + [r for r in old if r["cycle"] > 0]
    result = analysis_of(rows, attrs(cycles=3, silo=[0.1] * 3))
    silo = result.arms[result.arms["arm"] == "silo"]
    assert silo["cycle"].tolist() == [0] and silo["val_acc_mean"].tolist() == [pytest.approx(0.88)]
    assert result.verdicts.set_index("cycle")["note"][1] == "no SILO runs recorded"
    assert result.summary["progress"]["complete"] is False
    assert any("4 run(s)" in m and "earlier version" in m for m in result.messages)
    # a chain that failed at cycle 1 keeps its failed rows for the rest (no parent: never run)
    failed = [dict(r, status="failed", val_acc=math.nan, parent=None) for r in silo_runs(2, 0.1, [0, 0])]
    rows = oracle_rounds([PEAKED] * 3, [0.1, 0.1]) + silo_runs(0, 0.1, [0.88, 0.88])
    rows += [dict(r, status="failed", val_acc=math.nan) for r in silo_runs(1, 0.1, [0, 0])]
    rows += [dict(r, parent_run_id=None, run_id=None) for r in failed]
    failing = analysis_of(rows, attrs(cycles=3, silo=[0.1] * 3))
    assert failing.arms.set_index(["arm", "cycle"]).loc[("silo", 2), "failed"] == 2


def test_cycle_0_runs_of_the_task_before_a_change_are_not_the_study_now():
    # The task changed (epochs 1 -> 2) and the rerun into the same folder was interrupted
    # before it recorded any cycle 0: the old task's cycle-0 runs have no parent, so only
    # their run ids (the task's hash, recorded as task_identity) tell them from the new ones.
    from oracle.store.identity import RunKey
    from silo.config import DataConfig, TaskConfig

    old, new = (TaskConfig(data=DataConfig(name="mnist1d"), model="mnist1d_cnn", epochs=e) for e in (1.0, 2.0))

    def of(task, rows):
        return [dict(r, run_id=RunKey(task, seed=r["seed"], cycle=0, max_lr=r["max_lr"], parent_run_id=None).run_id)
                if r["cycle"] == 0 else r for r in rows]

    rows = of(old, oracle_round(0, PEAKED) + silo_runs(0, 0.1, [0.9, 0.9]))
    now = attrs(silo=[0.1]) | {"task_identity": {"oracle": new.identity(), "silo": new.identity()}}
    stale = analysis_of(rows, now)
    assert stale.verdicts.set_index("cycle")["verdict"][0] != "inside"
    assert stale.landscape.empty and stale.arms[stale.arms["arm"] == "silo"].empty
    assert any(f"{len(rows)} run(s)" in m and "earlier version" in m for m in stale.messages), stale.messages
    # The same rows of the task as it is now are the study: judged as before.
    fresh = analysis_of(of(new, rows), now)
    assert verdict(fresh)["verdict"] == "inside" and len(fresh.landscape) == len(PEAKED)
    # A record from before task_identity was recorded keeps them (nothing to tell them by).
    assert verdict(analysis_of(rows, attrs(silo=[0.1])))["verdict"] == "inside"
