"""The Optuna record on a real PostgreSQL server, as a cluster would hold it.

The fixture starts a throwaway server of Debian's `postgresql` package: its own data folder,
bound to 127.0.0.1 on a free port, trust auth, and stops it by its own data folder
(`pg_ctl stop -D`), never any other server. initdb refuses to run as root, so as root the
server runs as the `postgres` system user. Without the server binaries the tests skip and
say how to install them.
"""

from __future__ import annotations

import csv
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from oracle.cli import main
from oracle.store.record import load_record, record_rows, record_study, study_attrs
from oracle.study import load_study
from tests._fake_record import CYCLES, GRID, NAME, SEEDS, fake_rows, fake_study
from tests._faults import stall
from tests._processes import Output, driver

pytestmark = pytest.mark.integration  # every test here starts Ray, a server or a driver

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (it is in the test extra)")


def _server_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return versions[-1] if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """One throwaway PostgreSQL server, stopped and started by its own data folder."""

    pg_ctl: str
    as_user: list[str]
    folder: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://silo@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        subprocess.run([*self.as_user, self.pg_ctl, "-D", str(self.folder / "data"), "-l",
                        str(self.folder / "server.log"), "-w", "start",
                        "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder}"],
                       check=True, capture_output=True, text=True, timeout=120)

    def stop(self) -> None:
        subprocess.run([*self.as_user, self.pg_ctl, "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def postgres():
    initdb, pg_ctl = _server_binary("initdb"), _server_binary("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install -y postgresql")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="silo-pg-"))
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder)
            pytest.skip("running as root and there is no `postgres` user to run the server as")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    server = Server(pg_ctl, as_user, folder, _free_port())
    try:
        subprocess.run([*as_user, initdb, "-D", str(folder / "data"), "-U", "silo", "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True, text=True, timeout=120)
        server.start()
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"the PostgreSQL server did not start: {exc.stderr or exc.stdout}")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_url(postgres):
    return postgres.url


@pytest.fixture
def database(postgres_url):
    """An empty database per test, dropped after it."""
    name = f"t{os.urandom(4).hex()}"
    _admin(postgres_url, f"CREATE DATABASE {name}")
    try:
        yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    finally:  # a connection of its own: a test may have restarted the server meanwhile
        _admin(postgres_url, f"DROP DATABASE {name} WITH (FORCE)")


def _admin(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(statement)


def test_a_record_on_postgresql_reads_back_and_recording_again_adds_nothing(database):
    study = fake_study()
    first = record_study(study, fake_rows(study), database)
    assert first.added == len(GRID) * len(SEEDS) * CYCLES + 2 * len(SEEDS) * CYCLES
    again = record_study(study, fake_rows(study), database)
    assert (again.added, again.unchanged, again.superseded) == (0, first.added, 0)
    record = load_record(database, NAME)
    got = {(r["arm"], r["seed"], r["cycle"], r["max_lr"]): (r["status"], r["run_id"], r["chosen"])
           for r in record.rows.to_dict("records")}
    want = {(r["arm"], r["seed"], r["cycle"], r["max_lr"]): (r["status"], r["run_id"], r["chosen"])
            for r in fake_rows(study)}
    assert got == want
    assert record.attrs["grid"] == GRID and record.superseded == 0
    assert "silo@127.0.0.1" in record.storage  # redacted URL, no password to hide here


def test_a_later_row_of_a_run_supersedes_the_earlier_one_on_postgresql(database):
    study = fake_study()
    row = dict(fake_rows(study)[0], status="failed", val_acc=float("nan"), test_acc=float("nan"))
    record_rows(database, NAME, study_attrs(study), [row])
    result = record_rows(database, NAME, study_attrs(study), [dict(row, status="ok", val_acc=0.5, test_acc=0.5)])
    assert (result.added, result.superseded) == (1, 1)
    record = load_record(database, NAME)
    assert record.superseded == 1 and record.rows["status"].tolist() == ["ok"]


def test_report_and_status_read_a_postgresql_record(database, tmp_path, capsys):
    study = fake_study()
    record_study(study, fake_rows(study), database)
    assert main(["report", "--storage", database, "--study", NAME, "--out", str(tmp_path)]) == 0
    assert (tmp_path / "report.html").is_file() and (tmp_path / "summary.json").is_file()
    assert main(["status", "--storage", database, "--study", NAME]) == 0
    assert NAME in capsys.readouterr().out


def test_a_postgresql_server_that_does_not_answer_is_one_line_and_exit_2(capsys):
    url = f"postgresql://silo@127.0.0.1:{_free_port()}/postgres"  # nothing listens there
    assert main(["status", "--storage", url, "--study", NAME]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "127.0.0.1" in err


@pytest.mark.parametrize("scheme, module, package", [
    ("postgresql+psycopg2", "psycopg2", "pip install psycopg2-binary"),
    ("mysql+mysqldb", "MySQLdb", "pip install mysqlclient"),
])
def test_a_missing_database_driver_names_the_package_to_install(scheme, module, package, capsys):
    import importlib.util

    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here, so it cannot be missing")
    assert main(["status", "--storage", f"{scheme}://silo@127.0.0.1:{_free_port()}/x", "--study", NAME]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"its database driver is not installed ({package})") and "\n" not in err


def test_the_smoke_study_records_into_postgresql_as_it_runs(database, tmp_path, capsys):
    # The cluster's way: the driver writes the live record and the final one to PostgreSQL,
    # the output folder points at it, and the report is rebuilt from it alone.
    out = tmp_path / "smoke"
    assert main(["run", "studies/smoke.yaml", "--out", str(out), "--storage", database, "--record-every", "1"]) == 0
    assert "live record" in capsys.readouterr().out
    study = load_study("studies/smoke.yaml")
    record = load_record(database, "smoke")
    planned = (len(study.grid) + len(study.arm_names()) - 1) * len(study.seeds) * study.cycles
    assert len(record.rows) == planned and set(record.rows["status"]) == {"ok"}
    assert record.rows[record.rows["arm"] == "oracle"]["chosen"].sum() == study.cycles * len(study.seeds)
    assert main(["report", str(out), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "summary.json").read_text() == (out / "summary.json").read_text()


# -- the storage goes away mid-sweep -----------------------------------------------------

ENV = dict(os.environ, PYTHONUNBUFFERED="1")


def _complete_runs(out: Path) -> set[str]:
    return {p.parent.name for p in (out / "runs").glob("*/COMPLETE")}


def _wait(proc, what, *, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert proc.poll() is None, "the driver ended first"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _outage_study(write_study, seeds: list[int], cycles: int = 3):
    # 2 epochs a run: enough runs still to train after the outage is noticed, on a loaded machine
    return write_study("outage", {"seeds": seeds, "pruning": {"cycles": cycles}, "task": {"epochs": 2}})


def _run_cmd(path, out, url) -> list[str]:
    return [sys.executable, "-m", "oracle.cli", "run", str(path), "--out", str(out), "--storage", url,
            "--record-every", "1"]


def _by_key(rows) -> dict[tuple, tuple]:
    """(arm, seed, cycle, max_lr) -> (run id, status, val_acc): two arms may share a run."""
    return {(r["arm"], int(r["seed"]), int(r["cycle"]), float(r["max_lr"])):
            (r["run_id"], r["status"], float(r["val_acc"])) for r in rows}


def _record_by_key(url: str) -> dict[tuple, tuple]:
    return _by_key(load_record(url, "outage").rows.to_dict("records"))


def _csv_by_key(out: Path) -> dict[tuple, tuple]:
    with (out / "results.csv").open() as f:
        return _by_key(csv.DictReader(f))


@pytest.mark.timeout(400)
def test_postgresql_stopped_mid_sweep_and_started_again_the_sweep_goes_on_and_the_record_catches_up(
        postgres, database, write_study, tmp_path):
    # The smoke study (36 runs): long enough for an outage and a catch-up while it trains.
    path, out = _outage_study(write_study, [0, 1]), tmp_path / "out"
    # A trial step stalls until the live record has caught up, so the sweep cannot end first:
    # its retries wait longer after each failure, and in a clean-clone run the smoke study
    # finished before the retry after the restart (seen once).
    with stall(tmp_path / "stall-once") as held, driver(_run_cmd(path, out, database),
                                                         dict(ENV, **held.env)) as proc:
        output = Output(proc)
        try:
            _wait(proc, lambda: (out / "record.json").exists())  # the live record has written once
            postgres.stop()
            try:
                _wait(proc, lambda: "does not answer" in output.text())
                down = _complete_runs(out)
                _wait(proc, lambda: len(_complete_runs(out)) >= len(down) + 2)  # training goes on
            finally:
                postgres.start()
            _wait(proc, lambda: "answers again" in output.text())  # the live record, not the final one
        finally:
            held.release()
        proc.wait(timeout=300)
        printed = output.close()
        stalled = held.taken  # before leaving `stall`, which takes the token away
    assert proc.returncode == 0, printed
    assert stalled, "no lr_warmup step took the stall token"
    assert "training goes on" in printed, printed
    # The live record caught up before the end: the line says so.
    assert re.search(r"record: postgresql://\S+ answers again after \d+s; \d+ run\(s\) recorded", printed), printed
    recorded = _record_by_key(database)
    assert len(recorded) == 36 and {s for _, s, _ in recorded.values()} == {"ok"}
    assert recorded == _csv_by_key(out)


@pytest.mark.timeout(400)
def test_postgresql_gone_for_good_ends_with_the_count_not_recorded_and_the_rerun_records_them(
        postgres, database, write_study, tmp_path):
    path, out = _outage_study(write_study, [0], cycles=2), tmp_path / "out"  # 12 runs
    cmd = _run_cmd(path, out, database)
    try:
        with driver(cmd, ENV) as proc:
            # At the first finished run, so runs remain to train after the outage however
            # loaded the machine is (the live record may or may not have written it yet).
            _wait(proc, lambda: any((out / "runs").glob("*/COMPLETE")))
            postgres.stop()
            printed, _ = proc.communicate(timeout=300)
    finally:
        postgres.start()
    printed = printed.decode()
    assert proc.returncode == 1, printed
    errors = [line for line in printed.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, printed
    said = re.match(r"error: (\d+) of 12 runs are not recorded in postgresql://silo@127\.0\.0\.1:\d+/\w+ \(", errors[0])
    assert said and "rerun the same command to record them" in errors[0], errors[0]
    # Nothing is lost: every run is in results.csv and the run store.
    rows = _csv_by_key(out)
    assert len(rows) == 12 and {run_id for run_id, _, _ in rows.values()} == _complete_runs(out)
    # The count is what the record lacks: the live record wrote the rest before the outage.
    before = _record_by_key(database) if (out / "record.json").exists() else {}
    assert 0 < int(said.group(1)) == 12 - len(before)
    again = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "trained: 0, reused: 12" in again.stdout
    assert _record_by_key(database) == rows
