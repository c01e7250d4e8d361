"""Watching a study while it runs: the live Optuna record (here Optuna's journal file),
`silo-oracle status`, and a report of a study in progress, with a real driver process."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from oracle.cli import main
from tests._faults import stall
from tests._processes import driver

pytestmark = pytest.mark.integration  # every test here starts Ray, a server or a driver

ENV = dict(os.environ, PYTHONUNBUFFERED="1")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def status(capsys, folder) -> dict:
    assert main(["status", str(folder), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.timeout(400)
def test_the_record_fills_up_while_the_driver_runs(write_study, tmp_path, capsys):
    path = write_study("live", {"pruning": {"cycles": 3}})
    out = tmp_path / "out"
    journal = tmp_path / "record.log"
    cmd = [sys.executable, "-m", "oracle.cli", "run", str(path), "--out", str(out),
           "--storage", f"journal:{journal}", "--record-every", "1"]
    seen, partial, first = [], None, None
    # A trial step stalls until a report of the partial record is built: a 3-cycle smoke study
    # can otherwise finish between two polls on a busy machine, and there was no moment with
    # some but not all runs recorded (seen in CI).
    with stall(tmp_path / "stall-once") as held, driver(cmd, dict(ENV, **held.env)) as proc:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.25)
            if not out.exists():
                continue
            # Polled from the first second: once the driver holds the folder (its plan written
            # as it takes the lock), status answers, long before the record's first write.
            if main(["status", str(out), "--json"]) != 0:
                err = capsys.readouterr().err
                assert first is None and not (out / "plan.json").exists(), err
                assert f"{out}: no Optuna record (optuna.db, record.json), no plan.json and no running" in err, err
                continue
            s = json.loads(capsys.readouterr().out)
            if first is None:
                first = dict(s, record=(out / "record.json").exists())
            if s["driver_alive"]:
                seen.append(s["runs_done"])
                if partial is None and 0 < s["runs_done"] < s["runs_planned"]:
                    attempt = tmp_path / f"partial-{len(seen)}"
                    assert main(["report", str(out), "--out", str(attempt)]) == 0
                    capsys.readouterr()
                    # The sweep may have ended while the report was being built: keep one
                    # that was built from a record still in progress.
                    if not json.loads((attempt / "summary.json").read_text())["progress"]["complete"]:
                        partial = attempt
                        held.release()
        held.release()  # had no partial moment been seen
        printed, _ = proc.communicate(timeout=120)
        stalled = held.taken  # before leaving `stall`, which takes the token away
    assert proc.returncode == 0, printed.decode()
    assert stalled, "no lr_warmup step took the stall token"
    assert first is not None and first["record"] is False, first  # it answered before the record existed
    assert (first["state"], first["driver_alive"], first["runs_done"], first["runs_planned"]) == (
        "running", True, 0, 36), first
    assert first["arms"]["oracle"]["planned"] == 18
    from oracle.report.status import render

    said = render(first)
    assert "study live: running (driver alive)" in said and "0 of 36 runs done" in said, said
    rising = sorted(set(seen))
    assert len(rising) >= 2 and seen == sorted(seen), seen  # it rose while the driver ran
    final = status(capsys, out)
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert final["runs_done"] == len(rows) == final["runs_planned"] == 36
    assert final["state"] == "finished" and not final["driver_alive"]
    assert final["arms"]["oracle"] == {"done": 18, "planned": 18, "ok": 18, "diverged": 0, "failed": 0}
    text = subprocess.run([sys.executable, "-m", "oracle.cli", "status", str(out)], env=ENV,
                          capture_output=True, text=True).stdout
    assert "study live: finished" in text and "36 of 36 runs done" in text
    assert "live record" in printed.decode()  # the closing line says what recording cost

    # The report built mid-run says what it is, and marks the cycles not yet judged as such.
    assert partial is not None, "no moment with some but not all runs recorded"
    page = (partial / "report.html").read_text()
    banner = re.search(r'<p class="progress" id="progress">in progress: (\d+) of 36 runs', page)
    assert banner and 0 < int(banner.group(1)) < 36
    summary = json.loads((partial / "summary.json").read_text())
    assert summary["progress"]["complete"] is False
    assert "failed" not in " ".join(summary["messages"])
    if CHROMIUM:
        dom = subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
                              f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                              (partial / "report.html").as_uri()],
                             capture_output=True, text=True, timeout=90).stdout
        assert 'id="progress"' in dom and 'id="verdicts"' in dom


def test_status_of_something_that_is_not_a_study_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path}: no Optuna record (optuna.db, record.json), no plan.json and no running "
                   "driver here: not a study's output folder, or its run has not started; or pass --storage URL"]
    garbled = tmp_path / "garbled.log"
    garbled.write_text("this is not an Optuna journal\n")
    assert main(["status", "--storage", f"journal:{garbled}", "--study", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # Optuna's journal reader skips lines it cannot parse: a garbled log holds no study.
    assert len(err) == 1 and "holds no silo-oracle study" in err[0], err
    assert garbled.read_text() == "this is not an Optuna journal\n"  # never written to
    assert main(["status", "--storage", f"journal:{tmp_path / 'none.log'}", "--study", "x"]) == 2
    assert "no such file" in capsys.readouterr().err


def _screen_lines(raw: str) -> list[str]:
    """What a terminal shows of `raw`, line by line: each carriage return goes back to the
    line's start and what follows overwrites it (ANSI sequences dropped)."""
    raw = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)
    shown = []
    for line in raw.replace("\r\n", "\n").split("\n"):
        cells: list[str] = []
        for part in line.split("\r"):
            cells[:len(part)] = list(part)
        shown.append("".join(cells).rstrip())
    return shown


@pytest.mark.timeout(300)
def test_the_terminal_stays_readable_under_a_pty(write_study, tmp_path):
    # On a terminal the per-cycle lines are written above the live progress bar (tqdm.write):
    # no line on the screen holds both a bar and a cycle line.
    import fcntl
    import pty
    import struct
    import termios

    from tests._processes import stop_group

    path = write_study("tty", {"pruning": {"cycles": 2}})
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 120 columns
    proc = subprocess.Popen([sys.executable, "-m", "oracle.cli", "run", str(path), "--out", str(tmp_path / "out")],
                            stdin=slave, stdout=slave, stderr=slave, env=ENV, start_new_session=True)
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the driver closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=120) == 0
    finally:
        stop_group(proc)
        os.close(master)
    raw = b"".join(chunks).decode("utf-8", "replace")
    assert "run/s]" in raw or "run]" in raw, raw[-2000:]  # a bar was drawn
    shown = _screen_lines(raw)
    cycles = [line for line in shown if re.search(r"cycle +\d+ +sparsity", line)]
    assert len(cycles) >= 4, shown
    bar = re.compile(r"\d+/\d+ \[|run/s\]|it/s\]")
    glued = [line for line in shown if bar.search(line) and re.search(r"cycle +\d", line)]
    assert glued == [], glued
    assert all(line.startswith(("oracle", "silo", "lr_")) for line in cycles), cycles
