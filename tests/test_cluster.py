"""A real two-node Ray cluster on 127.0.0.1 runs the smoke study through `--address`."""

from __future__ import annotations

import csv
import json

import pytest
from ray.cluster_utils import Cluster

from oracle.cli import main
from oracle.study import load_study

LOCALHOST = "127.0.0.1"


@pytest.fixture
def two_nodes():
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "node_ip_address": LOCALHOST, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=1, node_ip_address=LOCALHOST)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()  # only the processes this fixture started


@pytest.mark.timeout(300)
def test_smoke_study_on_a_two_node_cluster(two_nodes, tmp_path, capsys):
    out = tmp_path / "smoke"
    assert main(["run", "studies/smoke.yaml", "--out", str(out), "--address", two_nodes.address]) == 0
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    study = load_study("studies/smoke.yaml")
    assert len(rows) == (len(study.grid) + 3) * len(study.seeds) * study.cycles
    assert {r["status"] for r in rows} == {"ok"}
    # Runs trained on both nodes: the worker node took part.
    nodes = set()
    for result in (out / "ray").glob("*/*/result.json"):
        for line in result.read_text().splitlines():
            nodes.add(json.loads(line)["node_id"])
    assert len(nodes) == 2, nodes
    assert "trained:" in capsys.readouterr().out
