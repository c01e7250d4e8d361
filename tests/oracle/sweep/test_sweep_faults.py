"""A sweep that is interrupted or whose trials fail, as real driver processes on a local Ray
(127.0.0.1): retried and failed trials, Ctrl-C, kill -9 and SIGTERM, and the reruns after them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from oracle.study import load_study
from tests._processes import driver, pids_with_env
from tests.oracle.sweep.test_sweep import ENV, read_rows

pytestmark = pytest.mark.integration  # every test here starts Ray or a driver

def _complete_runs(out: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*/COMPLETE")}


def _wait_for_runs(proc: subprocess.Popen, out: Path, runs: int) -> None:
    """Return once `runs` runs of the running driver are complete in the store."""
    deadline = time.monotonic() + 240
    while len(_complete_runs(out) if (out / "runs").exists() else {}) < runs:
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "no runs finished in time"
        time.sleep(0.1)


def test_a_trial_that_raises_once_is_retried_and_the_sweep_completes(write_study, tmp_path):
    path = write_study("flaky", {"pruning": {"cycles": 1}, "seeds": [0]})  # 5 runs to train, one retried
    marker = tmp_path / "fault-once"
    marker.write_text("")
    out = tmp_path / "out"
    env = dict(ENV, SILO_ORACLE_FAULT_ONCE=str(marker))
    done = subprocess.run([sys.executable, "-m", "oracle.cli", "run", str(path), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not marker.exists(), "the fault was never injected"
    rows = read_rows(out)
    study = load_study(path)
    assert len(rows) == (len(study.grid) + 3) * study.cycles
    assert {r["status"] for r in rows} == {"ok"}
    assert "failed: 0" in done.stdout


def test_a_trial_that_keeps_failing_is_recorded_failed_and_the_sweep_goes_on(write_study, tmp_path):
    path = write_study("broken", {"pruning": {"cycles": 2}, "seeds": [0]})
    marker = tmp_path / "fault-once"
    marker.write_text("")
    out = tmp_path / "out"
    # No retries: the one injected fault fails its trial for good.
    code = ("import sys; from oracle.study import load_study; from oracle.sweep.driver import run_sweep; "
            f"sys.exit(not run_sweep(load_study({str(path)!r}), out={str(out)!r}, max_failures=0).done)")
    done = subprocess.run([sys.executable, "-c", code], env=dict(ENV, SILO_ORACLE_FAULT_ONCE=str(marker)),
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = read_rows(out)
    failed = [r for r in rows if r["status"] == "failed"]
    assert failed, "the injected fault left no failed row"
    oracle_failed = [r for r in failed if r["arm"] == "oracle"]
    if oracle_failed:
        # The fault hit the Oracle's round trial (one seed: all its grid values at once), so
        # no value of cycle 0 is complete and the Oracle stops there, as the rule says; the
        # chain arms go on to the end.
        assert {(r["cycle"], float(r["max_lr"])) for r in oracle_failed} == {("0", v) for v in load_study(path).grid}
        assert "the Oracle stops" in done.stdout
        assert len(rows) == 3 + 3 * 2
    else:
        assert len(rows) == (3 + 3) * 2  # every planned row is there, failed or not
    assert f"failed: {len(failed)}" in done.stdout
    for r in failed:
        assert r["chosen"] != "True"
    # Everything the fault did not touch finished.
    assert sum(r["status"] == "ok" for r in rows) == len(rows) - len(failed)


@pytest.mark.timeout(500)
def test_ctrl_c_then_kill_9_of_the_rerun_then_the_last_rerun_retrains_no_finished_run(write_study, tmp_path):
    """Two ways a driver ends early, one after the other on one folder (one study, so the
    suite pays for one sweep): Ctrl-C exits 130 soon, with results.csv and how to resume;
    kill -9 of the rerun writes nothing on its way out; the third run finishes the study and
    trains no run that either stopped driver had completed."""
    path = write_study("interrupted", {"pruning": {"cycles": 2}, "task": {"epochs": 2}})
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "oracle.cli", "run", str(path), "--out", str(out)]
    with driver(cmd, ENV) as proc:
        _wait_for_runs(proc, out, 4)
        os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends the driver
        t0 = time.monotonic()
        printed, _ = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    assert proc.returncode == 130, printed.decode()
    assert took < 10, took
    assert printed.decode().strip().splitlines()[-1] == (
        "interrupted: rerun the same command to finish; finished runs are kept"), printed.decode()
    rows = read_rows(out)
    assert rows and len(rows) < 24  # what finished is in results.csv; the sweep was not over
    after_ctrl_c = _complete_runs(out)
    with driver(cmd, ENV) as proc:
        _wait_for_runs(proc, out, len(after_ctrl_c) + 4)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    before = _complete_runs(out)
    assert all(before[run_id] == mtime for run_id, mtime in after_ctrl_c.items())  # the rerun reused them
    assert read_rows(out) == rows  # killed: results.csv is still the first driver's
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    after = _complete_runs(out)
    retrained = [run_id for run_id, mtime in before.items() if after[run_id] != mtime]
    assert not retrained, f"trained again: {retrained}"
    rows = read_rows(out)
    assert len(rows) == 24 and {r["status"] for r in rows} == {"ok"}  # (3 grid values + 3 arms) x 2 seeds x 2 cycles
    reused = [r["run_id"] for r in rows if r["reused"] == "True"]
    assert set(before) <= set(reused) and f"reused: {len(reused)}," in done.stdout


@pytest.mark.timeout(400)
def test_sigterm_to_the_process_group_stops_it_as_ctrl_c_does_with_exit_143(write_study, tmp_path):
    """What Slurm (and `kill -- -PGID`) does to a preempted job: SIGTERM to every process of
    the driver's group, its local Ray's daemons and workers included."""
    path = write_study("preempted", {"pruning": {"cycles": 2}, "seeds": [0], "task": {"epochs": 2}})
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "oracle.cli", "run", str(path), "--out", str(out)]
    # Ray's temp folder of its own marks every process this driver's Ray starts, in any group
    # (short, under /tmp: Ray's socket paths must stay under 108 bytes).
    root = Path(tempfile.mkdtemp(prefix="silo-term-", dir="/tmp"))
    try:
        with driver(cmd, dict(ENV, RAY_TMPDIR=str(root))) as proc:
            _wait_for_runs(proc, out, 3)
            os.killpg(proc.pid, signal.SIGTERM)
            t0 = time.monotonic()
            printed, _ = proc.communicate(timeout=60)
            took = time.monotonic() - t0
            deadline = time.monotonic() + 10  # a daemon's last moments after the driver is gone
            while (left := pids_with_env(f"RAY_TMPDIR={root}")) and time.monotonic() < deadline:
                time.sleep(0.2)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    printed = printed.decode()
    print(f"SIGTERM to exit: {took:.1f} s")  # pytest -s: the figure
    assert proc.returncode == 143, printed
    assert took < 30, took
    assert "SIGTERM received" not in printed  # Ray's C++ stack dump, then abort (exit 134)
    assert printed.strip().splitlines()[-1] == (
        "terminated (SIGTERM): rerun the same command to finish; finished runs are kept"), printed
    assert not left, f"Ray processes of the driver still running: {left}"
    rows = read_rows(out)  # every run the driver had been told of, all finished and stored
    before = _complete_runs(out)
    assert rows and len(rows) < 12 and {r["status"] for r in rows} == {"ok"}
    assert {r["run_id"] for r in rows} <= set(before)
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)  # the same command
    assert done.returncode == 0, done.stdout + done.stderr
    after = _complete_runs(out)
    assert all(after[run_id] == mtime for run_id, mtime in before.items()), "a finished run was trained again"
    rows = read_rows(out)
    assert len(rows) == 12 and {r["status"] for r in rows} == {"ok"}  # (3 grid values + 3 chain arms) x 2 cycles
