"""The Oracle's interval and SILO's verdict (DESIGN.md) on hand-built tables of runs."""

from __future__ import annotations

import math

import pytest

from oracle.analysis import analyse

GRID = [0.01, 0.03, 0.1, 0.3]


def run(arm, seed, cycle, max_lr, val, *, status="ok", test=None, run_id=None, wall_s=10.0,
        sparsity=None, chosen=False):
    return {
        "arm": arm, "seed": seed, "cycle": cycle, "max_lr": max_lr,
        "sparsity": (1 - 0.8 ** cycle) if sparsity is None else sparsity,
        "val_acc": val, "test_acc": (val - 0.01) if test is None else test, "train_loss": 0.5,
        "status": status, "run_id": run_id or f"{arm}-{seed}-{cycle}-{max_lr}",
        "parent_run_id": None, "wall_s": wall_s, "steps": 10, "images_per_s": 100.0,
        "reused": False, "chosen": chosen,
    }


def oracle_round(cycle, accs: dict[float, list[float]], statuses: dict[tuple[float, int], str] | None = None):
    """Oracle runs of one cycle: accs[max_lr] = val accuracy per seed (seed = position)."""
    statuses = statuses or {}
    return [run("oracle", s, cycle, v, a, status=statuses.get((v, s), "ok"))
            for v, per_seed in accs.items() for s, a in enumerate(per_seed)]


def attrs(*, seeds=(0, 1), cycles=1, silo=None, arms=("oracle", "silo"), tolerance=0.005, noise_k=2.0):
    return {"study": "hand", "arms": list(arms), "cycles": cycles, "seeds": list(seeds), "grid": GRID,
            "tolerance": tolerance, "noise_k": noise_k, "silo_max_lr": silo}


def silo_runs(cycle, max_lr, accs):
    return [run("silo", s, cycle, max_lr, a) for s, a in enumerate(accs)]


def verdict(result, cycle=0) -> dict:
    return result.verdicts.set_index("cycle").loc[cycle].to_dict()


def test_a_tie_goes_to_the_smaller_max_lr():
    rows = oracle_round(0, {0.01: [0.80, 0.80], 0.03: [0.85, 0.85], 0.1: [0.90, 0.90], 0.3: [0.90, 0.90]})
    v = verdict(analyse(rows + silo_runs(0, 0.3, [0.9, 0.9]), attrs(silo=[0.3])))
    assert v["oracle_max_lr"] == 0.1
    assert (v["interval_low"], v["interval_high"]) == (0.1, 0.3)
    assert v["silo_in_interval"] is True and v["silo_position"] == "inside"


def test_one_seed_has_no_standard_error_and_tol_is_the_tolerance():
    rows = oracle_round(0, {0.01: [0.80], 0.03: [0.896], 0.1: [0.900], 0.3: [0.8949]})
    v = verdict(analyse(rows + silo_runs(0, 0.3, [0.89]), attrs(seeds=[0], silo=[0.3])))
    assert v["oracle_val_se"] == 0.0
    assert v["tol"] == 0.005
    assert (v["oracle_max_lr"], v["interval_low"], v["interval_high"]) == (0.1, 0.03, 0.1)
    assert math.isnan(v["oracle_val_std"])  # one seed: no spread
    assert v["silo_in_interval"] is False and v["silo_position"] == "above"


def test_every_grid_value_equal_makes_the_whole_grid_the_interval():
    rows = oracle_round(0, {v: [0.85, 0.85] for v in GRID})
    v = verdict(analyse(rows + silo_runs(0, 0.02, [0.8, 0.8]), attrs(silo=[0.02])))
    assert v["oracle_max_lr"] == 0.01  # the tie goes to the smallest
    assert (v["interval_low"], v["interval_high"]) == (0.01, 0.3)
    assert v["interval_values"] == 4
    assert v["silo_in_interval"] is True


def test_silo_exactly_on_a_boundary_is_inside_and_just_beyond_is_not():
    landscape = {0.01: [0.80, 0.80], 0.03: [0.897, 0.897], 0.1: [0.90, 0.90], 0.3: [0.70, 0.70]}
    rows = [r for q in range(4) for r in oracle_round(q, landscape)]
    plan = [0.03, 0.1, 0.1 * (1 + 1e-9), 0.03 * (1 - 1e-9)]
    rows += [r for q, v in enumerate(plan) for r in silo_runs(q, v, [0.88, 0.88])]
    result = analyse(rows, attrs(cycles=4, silo=plan))
    got = result.verdicts[["cycle", "interval_low", "interval_high", "silo_in_interval", "silo_position"]]
    assert got.to_dict("records") == [
        {"cycle": 0, "interval_low": 0.03, "interval_high": 0.1, "silo_in_interval": True, "silo_position": "inside"},
        {"cycle": 1, "interval_low": 0.03, "interval_high": 0.1, "silo_in_interval": True, "silo_position": "inside"},
        {"cycle": 2, "interval_low": 0.03, "interval_high": 0.1, "silo_in_interval": False, "silo_position": "above"},
        {"cycle": 3, "interval_low": 0.03, "interval_high": 0.1, "silo_in_interval": False, "silo_position": "below"},
    ]
    assert result.summary["verdict"]["inside"] == 2 and result.summary["verdict"]["judged"] == 4
    assert result.summary["verdict"]["pruned_cycles"] == {"judged": 3, "inside": 1, "fraction_inside": 1 / 3}


def test_diverged_and_failed_runs_never_win_nor_enter_the_interval():
    # 0.3: seed 0 is the best run of all, seed 1 diverged (chance accuracy): out entirely.
    # 0.01: both seeds failed (no accuracy). 0.1 wins; 0.03 is within the tolerance.
    rows = oracle_round(
        0, {0.01: [math.nan, math.nan], 0.03: [0.898, 0.898], 0.1: [0.90, 0.90], 0.3: [0.99, 0.10]},
        statuses={(0.3, 1): "diverged", (0.01, 0): "failed", (0.01, 1): "failed"},
    )
    result = analyse(rows + silo_runs(0, 0.3, [0.85, 0.85]), attrs(silo=[0.3]))
    v = verdict(result)
    assert v["oracle_max_lr"] == 0.1
    assert (v["interval_low"], v["interval_high"]) == (0.03, 0.1)
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
    v = verdict(analyse(rows, attrs(arms=["oracle"])))
    assert (v["oracle_max_lr"], v["interval_low"], v["interval_high"]) == (0.1, 0.1, 0.1)


def test_seed_noise_beyond_the_tolerance_widens_the_interval():
    # winner 0.1: seeds 0.89 and 0.91 -> mean 0.90, SE 0.01; 0.03 averages 0.885.
    rows = oracle_round(0, {0.01: [0.70, 0.70], 0.03: [0.885, 0.885], 0.1: [0.89, 0.91], 0.3: [0.80, 0.80]})
    wide = verdict(analyse(rows, attrs(noise_k=2.0)))
    assert wide["oracle_val_se"] == pytest.approx(0.01)
    assert wide["tol"] == pytest.approx(0.02)
    assert (wide["interval_low"], wide["interval_high"]) == (0.03, 0.1)
    narrow = verdict(analyse(rows, attrs(noise_k=0.0)))
    assert narrow["tol"] == 0.005
    assert (narrow["interval_low"], narrow["interval_high"]) == (0.1, 0.1)


def test_oracle_accuracy_is_its_chosen_runs_and_the_gap_is_silo_minus_oracle():
    rows = oracle_round(0, {0.03: [0.88, 0.90], 0.1: [0.91, 0.93]})
    rows = [dict(r, test_acc=r["val_acc"] - 0.02) for r in rows]
    rows += [run("silo", 0, 0, 0.03, 0.88, test=0.85), run("silo", 1, 0, 0.03, 0.90, test=0.87)]
    result = analyse(rows, attrs(silo=[0.03]))
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
        run("oracle", 0, 1, 0.1, 0.89, run_id="o-1", wall_s=80.0),
        run("silo", 0, 0, 0.03, 0.90, run_id="dense", wall_s=100.0),
        run("silo", 0, 1, 0.05, 0.88, run_id="s-1", wall_s=60.0),
    ]
    result = analyse(rows, attrs(seeds=[0], cycles=2, silo=[0.03, 0.05]))
    cost = result.cost.set_index("arm")
    assert (cost.loc["oracle", "runs"], cost.loc["oracle", "run_seconds"]) == (3, 280.0)
    assert (cost.loc["silo", "runs"], cost.loc["silo", "run_seconds"]) == (2, 160.0)
    assert (cost.loc["study total", "runs"], cost.loc["study total", "run_seconds"]) == (4, 340.0)
    assert result.summary["cost_ratio_oracle_to_silo"] == {"run_seconds": 1.75, "runs": 1.5}


def test_without_a_silo_arm_the_verdict_is_empty_and_says_why():
    rows = oracle_round(0, {0.03: [0.89, 0.89], 0.1: [0.90, 0.90]})
    result = analyse(rows, attrs(arms=["oracle"]))
    v = verdict(result)
    assert v["oracle_max_lr"] == 0.1
    assert math.isnan(v["silo_max_lr"]) and v["silo_in_interval"] is None
    assert result.summary["verdict"]["fraction_inside"] is None
    assert result.summary["text"].startswith("This study has no silo arm")


def test_without_an_oracle_arm_there_is_no_interval_and_it_says_why():
    rows = silo_runs(0, 0.03, [0.88, 0.90]) + [run("lr_rewinding", s, 0, 0.03, 0.87) for s in (0, 1)]
    result = analyse(rows, attrs(arms=["silo", "lr_rewinding"], silo=[0.03]))
    v = verdict(result)
    assert math.isnan(v["interval_low"]) and v["silo_in_interval"] is None
    assert v["silo_max_lr"] == 0.03 and v["silo_test_acc"] == pytest.approx(0.88)
    assert result.landscape.empty
    assert "no oracle arm" in result.summary["text"]
    assert result.summary["cost_ratio_oracle_to_silo"] == {"run_seconds": None, "runs": None}


def test_a_cycle_the_oracle_did_not_reach_has_no_verdict():
    rows = oracle_round(0, {0.03: [0.89, 0.89], 0.1: [0.90, 0.90]})
    rows += silo_runs(0, 0.03, [0.88, 0.88]) + silo_runs(1, 0.05, [0.86, 0.86])
    result = analyse(rows, attrs(cycles=2, silo=[0.03, 0.05]))
    v1 = verdict(result, 1)
    assert math.isnan(v1["oracle_max_lr"]) and v1["silo_in_interval"] is None
    assert v1["silo_max_lr"] == 0.05 and "did not reach" in v1["note"]
    assert result.summary["verdict"]["judged"] == 1
