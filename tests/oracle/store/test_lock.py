"""One driver per output folder: a second run into the same --out is refused at once; runs
into different folders go on side by side; a lock left by a killed driver blocks nothing."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
import time

import pytest

from oracle.cli import main
from oracle.store.lock import LOCK_NAME, DriverLock, FolderInUse, driver_alive, read_holder
from tests._faults import stall
from tests._processes import driver

pytestmark = pytest.mark.integration  # every test here starts Ray, a server or a driver

ENV = dict(os.environ, PYTHONUNBUFFERED="1")


def test_the_lock_names_its_holder_and_is_free_again_after(tmp_path):
    with DriverLock(tmp_path):
        assert read_holder(tmp_path / LOCK_NAME)["pid"] == os.getpid()
        assert driver_alive(tmp_path)
        with pytest.raises(FolderInUse, match=f"in use by another run \\(process {os.getpid()} on "):
            DriverLock(tmp_path).__enter__()
    assert not driver_alive(tmp_path)
    with DriverLock(tmp_path):  # taken again at once
        pass


def test_a_lock_file_left_by_a_dead_process_blocks_nothing(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 999999999, "host": "gone"}))
    assert not driver_alive(tmp_path)
    with DriverLock(tmp_path):
        assert read_holder(tmp_path / LOCK_NAME)["pid"] == os.getpid()


def _rows(out):
    with (out / "results.csv").open() as f:
        return {(r["arm"], r["seed"], r["cycle"], r["max_lr"]): (r["run_id"], r["val_acc"]) for r in csv.DictReader(f)}


def _entries(folder):
    """{name: mtime_ns} of a folder's entries."""
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


@pytest.mark.timeout(400)
def test_two_folders_run_side_by_side_and_a_second_driver_on_one_is_refused(write_study, tmp_path, capsys):
    path = write_study("twice", {"pruning": {"cycles": 1}, "seeds": [0]})
    outs = [tmp_path / "a", tmp_path / "b"]
    with contextlib.ExitStack() as running:
        # The holder's lr_warmup trial stalls until the refusal is checked: this one-cycle
        # study must not end, and free the folder, while the second driver tries it.
        held = running.enter_context(stall(tmp_path / "stall-once"))
        envs = [dict(ENV, **held.env), ENV]
        procs = [running.enter_context(driver([sys.executable, "-m", "oracle.cli", "run", str(path),
                                               "--out", str(o)], env)) for o, env in zip(outs, envs)]
        deadline = time.monotonic() + 120
        # Until the holder has written what it writes before starting Ray (lock, plan.json,
        # study.yaml): a snapshot taken earlier caught its plan.json half-written (a temp file).
        while not (outs[0] / "study.yaml").exists():
            assert procs[0].poll() is None, procs[0].stdout.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        holder = read_holder(outs[0] / LOCK_NAME)["pid"]
        before = _entries(outs[0])
        t0 = time.monotonic()
        assert main(["run", str(path), "--out", str(outs[0])]) == 2
        refused_in = time.monotonic() - t0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "in use by another run" in err[0] and f"process {holder} " in err[0], err
        assert refused_in < 5, refused_in
        # The refused run wrote nothing: what was there is untouched, and anything new is what
        # the holder itself makes once its Ray is up (on a slow machine, during the refusal).
        after = _entries(outs[0])
        assert {name: after.get(name) for name in before} == before
        assert set(after) - set(before) <= {"ray", "runs"}, sorted(after)
        held.release()
        for p in procs:
            out, _ = p.communicate(timeout=300)
            assert p.returncode == 0, out.decode()
    a, b = _rows(outs[0]), _rows(outs[1])
    assert a == b and len(a) == 3 + 3  # the same runs and accuracies, side by side or not
    assert not driver_alive(outs[0]) and not driver_alive(outs[1])
