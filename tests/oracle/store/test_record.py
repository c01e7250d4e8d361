"""The Optuna record: one frozen trial per run, one Optuna study per arm, idempotent."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from oracle.judge.selection import DEFAULT_TOLERANCE
from oracle.store.record import load_record, record_rows, record_study, study_attrs
from tests._fake_record import CYCLES, GRID, NAME, SEEDS, copy_template, fake_rows, fake_study, root_id


@pytest.fixture
def storage(tmp_path, tmp_path_factory) -> str:
    """A real SQLite file in tmp_path holding the fake study, recorded once."""
    return copy_template(tmp_path_factory, tmp_path / "optuna.db")


def trials(url: str) -> dict[str, list]:
    return {name: optuna.load_study(study_name=name, storage=url).get_trials()
            for name in optuna.get_all_study_names(url) if not name.endswith("/@study")}


def test_one_study_per_arm_named_study_slash_arm(storage):
    counts = {name: len(ts) for name, ts in trials(storage).items()}
    assert counts == {f"{NAME}/oracle": len(GRID) * len(SEEDS) * CYCLES,
                      f"{NAME}/silo": len(SEEDS) * CYCLES, f"{NAME}/lr_rewinding": len(SEEDS) * CYCLES}


def test_recording_twice_adds_no_trial(storage):
    study = fake_study()
    before = {name: len(ts) for name, ts in trials(storage).items()}
    result = record_study(study, fake_rows(study), storage)
    assert (result.added, result.unchanged, result.superseded) == (0, 36, 0)
    assert {name: len(ts) for name, ts in trials(storage).items()} == before


def test_a_trial_holds_the_run(storage):
    oracle = {(t.params["seed"], t.params["cycle"], t.params["max_lr"]): t for t in trials(storage)[f"{NAME}/oracle"]}
    ok = oracle[(0, 1, 0.1)]
    assert ok.state == TrialState.COMPLETE
    assert ok.value == ok.user_attrs["val_acc"] > 0.8
    assert ok.distributions["max_lr"].log is True
    assert ok.user_attrs["status"] == "ok" and ok.user_attrs["chosen"] is True
    assert ok.user_attrs["run_id"] == "oracle-0-1-0.1"
    assert ok.user_attrs["parent_run_id"] == root_id(fake_study(), "oracle", 0, 0.03)
    assert set(ok.user_attrs) >= {"test_acc", "sparsity", "wall_s", "train_loss", "steps", "reused", "max_lr"}
    diverged = oracle[(1, 2, 0.3)]
    assert diverged.state == TrialState.FAIL and diverged.value is None
    assert diverged.user_attrs["status"] == "diverged" and diverged.user_attrs["val_acc"] == 0.1
    assert diverged.user_attrs["train_loss"] is None  # NaN is stored as null


def test_study_attributes_make_the_storage_self_sufficient(storage):
    attrs = optuna.load_study(study_name=f"{NAME}/@study", storage=storage).user_attrs
    study = fake_study()
    assert attrs["study"] == NAME and attrs["arms"] == ["oracle", "silo", "lr_rewinding"]
    arm = optuna.load_study(study_name=f"{NAME}/silo", storage=storage).user_attrs
    assert arm == {"schema": 1, "study": NAME, "arm": "silo"}  # the settings live in one place
    assert attrs["grid"] == GRID and attrs["seeds"] == SEEDS and attrs["cycles"] == CYCLES
    assert (attrs["tolerance"], attrs["noise_k"]) == (DEFAULT_TOLERANCE, None)  # delta; no retired setting
    assert attrs["silo_max_lr"] == [study.schedule("silo").max_lr(q) for q in range(CYCLES)]
    assert attrs["study_yaml"] == study.resolved_yaml()
    assert {"torch", "ray", "optuna", "git commit"} <= set(attrs["recorded_with"])


def test_rows_read_back_equal_the_rows_recorded(storage):
    got = load_record(storage, NAME).rows
    want = {(r["arm"], r["seed"], r["cycle"], r["max_lr"]): r for r in fake_rows()}
    assert len(got) == len(want)
    for r in got.to_dict("records"):
        w = want[(r["arm"], r["seed"], r["cycle"], r["max_lr"])]
        for col in ("val_acc", "test_acc", "sparsity", "wall_s", "train_loss"):
            assert r[col] == w[col] or (math.isnan(r[col]) and math.isnan(w[col])), col
        assert (r["status"], r["run_id"], r["parent_run_id"], r["chosen"]) == (
            w["status"], w["run_id"], w["parent_run_id"], w["chosen"])


def test_a_later_record_of_a_run_supersedes_the_earlier_one(storage):
    study = fake_study()
    attrs = study_attrs(study)
    base = dict(fake_rows(study)[0], seed=np.int64(0), cycle=2, max_lr=np.float64(1.0), chosen=False)
    failed = dict(base, status="failed", run_id="x-1", val_acc=float("nan"), test_acc=float("nan"))
    ok = dict(base, status="ok", run_id="x-1", val_acc=0.5, test_acc=0.49)

    assert record_rows(storage, NAME, attrs, [failed]).added == 1
    assert record_rows(storage, NAME, attrs, [failed]).added == 0
    result = record_rows(storage, NAME, attrs, [ok])
    assert (result.added, result.superseded) == (1, 1)
    assert len(trials(storage)[f"{NAME}/oracle"]) == 24 + 2  # Optuna keeps both trials

    record = load_record(storage, NAME)
    assert record.superseded == 1
    mine = record.rows[(record.rows["arm"] == "oracle") & (record.rows["max_lr"] == 1.0)]
    assert mine[["status", "val_acc"]].to_dict("records") == [{"status": "ok", "val_acc": 0.5}]


def test_a_max_lr_of_zero_is_kept_exactly(storage):
    attrs = study_attrs(fake_study())
    row = dict(fake_rows()[0], arm="silo", seed=0, cycle=0, max_lr=0.0, run_id="zero")
    record_rows(storage, NAME, attrs, [row])
    t = [t for t in trials(storage)[f"{NAME}/silo"] if t.user_attrs["run_id"] == "zero"][0]
    assert t.params["max_lr"] > 0 and t.user_attrs["max_lr"] == 0.0
    rows = load_record(storage, NAME).rows
    assert ((rows["arm"] == "silo") & (rows["max_lr"] == 0.0)).sum() == 1


# -- a changed study rerun into the same storage (issue 19, findings 1 and 5) ----------------


def test_a_rerun_that_dropped_the_first_arm_and_moved_silo_is_judged_with_its_own_settings(storage):
    # lr_rewinding sorts before oracle and silo: its Optuna study, not rewritten by the rerun,
    # must not lend the record its old seeds, grid or SILO plan.
    from oracle.report.build import analysis_of

    before = load_record(storage, NAME).attrs["silo_max_lr"]
    study = fake_study(drop="lr_rewinding", silo_offset=0.05)
    record_study(study, fake_rows(study), storage)
    record = load_record(storage, NAME)
    plan = [study.schedule("silo").max_lr(q) for q in range(CYCLES)]
    assert plan != before
    assert record.attrs["silo_max_lr"] == plan and record.attrs["arms"] == ["oracle", "silo"]
    assert record.attrs["study_yaml"] == study.resolved_yaml()
    a = analysis_of(record.rows, record.attrs)
    assert a.verdicts["silo_max_lr"].tolist() == plan
    assert "lr_rewinding" not in set(a.arms["arm"]) | set(a.cost["arm"]) | set(a.rows["arm"])
    assert a.summary["arms"] == ["oracle", "silo"] and a.summary["progress"]["complete"]
    assert any("6 run(s)" in m and "no longer in this study" in m and "6 of lr_rewinding" in m for m in a.messages)
    # the old SILO runs are the earlier version, the current ones are not
    assert any("6 run(s)" in m and "earlier version" in m for m in a.messages)
    silo = a.arms[a.arms["arm"] == "silo"]
    assert silo["max_lr"].tolist() == plan and silo["runs"].tolist() == [2, 2, 2]


def test_a_rerun_that_dropped_the_last_arm_leaves_it_out_and_is_complete(storage):
    from oracle.report.build import analysis_of

    study = fake_study(drop="silo")
    record_study(study, fake_rows(study), storage)
    record = load_record(storage, NAME)
    a = analysis_of(record.rows, record.attrs)
    assert record.attrs["arms"] == ["oracle", "lr_rewinding"]
    assert "silo" not in set(a.arms["arm"]) | set(a.cost["arm"])
    assert a.summary["progress"] == {"runs_done": 30, "runs_planned": 30, "complete": True,
                                     "judged_cycles": [0, 1, 2], "oracle_stopped": None}
    assert any("6 of silo" in m for m in a.messages)


def test_a_run_trained_again_under_the_same_id_replaces_its_metrics_in_the_record(storage):
    study = fake_study()
    rows = fake_rows(study)
    i = next(i for i, r in enumerate(rows) if r["arm"] == "silo" and r["cycle"] == 2 and r["seed"] == 0)
    retrained = dict(rows[i], val_acc=0.5, test_acc=0.49, wall_s=99.0)  # same id, status and choice
    result = record_study(study, rows[:i] + [retrained] + rows[i + 1:], storage)
    assert (result.added, result.superseded, result.unchanged) == (1, 1, 35)
    got = load_record(storage, NAME).rows.set_index(["arm", "seed", "cycle"]).loc[("silo", 0, 2)]
    assert (got["val_acc"], got["test_acc"], got["wall_s"], got["run_id"]) == (0.5, 0.49, 99.0, rows[i]["run_id"])
    # and the same row again, or a copy whose missing numbers are NaN again, changes nothing
    assert record_study(study, rows[:i] + [retrained] + rows[i + 1:], storage).added == 0
