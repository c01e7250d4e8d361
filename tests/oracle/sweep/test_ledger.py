"""The ledger as the Tune callback it is: rows from results and errors, the Oracle's
decisions from the searcher, the per-cycle lines and results.csv.

Tune calls a callback with its Trial; these tests hand the ledger real Tune Trials (stubs:
no trainable behind them) with the configs the searcher builds. The end-to-end sweep tests
(test_sweep.py) drive the same ledger through a real Tune run.
"""

from __future__ import annotations

import csv
import io
import math

from ray.tune.experiment import Trial

from oracle.store.identity import RunKey
from oracle.study import load_study
from oracle.sweep.ledger import Ledger
from oracle.sweep.trial import TrialConfig
from silo.accel import ExecutionConfig

STUDY = load_study("studies/smoke.yaml")  # seeds (0, 1), grid (0.01, 0.0547723, 0.3)
GRID = list(STUDY.grid)


def _trial(tid: str, arm: str, seed: int, first_cycle: int, max_lrs, parent=None) -> Trial:
    """A one-seed trial as the searcher writes it (oracle.sweep.trial.TrialConfig, as Tune carries it)."""
    config = TrialConfig(arm=arm, seed=seed, first_cycle=first_cycle, max_lrs=tuple(max_lrs), parent_run_id=parent,
                         wait_for_winners=None, task=STUDY.task_for_arm(arm), store="runs", threads=1,
                         round=arm == "oracle", fuse=STUDY.execution.fuse, execution=ExecutionConfig(),
                         seeds=(seed,), parent_run_ids=(parent,))
    return Trial("RunTrainable", config=config.to_tune(), trial_id=tid, stub=True)


def _result(seed: int, cycle: int, max_lr: float, val: float, run_id: str, status: str = "ok") -> dict:
    return {"seed": seed, "cycle": cycle, "max_lr": max_lr, "val_acc": val, "test_acc": val, "status": status,
            "run_id": run_id, "parent_run_id": None, "sparsity": 0.0, "reused": False}


def _ledger() -> tuple[Ledger, io.StringIO]:
    stream = io.StringIO()
    return Ledger(STUDY, stream=stream), stream


def _report(ledger: Ledger, trial: Trial, result: dict) -> None:
    ledger.on_trial_result(iteration=0, trials=[], trial=trial, result=result)


def _oracle_lines(stream: io.StringIO) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if line.startswith("oracle ")]


def test_the_oracle_line_waits_for_the_winners_row_of_every_seed():
    ledger, stream = _ledger()
    rounds = [_trial(f"t{s}", "oracle", s, 0, GRID) for s in STUDY.seeds]
    vals = {0: [0.5, 0.7, 0.4], 1: [0.6, 0.9, 0.3]}
    for k, v in enumerate(GRID):
        _report(ledger, rounds[0], _result(0, 0, v, vals[0][k], f"a{k}"))
    for k, v in enumerate(GRID[:1]):
        _report(ledger, rounds[1], _result(1, 0, v, vals[1][k], f"b{k}"))
    assert {r["chosen"] for r in ledger.rows} == {None}  # the round is open
    # The searcher may decide before the ledger has seed 1's winner: no line yet.
    ledger.round_closed(0, GRID[1], len(GRID))
    assert _oracle_lines(stream) == []
    for k, v in enumerate(GRID[1:], start=1):
        _report(ledger, rounds[1], _result(1, 0, v, vals[1][k], f"b{k}"))
    (line,) = _oracle_lines(stream)
    assert f"max_lr {GRID[1]:<9.4g} val {(0.7 + 0.9) / 2:6.1%}  best of 3" in line
    chosen = {(r["seed"], r["max_lr"]): r["chosen"] for r in ledger.rows}
    assert chosen == {(s, v): v == GRID[1] for s in STUDY.seeds for v in GRID}


def test_an_oracle_that_stops_says_so_and_chooses_nothing():
    ledger, stream = _ledger()
    trial = _trial("t0", "oracle", 0, 0, GRID)
    _report(ledger, trial, _result(0, 0, GRID[0], math.nan, "a0", status="diverged"))
    ledger.round_closed(0, None, len(GRID))
    assert "no grid value ran ok for every seed: the Oracle stops" in _oracle_lines(stream)[0]
    assert [r["chosen"] for r in ledger.rows] == [False]


def test_a_retried_round_reports_its_members_again_and_the_first_row_stays():
    ledger, _ = _ledger()
    trial = _trial("t0", "oracle", 0, 0, GRID)
    _report(ledger, trial, _result(0, 0, GRID[0], 0.5, "a0"))
    _report(ledger, trial, dict(_result(0, 0, GRID[0], 0.5, "a0"), reused=True))
    assert len(ledger.rows) == ledger.size == 1 and ledger.count("trained") == 1 and ledger.count("reused") == 0


def test_a_chain_that_fails_records_the_rest_of_its_cycles_failed():
    ledger, stream = _ledger()
    silo = STUDY.schedule("silo")
    max_lrs = [silo.max_lr(q) for q in range(STUDY.cycles)]
    trial = _trial("c0", "silo", 0, 0, max_lrs)
    first = RunKey(STUDY.task_for_arm("silo"), seed=0, cycle=0, max_lr=max_lrs[0], parent_run_id=None)
    _report(ledger, trial, _result(0, 0, max_lrs[0], 0.8, first.run_id))
    ledger.on_trial_error(iteration=0, trials=[], trial=trial)
    rows = sorted((r for r in ledger.rows if r["arm"] == "silo"), key=lambda r: r["cycle"])
    assert [r["status"] for r in rows] == ["ok", "failed", "failed"]
    # The first failed run continues the last finished one, so its id is known; the next never existed.
    assert rows[1]["run_id"] == first.next_cycle(max_lrs[1]).run_id and rows[1]["parent_run_id"] == first.run_id
    assert rows[2]["run_id"] is None and rows[2]["parent_run_id"] is None
    assert ledger.count("failed") == 2
    # With one seed of two done, no line for the arm's cycles yet.
    assert not any(line.startswith("silo ") for line in stream.getvalue().splitlines())


def test_a_round_released_early_that_fails_takes_its_parent_from_the_previous_winner():
    ledger, _ = _ledger()
    task = STUDY.task_for_arm("oracle")
    for s in STUDY.seeds:
        trial = _trial(f"r0s{s}", "oracle", s, 0, GRID)
        for v in GRID:
            key = RunKey(task, seed=s, cycle=0, max_lr=v, parent_run_id=None)
            _report(ledger, trial, _result(s, 0, v, 0.9 if v == GRID[2] else 0.5, key.run_id))
    ledger.round_closed(0, GRID[2], len(GRID))
    early = _trial("r1s1", "oracle", 1, 1, GRID[:2], parent=None)  # waited for round 0's winners
    _report(ledger, early, _result(1, 1, GRID[0], 0.6, "x"))
    ledger.on_trial_error(iteration=0, trials=[], trial=early)
    (failed,) = [r for r in ledger.rows if r["status"] == "failed"]
    winner = RunKey(task, seed=1, cycle=0, max_lr=GRID[2], parent_run_id=None)
    assert (failed["cycle"], failed["max_lr"]) == (1, GRID[1])
    assert failed["run_id"] == winner.next_cycle(GRID[1]).run_id
    assert failed["chosen"] is None  # round 1 is still open


def test_results_csv_is_sorted_and_says_what_was_chosen(tmp_path):
    ledger, _ = _ledger()
    for s in reversed(STUDY.seeds):
        trial = _trial(f"t{s}", "oracle", s, 0, GRID)
        for v in reversed(GRID):
            _report(ledger, trial, _result(s, 0, v, 0.5 + v, f"{s}{v}"))
    # A chain arm's run at the winning max_lr is not the Oracle's to choose.
    _report(ledger, _trial("c0", "lr_rewinding", 0, 0, [GRID[2]]), _result(0, 0, GRID[2], 0.8, "c"))
    ledger.round_closed(0, GRID[2], len(GRID))
    ledger.write_csv(tmp_path / "results.csv")
    with (tmp_path / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["arm"], int(r["seed"]), float(r["max_lr"])) for r in rows] == (
        [("lr_rewinding", 0, GRID[2])] + [("oracle", s, v) for s in STUDY.seeds for v in GRID])
    assert [r["chosen"] for r in rows] == [""] + ["False", "False", "True"] * 2
    assert [r["refined"] for r in rows] == [""] + ["False"] * 6


def test_a_trial_released_early_and_then_not_needed_adds_no_row():
    ledger, _ = _ledger()
    trial = _trial("t0", "oracle", 0, 1, GRID)
    _report(ledger, trial, {"status": "skipped", "arm": "oracle", "val_acc": math.nan, "done": True})
    assert ledger.rows == []


def test_the_driver_callbacks_pickle_without_their_stream_storage_or_bar(tmp_path):
    """Tune pickles its callbacks into the experiment folder: the stream, the storage's
    writer and the tqdm bar stay behind, everything else travels, and a restored copy
    prints to stdout."""
    import pickle
    import sys

    from oracle.sweep.live import LiveRecord, Progress

    ledger, out = _ledger()
    ledger._errors_said.add("boom")
    live = LiveRecord(STUDY, ledger, f"sqlite:///{tmp_path / 'optuna.db'}", tmp_path, stream=out)
    live._writer, live.flushes = object(), 3
    progress = Progress(STUDY, ledger, stream=out, quiet=True)
    progress._bar = object()
    for callback, attr, left in ((ledger, "_stream", ()), (live, "stream", ("_writer",)),
                                 (progress, "stream", ("_bar",))):
        again = pickle.loads(pickle.dumps(callback))
        assert getattr(again, attr) is sys.stdout
        assert all(getattr(again, name) is None for name in left)
    assert pickle.loads(pickle.dumps(ledger))._errors_said == {"boom"}
    assert pickle.loads(pickle.dumps(live)).flushes == 3 and pickle.loads(pickle.dumps(progress)).quiet
