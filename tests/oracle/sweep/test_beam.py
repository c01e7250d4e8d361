"""The beam over the grid (docs/design.md, "The beam"): which values each round trains, the
analysis replaying it, and a real sweep of the smoke study against the exhaustive Oracle."""

from __future__ import annotations

import copy
import csv
import io
import json
import math
from pathlib import Path

import pytest
import yaml

from oracle.judge.analysis import NOT_TRAINED
from oracle.judge.calibrate import targets
from oracle.judge.lineage import oracle_rounds
from oracle.judge.plan import beam_values, plan_round
from oracle.report.build import analysis_of, report_from_storage
from oracle.store.identity import RunKey
from oracle.store.record import load_record, study_attrs
from oracle.store.rows import rows_frame
from oracle.study import parse_study
from oracle.sweep.driver import run_sweep
from oracle.sweep.searcher import StudySearcher
from silo.config import TaskConfig
from tests._repo import REPO

ROOT = REPO
GRID8 = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0]


def test_a_beam_starts_from_the_previous_v_and_w_neighbours_each_side():
    assert beam_values(GRID8, [0.03], 1) == (0.01, 0.03, 0.1)
    assert beam_values(GRID8, [0.03, 0.1], 2) == (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
    assert beam_values(GRID8, [0.001], 1) == (0.001, 0.003, 0.01)  # at the grid's edge: still 3
    assert beam_values(GRID8, [3.0], 1) == (0.3, 1.0, 3.0)
    # V holding a refinement value between 0.03 and 0.1: the span reaches both grid values
    assert beam_values(GRID8, [0.0547723], 1) == (0.01, 0.03, 0.1, 0.3)
    assert beam_values(GRID8, [0.03], 10) == tuple(GRID8)


def acc_rows(values, accs: dict[float, float], seeds=(0, 1)) -> list[dict]:
    return [{"max_lr": v, "seed": s, "val_acc": accs[v] + 0.001 * s, "status": "ok"} for v in values for s in seeds]


def test_a_round_widens_while_an_end_of_v_is_the_beams_edge():
    rule = dict(refine=0, tolerance=0.005, beam=1)
    accs = {v: 0.5 + 0.05 * i for i, v in enumerate(GRID8)}  # rising: the best is the grid's top
    plan = plan_round([], [0, 1], grid=GRID8, previous=[0.03], **rule)
    assert plan.missing == (0.01, 0.03, 0.1) and plan.untrained == (0.001, 0.003, 0.3, 1.0, 3.0)
    rows = acc_rows(plan.missing, accs)
    trained = [plan.missing]
    while (plan := plan_round(rows, [0, 1], grid=GRID8, previous=[0.03], **rule)).missing:
        trained.append(plan.missing)
        rows += acc_rows(plan.missing, accs)
    assert trained == [(0.01, 0.03, 0.1), (0.3,), (1.0,), (3.0,)]  # one value up at a time, to the edge
    assert plan.values == (0.01, 0.03, 0.1, 0.3, 1.0, 3.0) and plan.untrained == (0.001, 0.003)
    # Falling: the best is the grid's bottom, and the beam widens down one value at a time.
    falling = {v: 0.9 - 0.05 * i for i, v in enumerate(GRID8)}
    rows, trained = [], []
    while (plan := plan_round(rows, [0, 1], grid=GRID8, previous=[0.1], **rule)).missing:
        trained.append(plan.missing)
        rows += acc_rows(plan.missing, falling)
    assert trained == [(0.03, 0.1, 0.3), (0.01,), (0.003,), (0.001,)]
    assert plan.untrained == (1.0, 3.0)
    # A failed value beyond the edge is still a neighbour: V's end is closed, widening stops.
    rows = acc_rows((0.01, 0.03, 0.1), accs) + [{"max_lr": 0.3, "seed": s, "val_acc": math.nan, "status": "failed"}
                                                for s in (0, 1)]
    assert plan_round(rows, [0, 1], grid=GRID8, previous=[0.03], **rule).missing == ()


def synthetic_study(tmp_path, *, search, cycles=6):
    data = yaml.safe_load((ROOT / "studies" / "smoke.yaml").read_text())
    data["name"] = "moving"
    data["pruning"]["cycles"] = cycles
    data["arms"] = {"oracle": {"grid": GRID8, "search": search}, "silo": {"offset": 0.03, "alpha": 0.1}}
    data["task"]["data"]["root"] = str(tmp_path / "data")
    return parse_study(data)


def moving_acc(q: int, max_lr: float, seed: int) -> float:
    """The optimum moves up one grid value per cycle: 0.01, 0.03, 0.1, ... at cycles 0, 1, 2, ..."""
    peak = math.log10(0.01) + q * math.log10(3)
    return 0.9 - 0.1 * (math.log10(max_lr) - peak) ** 2 + 0.002 * seed


def drive(study, tmp_path) -> tuple[list[dict], dict[int, list[tuple[float, ...]]]]:
    """The real StudySearcher, each trial's runs answered from the synthetic landscape (no
    training): the rows it produced and the values handed out per cycle, batch by batch. A
    trial released early waits, as a real one does, until its round's parents are known."""
    searcher = StudySearcher(study, store=str(tmp_path / "runs"), threads=1, on_round_closed=lambda *a: None)
    rows, handed, waiting, n = [], {}, [], 0

    def finish(trial_id, config, parent):
        q, seed, values = config["first_cycle"], config["seed"], config["max_lrs"]
        if seed == study.seeds[0]:
            handed.setdefault(q, []).append(tuple(values))
        task = TaskConfig.model_validate(config["task"])  # the ids the trainable would give them
        results = [{"seed": seed, "cycle": q, "max_lr": v, "status": "ok", "val_acc": moving_acc(q, v, seed),
                    "run_id": RunKey(task, seed=seed, cycle=q, max_lr=v, parent_run_id=parent).run_id,
                    "parent_run_id": parent, "arm": "oracle"} for v in values]
        rows.extend(results)
        for r in results[:-1]:
            searcher.on_trial_result(trial_id, r)
        searcher.on_trial_complete(trial_id, results[-1])

    while True:
        for item in [w for w in waiting if w[1]["first_cycle"] - 1 in searcher.oracle.parents]:
            waiting.remove(item)
            trial_id, config = item
            finish(trial_id, config, searcher.oracle.parents[config["first_cycle"] - 1][config["seed"]])
        n += 1
        config = searcher.suggest(f"t{n}")
        if config == StudySearcher.FINISHED:
            return rows, handed
        if config is None:
            assert waiting, "the searcher waits, yet every trial it handed out has finished"
            continue
        if config["arm"] != "oracle":
            searcher.on_trial_complete(f"t{n}", {"status": "ok"})
        elif config["parent_run_id"] is None and config["wait_for_winners"]:
            waiting.append((f"t{n}", config))
        else:
            finish(f"t{n}", config, config["parent_run_id"])


@pytest.mark.integration
def test_the_beam_follows_an_optimum_that_moves_up_the_grid_and_the_analysis_replays_it(tmp_path):
    beam = synthetic_study(tmp_path, search={"beam": 1})
    rows, handed = drive(beam, tmp_path)
    assert handed[0] == [tuple(GRID8)]
    # cycle 1 starts from V = {0.01} and widens once: its optimum 0.03 is at the beam's edge
    assert handed[1] == [(0.003, 0.01, 0.03), (0.1,)]
    assert handed[4] == [(0.1, 0.3, 1.0), (3.0,)]
    assert handed[5] == [(0.3, 1.0, 3.0)]  # the optimum reached the grid's end: nothing beyond
    ex_rows, ex_handed = drive(synthetic_study(tmp_path, search="exhaustive"), tmp_path)
    assert all(h == [tuple(GRID8)] for h in ex_handed.values())
    assert {r["run_id"] for r in rows} < {r["run_id"] for r in ex_rows}  # a subset, same ids
    a = analysis_of(rows_frame(dict(r, chosen=False) for r in rows), study_attrs(beam))
    ex = analysis_of(rows_frame(dict(r, chosen=False) for r in ex_rows),
                 study_attrs(synthetic_study(tmp_path, search="exhaustive")))
    cols = ["oracle_max_lr", "judged_low", "judged_high", "open_low", "open_high", "verdict"]
    assert a.verdicts[cols].to_dict("records") == ex.verdicts[cols].to_dict("records")
    assert a.verdicts["oracle_max_lr"].tolist() == [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]
    cells = a.landscape.set_index(["cycle", "max_lr"])["state"]
    assert cells[(1, 0.001)] == NOT_TRAINED and cells[(1, 0.1)] == "ok" and cells[(1, 0.3)] == NOT_TRAINED
    assert "pending" not in set(cells)  # values outside the beam are never missing
    s = a.summary["search"]
    assert (s["name"], s["beam"], s["grid_runs"], s["saved_runs"]) == ("beam", 1, 6 * 8 * 2, 96 - len(rows))
    assert a.summary["progress"]["complete"] is False  # SILO's runs are not in these rows
    assert len(rows) == 2 * (8 + 4 * 4 + 3)


# -- a real sweep of the smoke study, beam against exhaustive, one run store -----------------


def smoke(search, *, cycles=3):
    data = copy.deepcopy(yaml.safe_load((ROOT / "studies" / "smoke.yaml").read_text()))
    data["name"] = "beam-smoke"
    data["pruning"]["cycles"] = cycles
    data["arms"] = {"oracle": {"grid": {"low": 0.003, "high": 1.0, "count": 4}, "search": search},
                    "silo": data["arms"]["silo"]}
    return parse_study(data)


def results(out: Path) -> list[dict]:
    with (out / "results.csv").open() as f:
        return list(csv.DictReader(f))


def test_the_beam_on_the_smoke_study_equals_the_exhaustive_oracle(local_ray, tmp_path):
    out = tmp_path / "beam"
    # Interrupted after 2 of 3 cycles, resumed with all 3: nothing is trained twice.
    assert run_sweep(smoke({"beam": 1}, cycles=2), out=out, stream=io.StringIO(), finish=False, quiet=True).done
    first = {r["run_id"] for r in results(out) if r["reused"] == "False"}
    assert run_sweep(smoke({"beam": 1}), out=out, stream=io.StringIO(), quiet=True).done
    beam_rows = results(out)
    again = {r["run_id"] for r in beam_rows if r["reused"] == "False"}
    assert first and again and not first & again
    assert {r["run_id"] for r in beam_rows if r["cycle"] != "2"} <= first  # cycles 0-1: all reused
    # The exhaustive Oracle into the same run store trains only what the beam left out.
    ex_out = tmp_path / "exhaustive"
    ex_out.mkdir()
    (ex_out / "runs").symlink_to(out / "runs")
    assert run_sweep(smoke("exhaustive"), out=ex_out, stream=io.StringIO(), quiet=True).done
    ex_rows = results(ex_out)
    beam_ids = {r["run_id"] for r in beam_rows}
    assert all(r["reused"] == "True" for r in ex_rows if r["run_id"] in beam_ids)
    oracle_ids = [{r["run_id"] for r in rows if r["arm"] == "oracle"} for rows in (beam_rows, ex_rows)]
    # The beam's runs are exhaustive runs. (On this noisy 1-epoch landscape its interval is
    # wide and it widens to the whole grid; the synthetic test above shows what it leaves out.)
    assert oracle_ids[0] <= oracle_ids[1]
    # Same winners, judged intervals and verdicts in every cycle.
    record = load_record(f"sqlite:///{out / 'optuna.db'}", "beam-smoke")
    ex_record = load_record(f"sqlite:///{ex_out / 'optuna.db'}", "beam-smoke")
    a, ex = analysis_of(record.rows, record.attrs), analysis_of(ex_record.rows, ex_record.attrs)
    cols = ["oracle_max_lr", "judged_low", "judged_high", "open_low", "open_high", "verdict"]
    assert a.verdicts[cols].to_dict("records") == ex.verdicts[cols].to_dict("records")
    oracle_runs = int(a.cost.set_index("arm").loc["oracle", "runs"])
    assert a.summary["search"]["saved_runs"] == 4 * 2 * 3 - oracle_runs == len(oracle_ids[1] - oracle_ids[0])
    assert a.summary["progress"]["complete"] and a.summary["search"]["name"] == "beam"
    # The analysis, from the record alone, replays what the sweep did: each round's values
    # and its winner, the one the sweep continued from.
    for q in range(3):
        ran = sorted({float(r["max_lr"]) for r in beam_rows if r["arm"] == "oracle" and r["cycle"] == str(q)})
        chosen = {float(r["max_lr"]) for r in beam_rows if r["arm"] == "oracle" and r["cycle"] == str(q)
                  and r["chosen"] == "True"}
        cells = a.landscape[(a.landscape["cycle"] == q) & (a.landscape["state"] != NOT_TRAINED)]
        assert cells["max_lr"].tolist() == ran and chosen == {a.verdicts.loc[q, "oracle_max_lr"]}
    assert not any("differs" in n for n in a.verdicts["note"])
    # The report rebuilt from the record alone equals the one the sweep wrote at its end.
    rebuilt = tmp_path / "rebuilt"
    report_from_storage(f"sqlite:///{out / 'optuna.db'}", "beam-smoke", rebuilt)
    for name in ("verdicts.csv", "arms.csv", "cost.csv"):
        assert (rebuilt / name).read_text() == (out / name).read_text(), name
    written, again_built = (json.loads((d / "summary.json").read_text()) for d in (out, rebuilt))
    for s in (written, again_built):
        s.pop("versions")
    assert written == again_built
    assert "beam of 1" in (out / "report.md").read_text()


# -- the grid's resolution at the beam's edge (synthetic records, no training) ---------------

SEEDS3 = (0, 1, 2)


EDGE_DELTA = 0.0095  # about twice the pooled sd of edge_record's rounds


def edge_attrs(search, silo_max_lr: float) -> dict:
    plan = [0.05, silo_max_lr]
    return {"study": "edge", "arms": ["oracle", "silo"], "cycles": 2, "seeds": list(SEEDS3), "grid": GRID8,
            "refine": 0, "search": search, "tolerance": EDGE_DELTA,
            "planned_max_lr": {"silo": plan}, "silo_max_lr": plan}


def edge_record(means: list[dict[float, float]], cycle1=tuple(GRID8)):
    """Cycle 0 over the whole grid, cycle 1 at `cycle1` from each seed's run at 0.03 (the
    winner): a seed effect of 1 point and a paired residual of a few tenths at the competitive
    values (pooled sd 0.47 points; delta EDGE_DELTA, 0.95), none at the hopeless ones."""
    noise = (0.006, -0.003, -0.003)
    rows = []
    for q, values in ((0, GRID8), (1, cycle1)):
        for v in values:
            for i, s in enumerate(SEEDS3):
                e = noise[(i + GRID8.index(v)) % 3] if means[q][v] > 0.5 else 0.0
                rows.append({"arm": "oracle", "seed": s, "cycle": q, "max_lr": v, "status": "ok",
                             "val_acc": means[q][v] + 0.01 * s + e, "run_id": f"{s}-{q}-{v}",
                             "parent_run_id": None if q == 0 else f"{s}-0-0.03"})
    return rows_frame(rows)


HOPELESS = {v: 0.2 for v in GRID8}
CYCLE0 = {**HOPELESS, 0.01: 0.8, 0.03: 0.9, 0.1: 0.9, 0.3: 0.8}  # V = {0.03, 0.1}: beam 0.01-0.3


def test_p_inside_at_the_beams_edge_reaches_halfway_to_the_untrained_grid_value():
    # Cycle 1: V = {0.03, 0.1} (no end at the beam's edge, so no widening), and 0.3, the
    # beam's top, just below V's threshold: in about a third of P(inside)'s draws it enters V,
    # and the interval then reaches halfway to 1.0 (0.548), which the beam did not train.
    # SILO's 0.4 is inside exactly in those draws. Were the beam's interval to stop at 0.3 in
    # them, P would be 0 and the verdict "outside", where the exhaustive Oracle's is uncertain.
    cycle1 = {**HOPELESS, 0.01: 0.8, 0.03: 0.9, 0.1: 0.895, 0.3: 0.889}
    ex = analysis_of(edge_record([CYCLE0, cycle1]), edge_attrs("exhaustive", 0.4))
    rows = edge_record([CYCLE0, cycle1], cycle1=(0.01, 0.03, 0.1, 0.3))
    beam = analysis_of(rows, edge_attrs({"beam": 1}, 0.4))
    cols = ["oracle_max_lr", "interval_low", "interval_high", "judged_low", "judged_high", "open_low", "open_high",
            "sd", "delta"]
    assert beam.verdicts[cols].to_dict("records") == ex.verdicts[cols].to_dict("records")
    x, y = ex.verdicts.loc[1], beam.verdicts.loc[1]
    assert (x["interval_low"], x["interval_high"], x["judged_high"]) == (0.03, 0.1, pytest.approx(math.sqrt(0.1 * 0.3)))
    assert 0.2 < x["p_inside"] < 0.8 and x["verdict"] == "uncertain"
    # The beam's draws differ from the exhaustive's only in the random numbers of the values
    # it did not train (hopeless, never in V): the same share within a few draws' noise.
    assert y["verdict"] == "uncertain" and y["p_inside"] == pytest.approx(x["p_inside"], abs=0.03)
    assert beam.landscape.set_index(["cycle", "max_lr"]).loc[(1, 1.0), "state"] == NOT_TRAINED
    # A calibration judges the same rounds through the same draws.
    attrs = edge_attrs({"beam": 1}, 0.4)
    rounds = oracle_rounds(rows, attrs, list(SEEDS3), [0, 1], tolerance=EDGE_DELTA)
    target = {t.cycle: t for t in targets(rounds, SEEDS3, tolerance=EDGE_DELTA)}[1]
    assert float(target.p_inside(0.4)) == y["p_inside"]


def test_a_provisional_beam_round_reaches_past_its_pending_value_as_the_exhaustive_one_does():
    # Cycle 1's V reaches 0.3, the beam's top: the beam widens to 1.0, which has not run yet.
    # Judged meanwhile on the values that ran, V's top reaches halfway to 3.0 (untrained), as
    # the exhaustive round's, with 1.0 pending too, reaches halfway to 3.0 (trained): closed,
    # not "beyond the grid". So does each of P(inside)'s draws: SILO's 0.7 lies between the
    # midpoints to 1.0 (0.548: were the pending value a neighbour) and to 3.0 (0.949).
    cycle1 = {**HOPELESS, 0.01: 0.8, 0.03: 0.9, 0.1: 0.9, 0.3: 0.9}
    ex = analysis_of(edge_record([CYCLE0, cycle1], cycle1=tuple(v for v in GRID8 if v != 1.0)),
                 edge_attrs("exhaustive", 0.7))
    beam = analysis_of(edge_record([CYCLE0, cycle1], cycle1=(0.01, 0.03, 0.1, 0.3)), edge_attrs({"beam": 1}, 0.7))
    cols = ["oracle_max_lr", "interval_high", "judged_low", "judged_high", "open_low", "open_high"]
    assert beam.verdicts.loc[1, cols].to_dict() == ex.verdicts.loc[1, cols].to_dict()
    assert beam.verdicts.loc[1, "judged_high"] == pytest.approx(math.sqrt(0.3 * 3.0))
    assert not beam.verdicts.loc[1, "open_high"]
    assert ex.verdicts.loc[1, "p_inside"] > 0.8
    assert beam.verdicts.loc[1, "p_inside"] == pytest.approx(ex.verdicts.loc[1, "p_inside"], abs=0.03)
    note = beam.verdicts.loc[1, "note"]
    assert "provisional: max_lr 1 pending" in note and "widen" not in note
