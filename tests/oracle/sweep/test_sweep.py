"""The Oracle service end to end on a real local Ray (127.0.0.1), with a real run store."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytest
import torch

from oracle.cli import main
from oracle.study import load_study
from oracle.sweep.driver import run_sweep
from silo.chain import run_chain
from silo.schedules import ListPeak

pytestmark = pytest.mark.integration  # every test here starts Ray, a server or a driver

ENV = dict(os.environ, PYTHONUNBUFFERED="1")


def read_rows(out: Path) -> list[dict]:
    with (out / "results.csv").open() as f:
        return list(csv.DictReader(f))


def test_smoke_study_end_to_end(local_ray, tmp_path, capsys):
    out = tmp_path / "smoke"
    assert main(["run", "studies/smoke.yaml", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = read_rows(out)
    study = load_study("studies/smoke.yaml")
    chain_arms = [a for a in study.arm_names() if a != "oracle"]
    expected = (len(study.grid) + len(chain_arms)) * len(study.seeds) * study.cycles
    assert len(rows) == expected
    assert {r["status"] for r in rows} == {"ok"}
    assert {"arm", "seed", "cycle", "max_lr", "sparsity", "val_acc", "test_acc", "status",
            "run_id", "parent_run_id", "wall_s"} <= set(rows[0])
    # Sparsity follows the pruning rate in every arm.
    for r in rows:
        assert float(r["sparsity"]) == pytest.approx(1 - 0.8 ** int(r["cycle"]), abs=1e-3)
    # One progress line per finished cycle per arm, and the closing summary.
    for arm in study.arm_names():
        for q in range(study.cycles):
            assert any(line.startswith(arm) and f"cycle {q:2d}" in line for line in printed.splitlines()), (arm, q)
    assert f"trained: {sum(r['reused'] == 'False' for r in rows)}, reused: " in printed
    # The Oracle chose exactly one value per cycle, for every seed.
    chosen = [r for r in rows if r["arm"] == "oracle" and r["chosen"] == "True"]
    assert len(chosen) == study.cycles * len(study.seeds)
    # The Oracle's line of each cycle, printed once, names that winner and its mean val
    # accuracy over every seed's winner run.
    for q in range(study.cycles):
        won = [r for r in chosen if int(r["cycle"]) == q]
        said = [line for line in printed.splitlines() if line.startswith("oracle ") and f"cycle {q:2d}" in line]
        mean = sum(float(r["val_acc"]) for r in won) / len(won)
        assert len(said) == 1 and f"best of {len(study.grid)}" in said[0], said
        assert f"max_lr {float(won[0]['max_lr']):<9.4g} val {mean:6.1%}" in said[0], said
    # Each Oracle run of cycle q >= 1 starts from its seed's winner of cycle q-1.
    winner_of = {(r["seed"], int(r["cycle"])): r["run_id"] for r in chosen}
    for r in rows:
        if r["arm"] == "oracle" and int(r["cycle"]) > 0:
            assert r["parent_run_id"] == winner_of[(r["seed"], int(r["cycle"]) - 1)]
    # SILO and LR rewinding share their cycles q <= delay (same run ids): each shared run was
    # trained once, by one arm, and reused by the other, never trained twice at once.
    by_id: dict[str, list[dict]] = {}
    for r in rows:
        by_id.setdefault(r["run_id"], []).append(r)
    shared = {rid: rs for rid, rs in by_id.items() if len(rs) > 1}
    assert len(shared) == 2 * len(study.seeds)  # cycles 0 and 1 of each seed
    for rs in shared.values():
        assert sorted(r["reused"] for r in rs) == ["False", "True"], rs


@pytest.fixture(scope="module")
def diverging_sweep(local_ray, tmp_path_factory, smoke_mapping):
    """One seed, a grid with a value that must diverge, SILO alongside."""
    import yaml

    data = dict(smoke_mapping, name="diverge", seeds=[0])
    data["arms"] = {"oracle": {"grid": [0.02, 0.1, 5000.0]}, "silo": smoke_mapping["arms"]["silo"]}
    folder = tmp_path_factory.mktemp("diverge")
    path = folder / "diverge.yaml"
    path.write_text(yaml.safe_dump(data))
    study = load_study(path)
    out = folder / "out"
    stream = io.StringIO()
    assert run_sweep(study, out=out, stream=stream).done
    return study, read_rows(out), out


def test_diverging_value_is_recorded_and_never_chosen(diverging_sweep):
    study, rows, _ = diverging_sweep
    huge = [r for r in rows if r["arm"] == "oracle" and float(r["max_lr"]) == 5000.0]
    assert len(huge) == study.cycles
    assert {r["status"] for r in huge} == {"diverged"}
    assert all(float(r["val_acc"]) == pytest.approx(0.1) for r in huge)  # chance
    assert not any(r["chosen"] == "True" for r in huge)
    assert all(r["chosen"] == "True" for r in rows
               if r["arm"] == "oracle" and r["status"] == "ok" and float(r["max_lr"]) in
               {_winner(rows, int(r["cycle"]))})


def _winner(rows, cycle):
    ok = [r for r in rows if r["arm"] == "oracle" and int(r["cycle"]) == cycle and r["status"] == "ok"]
    best = max(ok, key=lambda r: (float(r["val_acc"]), -float(r["max_lr"])))
    return float(best["max_lr"])


def test_distributed_oracle_agrees_with_the_sequential_driver(diverging_sweep):
    study, rows, _ = diverging_sweep
    chosen = sorted((r for r in rows if r["arm"] == "oracle" and r["chosen"] == "True"),
                    key=lambda r: int(r["cycle"]))
    winners = [float(r["max_lr"]) for r in chosen]
    assert len(winners) == study.cycles
    # Trials run with one torch thread (one CPU each); so does the replay.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        replay = run_chain(study.task_for_arm("oracle"), seed=0, cycles=study.cycles,
                           peak=ListPeak(tuple(winners)), device="cpu")
    finally:
        torch.set_num_threads(threads)
    # The sweep trains the Oracle's rounds fused (vmap) and the replay one run at a time: the
    # same computation up to float32 rounding, whose last bits depend on the CPU's kernels
    # (equal on one machine, 1.4e-7 apart on another). Accuracies are counts of correct
    # answers and agree exactly; the mean loss agrees to rounding.
    for row, result in zip(chosen, replay):
        assert float(row["val_acc"]) == result.metrics.val_acc
        assert float(row["test_acc"]) == result.metrics.test_acc
        assert float(row["train_loss"]) == pytest.approx(result.metrics.train_loss, rel=1e-5)


def test_rerun_trains_nothing(diverging_sweep):
    study, rows, out = diverging_sweep
    # Rerun the same study into the same folder: every run comes from the store.
    stream = io.StringIO()
    assert run_sweep(study, out=out, stream=stream).done
    assert "trained: 0," in stream.getvalue()
    again = read_rows(out)
    assert {r["run_id"] for r in again} == {r["run_id"] for r in rows}
    assert [r["val_acc"] for r in again] == [r["val_acc"] for r in rows]


def test_a_missing_dataset_stops_before_anything_runs(write_study, tmp_path, capsys):
    empty = tmp_path / "no-data"
    empty.mkdir()
    path = write_study("cifar", {"task": {"data": {"name": "cifar10", "root": str(empty)},
                                          "model": "resnet20"}}, drop=("task.data.num_samples",))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert str(empty / "cifar-10-batches-py") in err[0] and "download=True" in err[0]
    assert not out.exists()


def test_refinement_trains_midpoints_chooses_after_them_and_resumes(local_ray, write_study, tmp_path):
    from oracle.judge.plan import refined_value

    path = write_study("refined", {"arms": {"oracle": {"refine": 1}}})
    study = load_study(path)
    out = tmp_path / "out"
    stream = io.StringIO()
    assert run_sweep(study, out=out, stream=stream).done
    rows = read_rows(out)
    oracle = [r for r in rows if r["arm"] == "oracle"]
    refined = [r for r in oracle if r["refined"] == "True"]
    assert refined, "the smoke landscape has a closed end of V in some cycle"
    assert all(float(r["max_lr"]) not in study.grid for r in refined)
    assert all(r["refined"] == "False" for r in oracle if float(r["max_lr"]) in study.grid)
    verdicts = {int(v["cycle"]): v for v in csv.DictReader((out / "verdicts.csv").open())}
    for q in range(study.cycles):
        mine = [r for r in refined if int(r["cycle"]) == q]
        values = sorted({float(r["max_lr"]) for r in mine})
        # Every seed trained every refinement value, from the same parent as its grid runs.
        assert all(sorted(int(r["seed"]) for r in mine if float(r["max_lr"]) == v) == list(study.seeds)
                   for v in values)
        grid_parents = {(r["seed"], r["parent_run_id"]) for r in oracle if int(r["cycle"]) == q}
        assert {(r["seed"], r["parent_run_id"]) for r in mine} <= grid_parents
        # Each one is the midpoint between two neighbouring values of the grid.
        midpoints = {refined_value(a, b) for a, b in zip(study.grid, study.grid[1:])}
        assert set(values) <= midpoints
        # The sweep's choice (after refinement) is the analysis's winner.
        chosen = {float(r["max_lr"]) for r in oracle if int(r["cycle"]) == q and r["chosen"] == "True"}
        assert chosen == {float(verdicts[q]["oracle_max_lr"])}
        assert "differs" not in verdicts[q]["note"]
    # The rerun trains nothing: refinement runs are reused from the store like grid runs.
    again = io.StringIO()
    assert run_sweep(study, out=out, stream=again).done
    assert "trained: 0," in again.getvalue()
    assert sorted(r["run_id"] for r in read_rows(out)) == sorted(r["run_id"] for r in rows)


def test_refine_and_grid_size_are_validated(write_study, capsys):
    for changes, field, says in (
        ({"arms": {"oracle": {"refine": 5}}}, "arms.oracle.refine", "<= 4"),
        ({"arms": {"oracle": {"refine": "two"}}}, "arms.oracle.refine", "integer"),
        ({"arms": {"oracle": {"refine": 1.5}}}, "arms.oracle.refine", "integer"),
        ({"arms": {"oracle": {"grid": [0.01, 0.1], "refine": 1}}}, "arms.oracle.refine", "at least 3"),
        ({"arms": {"oracle": {"grid": [0.1]}}}, "arms.oracle.grid", "at least 2"),
    ):
        path = write_study("bad", changes)
        assert main(["run", str(path), "--out", str(path.parent / "never")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and field in err[0] and says in err[0], (changes, err)
        assert not (path.parent / "never").exists()


def test_fused_sequential_and_seeds_fused_rounds_give_the_same_runs(local_ray, write_study, tmp_path):
    """fuse_seeds on: one Oracle trial per cycle, both seeds in one stack; off: one trial per
    (cycle, seed), one run after another. The same run ids, chosen the same. (One seed's fused
    round: tests/test_own_code.py's torchvision model, tests/test_execute.py.)"""
    results, lines = {}, {}
    ways = {"seeds": {"fuse": "on", "fuse_seeds": "on"}, "off": {"fuse": "off"}}
    for way, execution in ways.items():
        study = load_study(write_study(f"fuse-{way}", {"execution": execution, "pruning": {"cycles": 2}}))
        out, stream = tmp_path / way, io.StringIO()
        assert run_sweep(study, out=out, stream=stream).done
        lines[way] = stream.getvalue()
        results[way] = {r["run_id"]: r for r in read_rows(out) if r["arm"] == "oracle"}
        trials = [p for p in (out / "ray").glob("*/*/result.json")
                  if '"arm": "oracle"' in p.read_text().splitlines()[0]]
        per_cycle = 1 if way == "seeds" else len(study.seeds)
        assert len(trials) == study.cycles * per_cycle, way
    assert "trained fused (3 values x 2 seeds; execution.fuse: on)" in lines["seeds"]
    assert results["off"].keys() == results["seeds"].keys() and len(results["off"]) == 3 * 2 * 2
    for rid, alone in results["off"].items():
        fused = results["seeds"][rid]
        assert (fused["status"], fused["chosen"]) == (alone["status"], alone["chosen"])
        # float32, far below the divergence edge: the same runs up to rounding order
        assert abs(float(fused["val_acc"]) - float(alone["val_acc"])) <= 0.02, (fused, alone)


def test_execution_is_validated(write_study, capsys):
    for changes, field in (({"execution": {"fuse": "yes"}}, "execution.fuse"),
                           ({"execution": {"max_members": 0}}, "execution.max_members"),
                           ({"execution": {"max_members": -4}}, "execution.max_members"),
                           ({"execution": {"fuse_seeds": "always"}}, "execution.fuse_seeds"),
                           ({"execution": {"threads": 2}}, "execution.threads")):
        path = write_study("bad-exec", changes)
        assert main(["run", str(path), "--out", str(path.parent / "never")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {field}"), err
        assert not (path.parent / "never").exists()


def test_tune_hears_every_epoch_of_every_run_and_the_rows_stay_the_runs(local_ray, write_study, tmp_path):
    """Issue 21: each trial reports its runs' learning curves to Tune epoch by epoch
    (oracle.sweep.epochs), the values of the curve each run stores; the ledger and the Oracle's
    rounds see only the finished runs, so results.csv is what it was."""
    import json

    from oracle.store.runs import RunStore

    study = load_study(write_study("epochs", {"task": {"epochs": 3, "eval_every": 1}, "pruning": {"cycles": 2},
                                              "seeds": [0]}))
    out = tmp_path / "out"
    assert run_sweep(study, out=out, stream=io.StringIO()).done
    rows = read_rows(out)
    assert len(rows) == (3 + 3) * 2 and {r["status"] for r in rows} == {"ok"}
    store = RunStore(out / "runs")
    by_point = {(r["arm"], int(r["cycle"]), float(r["max_lr"])): store.find(r["run_id"])["curve"] for r in rows}
    heard = 0
    for result_file in (out / "ray").glob("*/*/result.json"):
        lines = [json.loads(line) for line in result_file.read_text().splitlines()]
        epochs = [r for r in lines if r.get("epoch_report")]
        runs = [r for r in lines if not r.get("epoch_report")]
        assert runs and all("run_id" in r for r in runs)
        for report in epochs:
            members = ({float(lr): m for lr, m in report["members"].items()} if "members" in report
                       else {report["max_lr"]: report})
            for max_lr, said in members.items():
                curve = by_point[(report["arm"], report["cycle"], max_lr)]
                stored = curve[report["epoch"] - 1]
                assert stored["step"] == report["step"] < report["total_steps"]  # the last epoch is the result's
                assert (said["val_acc"], said["train_loss"]) == (stored["val_acc"], stored["train_loss"])
                heard += 1
        # Epochs come before their run's result, in order.
        order = [(r["cycle"], r["epoch"]) for r in epochs]
        assert order == sorted(order)
    # 3 epochs a run: the first two reported, the third is the run's result; a run another
    # arm's trial had trained already (reused) reports none.
    trained = sum(r["reused"] == "False" for r in rows)
    assert trained >= 2 * 3 and heard == 2 * trained
