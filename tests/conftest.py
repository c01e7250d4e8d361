"""Shared fixtures: study files derived from studies/smoke.yaml, and a local Ray on 127.0.0.1."""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from oracle.sweep.driver import keep_ray_on_loopback  # imports no ray itself
from tests._repo import REPO

# Before any test imports ray: every Ray address stays on 127.0.0.1, also on machines with
# another interface (Ray would otherwise rewrite 127.0.0.1 to it when a driver connects).
keep_ray_on_loopback(None)

SMOKE = REPO / "studies" / "smoke.yaml"


@pytest.fixture(scope="session")
def smoke_mapping() -> dict:
    return yaml.safe_load(SMOKE.read_text())


@pytest.fixture
def write_study(tmp_path, smoke_mapping):
    """Write a variant of the smoke study: `write_study(name, {"pruning": {"cycles": 2}})`."""

    def write(name: str, changes: dict | None = None, *, drop: tuple[str, ...] = ()) -> Path:
        data = copy.deepcopy(smoke_mapping)
        data["name"] = name
        for dotted in drop:
            *parents, last = dotted.split(".")
            node = data
            for p in parents:
                node = node[p]
            node.pop(last, None)
        _merge(data, changes or {})
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return write


def _merge(base: dict, changes: dict) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


# Fixtures that start Ray or a server: a test using one is an integration test whatever its marks.
PROCESS_FIXTURES = ("local_ray", "postgres")


def pytest_configure(config):
    # One OpenMP thread per process, unless OMP_NUM_THREADS says otherwise: the suite's models
    # and batches are tiny, where one thread is faster than several, and two pytest workers
    # (plus the drivers and Ray workers they start, which inherit the variable) each spinning
    # threads for both cores made the quick tests 1.5x slower (324 s against 211 s) and single
    # files 5-10x slower on a loaded 2-core machine.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU; skipped without one (see bench/gpu_check.py)")
    config.addinivalue_line(
        "markers", "integration: starts Ray, a server or a subprocess; `make test-fast` leaves it out")


def pytest_collection_modifyitems(config, items):
    """Tests that use a process-starting fixture are marked `integration`; tests marked `cuda`
    skip, saying why, on a machine without a CUDA device."""
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in PROCESS_FIXTURES):
            item.add_marker(pytest.mark.integration)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run bench/gpu_check.py on one)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _processes_only_in_integration_tests(request, monkeypatch):
    """The `integration` marker is kept honest: in a test without it, starting a process (Ray,
    a server, a driver, the CLI, a browser, compile workers) fails the test, so `make
    test-fast` stays quick. `git rev-parse`, which provenance asks once per record or report,
    is the exception: milliseconds, and every report test would otherwise be "integration"."""
    if request.node.get_closest_marker("integration") is None:
        start = subprocess.Popen._execute_child

        def only_git(self, args, *rest, **kwargs):
            if isinstance(args, list | tuple) and args and Path(str(args[0])).name == "git":
                return start(self, args, *rest, **kwargs)
            raise AssertionError(f"{request.node.nodeid} starts a process ({args!r}): mark it "
                                 "pytest.mark.integration")

        monkeypatch.setattr(subprocess.Popen, "_execute_child", only_git)
    yield


@pytest.fixture
def float64():
    """Models built while this is active are float64 (torch's default dtype at build time)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray on 127.0.0.1 per test module that asks for it, stopped by its own handle.
    ray is imported here, not at the top: keep_ray_on_loopback must run before ray loads."""
    import ray

    ray.init(address="local", num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False,
             logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()
