"""The cluster path as a user takes it: Ray's own CLI, its default token auth, real processes.

A head and a worker node are started with `ray start` (127.0.0.1, free ports, their own temp
folder and HOME, so no other Ray session on this machine is seen or touched), and
`silo-oracle` runs as a subprocess with a clean environment: by address, as a Ray job with
`--address auto`, and misconfigured. Every process is stopped through its own process group
at the end, pass or fail.
"""

from __future__ import annotations

import contextlib
import csv
import json
import operator
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from oracle.study import load_study
from oracle.sweep.faults import HOLD_ENV, STALL_ENV
from tests._faults import stall
from tests._processes import pids_with_env
from tests._repo import REPO

BIN = Path(sys.executable).parent  # the venv's ray and silo-oracle
# Ray's CLI through this interpreter, not the `ray` script: a venv copied from another
# checkout keeps that checkout's python in its scripts' shebangs, and the nodes (and every
# trial they run) would import that checkout's code.
RAY = [sys.executable, "-m", "ray.scripts.scripts"]
LOCALHOST = "127.0.0.1"

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def clean_env(root: Path, **extra: str) -> dict[str, str]:
    """Only what a user's shell would have: PATH, a HOME (holding Ray's token file) and Ray's
    temp folder. Nothing of pytest's environment (conftest's loopback switch) leaks in."""
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(root / "home"), "RAY_TMPDIR": str(root),
           "LANG": "C.UTF-8"}
    env.update(extra)
    return env


@dataclass
class Nodes:
    """The `ray start` processes of one test cluster; each leads its own process group, which
    the node's daemons (GCS, raylet, dashboard, workers) inherit."""

    root: Path
    port: int = 0
    dashboard_port: int = 0
    groups: list[int] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    def ray_start(self, *args: str, **extra_env: str) -> str:
        proc = subprocess.Popen(
            [*RAY, "start", "--node-ip-address", LOCALHOST, "--num-cpus", "1",
             "--dashboard-agent-listen-port", str(free_port()), "--disable-usage-stats", *args],
            env=clean_env(self.root, **extra_env), cwd=self.root, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.groups.append(proc.pid)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out[-3000:]
        return out

    def wait_for(self, count: int, timeout: float = 120) -> None:
        """Until `count` nodes are alive: `ray start` returns before a worker has registered,
        and a driver that connects earlier sizes its concurrency to the head alone."""
        probe = (f"from oracle.sweep.driver import keep_ray_on_loopback; keep_ray_on_loopback('{self.address}'); "
                 f"import ray; ray.init(address='{self.address}', logging_level='ERROR'); "
                 "print(sum(n['Alive'] for n in ray.nodes()))")
        deadline, alive = time.monotonic() + timeout, []
        env = clean_env(self.root, RAY_AUTH_MODE="token")  # the head has token auth on
        while time.monotonic() < deadline:
            done = subprocess.run([str(BIN / "python"), "-c", probe], env=env, capture_output=True, text=True,
                                  timeout=timeout)
            alive = done.stdout.strip().splitlines()[-1:] or [done.stderr[-300:]]
            if alive == [str(count)]:
                return
            time.sleep(1)
        raise AssertionError(f"the cluster did not reach {count} alive nodes: {alive}")

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pgid in self.groups:
                _signal_group(pgid, sig)
            deadline = time.monotonic() + 10
            while any(_group_alive(g) for g in self.groups) and time.monotonic() < deadline:
                time.sleep(0.2)
        # A job's entrypoint runs in a session of its own; it and anything else that carries
        # this cluster's private temp folder in its environment was started by this test.
        for pid in pids_with_env(f"RAY_TMPDIR={self.root}"):  # a node's folder or one below
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def cluster():
    # A short folder of our own under /tmp: Ray's socket paths must stay under 108 bytes,
    # which pytest's tmp_path can exceed.
    root = Path(tempfile.mkdtemp(prefix="silo-rc-", dir="/tmp"))
    (root / "home").mkdir()
    nodes = Nodes(root)
    try:
        # The token a user creates once on the head; `ray start --head` then turns token
        # auth on by itself (its default), and the worker needs RAY_AUTH_MODE=token to join.
        gen = subprocess.run([*RAY, "get-auth-token", "--generate"],
                             env=clean_env(root), capture_output=True, text=True, timeout=60)
        assert gen.returncode == 0, gen.stderr
        nodes.port, nodes.dashboard_port = free_port(), free_port()
        # HOLD_ENV: while the worker node's stall token lies (`both_nodes`), the head's trials wait.
        head = nodes.ray_start(
            "--head", "--port", str(nodes.port), "--ray-client-server-port", str(free_port()),
            "--dashboard-host", LOCALHOST, "--dashboard-port", str(nodes.dashboard_port),
            **{HOLD_ENV: str(root / STALL_TOKEN)},
        )
        assert "Token authentication is enabled" in head, head[-2000:]
        # Its own temp folder: two nodes on one host sharing one would share one copy of a
        # job's working_dir, which the worker's runtime-env agent deletes when its trials end.
        # WORKER_NODE marks the worker node's `ray start` daemons (its raylet among them), so
        # the lost-node drill can find, and kill, exactly that node.
        # STALL_ENV: the token the lost-node drill lays down to hold a trial of this node.
        nodes.ray_start("--address", nodes.address, "--temp-dir", str(root / "worker"), RAY_AUTH_MODE="token",
                        SILO_TEST_NODE="worker", **{STALL_ENV: str(root / STALL_TOKEN)})
        nodes.wait_for(2)
        yield nodes
    finally:
        nodes.stop()
        shutil.rmtree(root, ignore_errors=True)


def silo_oracle(root: Path, *args: str, timeout: float = 240, **extra_env: str):
    t0 = time.monotonic()
    proc = subprocess.run([str(BIN / "silo-oracle"), *args], cwd=REPO, env=clean_env(root, **extra_env),
                          capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - t0


def read_rows(out: Path) -> list[dict]:
    with (out / "results.csv").open() as f:
        return list(csv.DictReader(f))


STALL_TOKEN = "stall-once"  # in the cluster's root; the worker node's STALL_ENV names it


def both_nodes(cluster: Nodes, stall_the_worker: bool = False):
    """Every trial of the head waits until the worker node has started one (its HOLD_ENV names
    the worker node's token). Left to Ray, the head's one reused actor could train a whole
    smoke study before the worker node's actor had imported torch on a busy machine (seen in
    CI, twice), and the worker node was never used. With `stall_the_worker`, that trial of the
    worker node then stalls, for the drill to kill its node."""
    return stall(cluster.root / STALL_TOKEN, "", released=not stall_the_worker)


@pytest.fixture(scope="module")
def swept(cluster):
    """The smoke study run against the cluster by address, once for the module."""
    out = cluster.root / "shared" / "smoke"
    with both_nodes(cluster):
        proc, took = silo_oracle(cluster.root, "run", "studies/smoke.yaml", "--address", cluster.address,
                                 "--out", str(out))
    return out, proc, took


def test_run_by_address_with_default_token_auth_uses_both_nodes(swept):
    out, proc, _ = swept
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = read_rows(out)
    study = load_study(REPO / "studies" / "smoke.yaml")
    assert len(rows) == (len(study.grid) + 3) * len(study.seeds) * study.cycles
    assert {r["status"] for r in rows} == {"ok"}
    assert (out / "report.html").is_file()
    nodes = set()
    for result in (out / "ray").glob("*/*/result.json"):
        for line in result.read_text().splitlines():
            nodes.add(json.loads(line)["node_id"])
    assert len(nodes) == 2, f"runs trained on {len(nodes)} node(s), expected head and worker"
    assert "ray: 2 node(s), 2 CPU, 0 GPU: 2 trial(s) at once" in proc.stdout


def test_ray_job_submit_with_address_auto(cluster, swept):
    """`ray job submit` as docs/cluster.md shows it, into the same shared --out: the job's driver
    finds the cluster by `--address auto`, reuses every run the first sweep stored, and
    rewrites results.csv with the same values."""
    out, first, _ = swept
    assert first.returncode == 0
    before = read_rows(out)
    (out / "results.csv").unlink()
    job = subprocess.run(
        [*RAY, "job", "submit", "--address", f"http://{LOCALHOST}:{cluster.dashboard_port}",
         "--working-dir", str(REPO), "--",
         "silo-oracle", "run", "studies/smoke.yaml", "--address", "auto", "--out", str(out)],
        cwd=REPO, env=clean_env(cluster.root, RAY_AUTH_MODE="token"),
        capture_output=True, text=True, timeout=240,
    )
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-2000:]
    assert "succeeded" in job.stdout
    assert f"trained: 0, reused: {len(before)}" in job.stdout
    key = operator.itemgetter("arm", "seed", "cycle", "max_lr")
    after = read_rows(out)
    assert sorted((key(r), r["run_id"], r["val_acc"]) for r in after) == sorted(
        (key(r), r["run_id"], r["val_acc"]) for r in before
    )


def _one_error_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("error: --address "), lines
    return lines[0]


@pytest.mark.parametrize(
    "token_env, expected",
    [
        ({"RAY_AUTH_TOKEN": "0" * 32}, "rejected this machine's Ray auth token"),
        ({"HOME": "/nonexistent"}, "requires a Ray auth token and none is configured here"),
    ],
    ids=["wrong-token", "no-token"],
)
def test_a_cluster_that_rejects_the_token(cluster, token_env, expected):
    out = cluster.root / "rejected"
    proc, elapsed = silo_oracle(cluster.root, "run", "studies/smoke.yaml", "--address", cluster.address,
                                "--out", str(out), timeout=60, **token_env)
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert expected in line and "ray get-auth-token" in line
    assert elapsed < 30
    assert not out.exists()


def test_an_address_where_nothing_answers(tmp_path):
    out = tmp_path / "unreachable"
    proc, elapsed = silo_oracle(tmp_path, "run", "studies/smoke.yaml", "--address", f"{LOCALHOST}:{free_port()}",
                                "--out", str(out), timeout=60)
    assert proc.returncode == 2
    assert "no Ray cluster answers there" in _one_error_line(proc)
    assert elapsed < 30
    assert not out.exists()


def test_a_local_run_ignores_a_dead_cluster_ray_recorded(write_study, tmp_path):
    """A `ray start --head` that ended without `ray stop` leaves its address in Ray's
    ray_current_cluster file; that file is all Ray reads. A local run must start its own Ray
    instead of retrying that address for minutes."""
    root = Path(tempfile.mkdtemp(prefix="silo-rc-", dir="/tmp"))
    try:
        (root / "home").mkdir()
        (root / "ray").mkdir()
        (root / "ray" / "ray_current_cluster").write_text(f"{LOCALHOST}:{free_port()}")
        study = write_study("stale", {"pruning": {"cycles": 1}, "seeds": [0]})  # any run shows it
        out = tmp_path / "out"
        proc, _ = silo_oracle(root, "run", str(study), "--out", str(out), timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert {r["status"] for r in read_rows(out)} == {"ok"}
    finally:
        Nodes(root).stop()  # the local Ray of a run that hung past its timeout, if any
        shutil.rmtree(root, ignore_errors=True)


def test_token_mode_follows_rays_token_sources_and_never_overrides_a_chosen_mode(tmp_path, monkeypatch):
    from oracle.sweep.cluster import configured_token, use_token_auth

    monkeypatch.setenv("HOME", str(tmp_path))
    assert configured_token({}) is None and use_token_auth(env := {}) is False and env == {}
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-file\n")
    file_path = tmp_path / "tok"
    file_path.write_text("from-path")
    assert configured_token({}) == "from-file"
    assert configured_token({"RAY_AUTH_TOKEN_PATH": str(file_path)}) == "from-path"
    assert configured_token({"RAY_AUTH_TOKEN": "from-env", "RAY_AUTH_TOKEN_PATH": str(file_path)}) == "from-env"
    env = {}
    assert use_token_auth(env) is True and env == {"RAY_AUTH_MODE": "token"}
    chosen = {"RAY_AUTH_MODE": "disabled"}
    assert use_token_auth(chosen) is False and chosen == {"RAY_AUTH_MODE": "disabled"}


def test_the_loopback_switch_is_set_before_ray_is_imported():
    # Ray reads its loopback-only switch once, when first imported: the CLI and the sweep
    # module must not import ray themselves, or keep_ray_on_loopback can never set it.
    probe = ("import os, sys; import oracle.cli, oracle.sweep.driver; assert 'ray' not in sys.modules, 'ray imported'; "
             "oracle.sweep.driver.keep_ray_on_loopback(None); import ray; "
             "print(os.environ[oracle.sweep.driver.LOOPBACK_ONLY_ENV])")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"


def test_own_code_reaches_the_worker_node_only_through_ray(cluster, tmp_path):
    """The example's package in a folder outside the repository and the cluster: the worker
    node (cwd and PATH of its own, no PYTHONPATH) cannot import it, yet trains its runs,
    from the copy Ray shipped into the node's own temp folder (runtime_env py_modules)."""
    mine = Path(tempfile.mkdtemp(prefix="silo-own-", dir="/tmp"))
    try:
        shutil.copytree(REPO / "examples" / "own_model", mine / "own_model",
                        ignore=shutil.ignore_patterns("__pycache__"))
        blind = subprocess.run([str(BIN / "python"), "-c", "import ownnet"], cwd=cluster.root,
                               env=clean_env(cluster.root), capture_output=True, text=True, timeout=60)
        assert blind.returncode != 0 and "No module named 'ownnet'" in blind.stderr
        out = cluster.root / "shared" / "own"
        with both_nodes(cluster):
            proc = subprocess.run([str(BIN / "silo-oracle"), "run", str(mine / "own_model" / "study.yaml"),
                                   "--address", cluster.address, "--out", str(out)],
                                  cwd=mine, env=clean_env(cluster.root), capture_output=True, text=True,
                                  timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        rows = read_rows(out)
        errors = [p.read_text()[-1500:] for p in (out / "ray").glob("*/*/error.txt")]
        assert rows and {r["status"] for r in rows} == {"ok"}, errors[:2]
        nodes = set()
        for result in (out / "ray").glob("*/*/result.json"):
            nodes.update(json.loads(line)["node_id"] for line in result.read_text().splitlines())
        assert len(nodes) == 2, f"runs trained on {len(nodes)} node(s), expected head and worker"
        shipped = list((cluster.root / "worker").glob("session_*/runtime_resources/py_modules_files/*/ownnet"))
        assert shipped and (shipped[0] / "models.py").is_file(), "Ray did not ship ownnet to the worker node"
    finally:
        shutil.rmtree(mine, ignore_errors=True)


WORKER_NODE = "SILO_TEST_NODE=worker"


def _worker_node_pids() -> list[int]:
    """Every process of the worker node: the daemons `ray start` left (marked WORKER_NODE) and
    what its raylet started (agents, Ray workers: each in a process group of its own, with an
    environment the raylet builds, which names the raylet)."""
    daemons = pids_with_env(WORKER_NODE)
    raylets = []
    for pid in daemons:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"/raylet"):
                raylets.append(pid)
    assert len(raylets) == 1, f"the worker node has {len(raylets)} raylets"
    return daemons + pids_with_env(f"RAY_RAYLET_PID={raylets[0]}", exact=True)


def _kill_the_worker_node() -> int:
    """SIGKILL to every process of the worker node (raylet, object store, workers), as a
    machine that loses power: no daemon gets to say goodbye."""
    pids = _worker_node_pids()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def test_a_lost_worker_node_costs_a_retry_not_a_result(cluster, swept):
    """Issue 19's drill: the worker node killed (-9, all of its processes) while a trial is in
    the middle of its work there. The study finishes on the head, every run ok, no run complete
    before the loss is trained again, and every value equals the undisturbed sweep's (`swept`,
    the same study).

    The trial is held by the stall hook (oracle.sweep.faults), set in the worker node's
    environment alone: a smoke run trains in a fifth of a second, and a kill timed by watching
    CPU use often came between two trials, where it fails none and the drill tests nothing.

    Runs last in this module: the cluster has one node afterwards."""
    from tests._processes import driver

    calm, undisturbed, calm_s = swept
    assert undisturbed.returncode == 0
    path, disturbed = REPO / "studies" / "smoke.yaml", cluster.root / "shared" / "disturbed"
    cmd = [str(BIN / "silo-oracle"), "run", str(path), "--address", cluster.address, "--out", str(disturbed)]
    t0 = time.monotonic()
    with both_nodes(cluster, stall_the_worker=True) as held, driver(cmd, clean_env(cluster.root)) as proc:
        deadline = time.monotonic() + 120
        while not held.taken:  # until a trial of the worker node takes it, and stalls
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no trial started on the worker node"
            time.sleep(0.05)
        complete_before = {p.parent.name: p.stat().st_mtime_ns for p in (disturbed / "runs").glob("*/COMPLETE")}
        assert _kill_the_worker_node() > 0
        printed, _ = proc.communicate(timeout=400)
    took = time.monotonic() - t0
    printed = printed.decode()
    assert proc.returncode == 0, printed[-3000:]
    withdrawn = sum("withdrawn" in p.read_text() for p in (disturbed / "ray").glob("*/*/result.json"))
    # pytest -s: the figures (withdrawn: trials of a round released early that gave their slot back)
    print(f"lost-node drill: {took:.1f} s against {calm_s:.1f} s undisturbed; {withdrawn} trial(s) withdrawn")
    errors = [p.read_text() for p in (disturbed / "ray").glob("*/*/error.txt")]
    assert errors, "no trial failed: the node was lost between trials"
    # What Ray says of a trial whose actor died with its node (no error of the training's own).
    said = [e.lower() for e in errors]
    assert all("actor" in e and ("died" in e or "unavailable" in e) for e in said), errors[0][-2000:]
    rows, calm_rows = read_rows(disturbed), read_rows(calm)
    assert {r["status"] for r in rows} == {"ok"}
    assert len(rows) == len(calm_rows) == (3 + 3) * 2 * 3  # (3 grid values + 3 chain arms) x 2 seeds x 3 cycles
    complete_after = {p.parent.name: p.stat().st_mtime_ns for p in (disturbed / "runs").glob("*/COMPLETE")}
    retrained = [r for r, mtime in complete_before.items() if complete_after.get(r) != mtime]
    assert not retrained, f"complete before the loss, trained again: {retrained}"
    key = operator.itemgetter("arm", "seed", "cycle", "max_lr")
    # Same machine, one thread per trial: the same run gives the same float32 result on either node.
    assert sorted((key(r), r["run_id"], r["val_acc"], r["test_acc"]) for r in rows) == sorted(
        (key(r), r["run_id"], r["val_acc"], r["test_acc"]) for r in calm_rows)
